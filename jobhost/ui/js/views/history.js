// History: filtered, paginated executions (newest first) and, for one job, a chart of
// duration over time with points coloured by outcome. Filters live in the URL hash so
// a filtered view can be bookmarked and shared.

import { api, query } from "../api.js";
import { activityTimeline } from "./timeline.js";
import { chartWidth, fitWidth, loadUPlot, themeColour, timeRange } from "../charts.js";
import { clear, field, formatDuration, formatShort, formatTime, h, jobZone, notice, rememberZones, statusBadge } from "../dom.js";
import { attemptNote, groupAttempts, queueNote } from "../policies.js";

const STATUSES = ["queued", "starting", "running", "stopping", "succeeded", "failed", "rejected", "stopped", "timed_out", "lost"];
const CHART_STATUSES = [
  ["succeeded", "--ok", "#16a34a"],
  ["failed", "--bad", "#dc2626"],
  ["stopped", "--warn", "#d97706"],
  ["timed_out", "--bad-2", "#9333ea"],
  ["lost", "--muted", "#6b7280"],
  ["rejected", "--bad", "#dc2626"],
];
const BAD = new Set(["failed", "timed_out", "lost", "rejected"]);

/** datetime-local value (local time) → ISO UTC, and back. */
function toIso(local) {
  if (!local) return "";
  const d = new Date(local);
  return Number.isNaN(d.getTime()) ? "" : d.toISOString().replace(/\.\d{3}Z$/, "Z");
}

function toLocal(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** The "When" link of a row, in the zone the switch asks for (the job's own, once known). */
function whenLink(e) {
  const zone = jobZone(e.job_id);
  const when = formatTime(e.created_at, zone);
  const [day, time] = formatShort(e.created_at, zone);
  // A phone shows the short form (the style sheet picks one); both name the same time.
  return h(
    "a",
    { class: "when", href: `#/executions/${encodeURIComponent(e.id)}?from=history`, title: when, "aria-label": when },
    h("span", { class: "when-full", text: when }),
    h("span", { class: "when-short" }, h("span", { class: "nowrap", text: day }), " ", h("span", { class: "nowrap", text: time })),
  );
}

/** The job's id, free to break after its app's slash on a narrow screen. */
function jobName(e) {
  const [app, ...rest] = e.job_id.split("/");
  const suffix = (e.test ? " (test)" : "") + (e.dry_run ? " (dry run)" : "");
  return rest.length ? [`${app}/`, h("wbr"), rest.join("/") + suffix] : [e.job_id + suffix];
}

function row(e) {
  return h(
    "tr",
    { dataset: { executionId: e.id }, class: e.retry_of ? "attempt-row" : null },
    h("td", {}, whenLink(e)),
    h("td", {}, jobName(e)),
    h(
      "td",
      {},
      statusBadge(e.status),
      attemptNote(e),
      queueNote(e),
      BAD.has(e.status) && e.error ? h("p", { class: "reason", text: e.error }) : null,
      e.stopped_by ? h("p", { class: "stopped-by", text: `by ${e.stopped_by}` }) : null,
    ),
    h("td", { class: "opt", text: e.user || e.trigger }),
    h("td", { class: "opt", text: e.trigger }),
    h("td", { class: "nowrap", text: formatDuration(e.duration_seconds) }),
    h("td", { class: "opt", text: e.exit_signal ? `signal ${e.exit_signal}` : e.exit_code ?? "—" }),
  );
}

function percentile(sorted, p) {
  if (!sorted.length) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

/** Success rate and p50 / p95 duration of the finished runs shown. */
function jobStats(executions) {
  const finished = executions.filter((e) => !["queued", "starting", "running", "stopping"].includes(e.status) && !e.test);
  if (!finished.length) return h("p", { class: "muted", text: "No finished runs yet." });
  const ok = finished.filter((e) => e.status === "succeeded").length;
  const durations = finished.map((e) => e.duration_seconds).filter((d) => d !== null && d !== undefined).sort((a, b) => a - b);
  const rate = Math.round((ok / finished.length) * 100);
  return h(
    "p",
    { class: "job-stats" },
    h("span", { class: rate === 100 ? "sum-ok" : "sum-bad", text: `${rate}% succeeded` }),
    ` (${ok} of ${finished.length} runs shown) · p50 ${formatDuration(percentile(durations, 50))} · p95 ${formatDuration(percentile(durations, 95))}`,
  );
}

async function drawChart(holder, executions) {
  const points = executions.filter((e) => e.duration_seconds !== null && e.started_at).reverse();
  if (!points.length) {
    holder.append(h("p", { class: "muted", text: "No finished runs to chart yet." }));
    return null;
  }
  const UPlot = await loadUPlot();
  const xs = points.map((e) => Date.parse(e.started_at) / 1000);
  const series = CHART_STATUSES.map(([status]) => points.map((e) => (e.status === status ? e.duration_seconds : null)));
  const plot = new UPlot(
    {
      width: chartWidth(holder),
      height: 240,
      scales: { x: { time: true, range: timeRange } },
      axes: [{ stroke: themeColour("--fg", "#222") }, { stroke: themeColour("--fg", "#222"), values: (u, ticks) => ticks.map((t) => formatDuration(t)) }],
      series: [
        {},
        ...CHART_STATUSES.map(([status, colourVar, fallback]) => ({
          label: status,
          stroke: themeColour(colourVar, fallback),
          fill: themeColour(colourVar, fallback),
          paths: () => null, // points only: runs are separate events, not a line
          points: { show: true, size: 8, fill: themeColour(colourVar, fallback) },
          value: (u, v) => (v === null || v === undefined ? "—" : formatDuration(v)),
        })),
      ],
    },
    [xs, ...series],
    holder,
  );
  return fitWidth(plot, holder, 240);
}

export function render(container, ctx) {
  const params = ctx.route.params;
  const jobSelect = h("select", { name: "job_id" }, h("option", { value: "", text: "All jobs" }));
  const user = field("User", h("input", { name: "user", value: params.get("user") || "", autocomplete: "off" }));
  const since = field("Since", h("input", { type: "datetime-local", name: "since", value: toLocal(params.get("since")) }));
  const until = field("Until", h("input", { type: "datetime-local", name: "until", value: toLocal(params.get("until")) }));
  const chosen = new Set(params.getAll("status"));
  const statusBoxes = STATUSES.map((s) => {
    const box = h("input", { type: "checkbox", name: "status", value: s, id: `status-${s}`, checked: chosen.has(s) });
    return h("label", { class: "check", for: box.id }, box, ` ${s}`);
  });
  const form = h(
    "form",
    { class: "filters card", "aria-label": "History filters" },
    field("Job", jobSelect).wrap,
    user.wrap,
    since.wrap,
    until.wrap,
    h("fieldset", { class: "statuses" }, h("legend", { text: "Status" }), statusBoxes),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary", text: "Apply filters" }), h("a", { href: "#/history", text: "Clear" })),
  );
  const status = h("div", { "aria-live": "polite" });
  const chartHolder = h("section", { class: "card chart-card", "aria-label": "Duration chart", hidden: true });
  const body = h("tbody");
  const more = h("button", { type: "button", hidden: true, text: "Load more" });
  const table = h(
    "table",
    { class: "table history-table" },
    h("caption", { class: "visually-hidden", text: "Executions, newest first" }),
    // On a phone the optional columns (opt) give way: when, job, status and duration stay.
    h("thead", {}, h("tr", {}, ["When", "Job", "Status", "By", "Trigger", "Duration", "Exit"].map((t) => h("th", { scope: "col", class: ["By", "Trigger", "Exit"].includes(t) ? "opt" : null, text: t })))),
    body,
  );
  container.append(h("h1", { text: "History" }), activityTimeline(ctx, params.get("job_id")), form, status, chartHolder, h("div", { class: "table-wrap" }, table), more);

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const q = query({
      job_id: jobSelect.value,
      user: user.input.value.trim(),
      since: toIso(since.input.value),
      until: toIso(until.input.value),
      status: statusBoxes.map((l) => l.querySelector("input")).filter((b) => b.checked).map((b) => b.value),
    });
    ctx.navigate(`#/history${q}`);
  });

  api("/api/v1/jobs/catalog")
    .then((data) => {
      rememberZones(data.jobs);
      // Rows drawn before the zones were known: redraw their times.
      for (const e of loaded) {
        const cell = body.querySelector(`tr[data-execution-id="${CSS.escape(e.id)}"] td`);
        if (cell) clear(cell).append(whenLink(e));
      }
      for (const job of data.jobs || []) {
        jobSelect.append(h("option", { value: job.id, text: job.id, selected: job.id === params.get("job_id") }));
      }
    })
    .catch(() => {});

  const filters = {
    job_id: params.get("job_id"),
    user: params.get("user"),
    status: params.getAll("status"),
    since: params.get("since"),
    until: params.get("until"),
    limit: 50,
  };
  let cursor = null;
  let unfit = null;
  const loaded = [];

  const load = async () => {
    more.disabled = true;
    try {
      const page = await api(`/api/v1/jobs/history${query({ ...filters, cursor })}`);
      const items = page.executions || [];
      groupAttempts(items).forEach((e) => body.append(row(e)));
      loaded.push(...items);
      cursor = page.next_cursor || null;
      more.hidden = !cursor;
      if (!loaded.length) status.append(notice("No executions match these filters."));
      return items;
    } catch (err) {
      status.append(notice(err.message, "error"));
      return [];
    } finally {
      more.disabled = false;
    }
  };
  more.addEventListener("click", load);

  load().then(() => {
    if (!filters.job_id || !ctx.alive()) return;
    chartHolder.hidden = false;
    chartHolder.append(h("h2", { text: `Duration and outcome: ${filters.job_id}` }), jobStats(loaded));
    drawChart(chartHolder, loaded)
      .then((stop) => {
        unfit = stop;
      })
      .catch((err) => chartHolder.append(notice(err.message, "error")));
  });

  return () => {
    if (unfit) unfit();
    clear(chartHolder);
  };
}
