// Execution detail, output first: a compact header (status, trigger, who, started,
// duration, exit), a failed run's reason, then the chart and the live output; the
// remaining facts, variables, result and notifications below, the facts collapsed.

import { api, jobPath } from "../api.js";
import { openDialog } from "../dialog.js";
import { clear, facts, formatBytes, formatDuration, formatTime, h, jobZone, notice, rememberZones, secondsSince, statusBadge, timeAgo } from "../dom.js";
import { openStartForm } from "../form.js";
import { METRICS_JOB, MetricsChart } from "../metrics.js";
import { LogView } from "../output.js";
import { runLinks } from "../policies.js";
import { stopAllowed } from "./permissions.js";
import { progressBar } from "./running.js";

const TERMINAL = new Set(["succeeded", "failed", "stopped", "timed_out", "lost", "rejected"]);
const TAIL_BYTES = 2 * 1024 * 1024; // a reopened run shows at most this much of its end at first
const FAILED = new Set(["failed", "timed_out", "lost", "rejected"]);

function exitText(e) {
  if (e.exit_signal !== null && e.exit_signal !== undefined) return `signal ${e.exit_signal}`;
  if (e.exit_code !== null && e.exit_code !== undefined) return String(e.exit_code);
  return "—";
}

function variablesTable(variables) {
  const entries = Object.entries(variables || {});
  if (!entries.length) return h("p", { class: "muted", text: "No variables." });
  return facts(entries.map(([k, v]) => [k, typeof v === "string" ? v : JSON.stringify(v)]));
}

function deliveriesTable(deliveries) {
  if (!deliveries.length) return h("p", { class: "muted", text: "No notifications were sent for this run." });
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "table" },
      h("thead", {}, h("tr", {}, ["Rule", "Channel", "To", "Event", "Status", "Attempts", "Last error", "Updated"].map((t) => h("th", { scope: "col", text: t })))),
      h(
        "tbody",
        {},
        deliveries.map((d) =>
          h(
            "tr",
            {},
            [d.rule, d.channel, d.to, d.event].map((v) => h("td", { text: v ?? "—" })),
            h("td", {}, statusBadge(d.status)),
            h("td", { text: String(d.attempts ?? 0) }),
            h("td", { text: d.last_error || "—" }),
            h("td", { text: formatTime(d.updated_at) }),
          ),
        ),
      ),
    ),
  );
}

function headerItem(label, value) {
  return h("div", { class: "head-item" }, h("span", { class: "label", text: label }), h("span", { class: "value" }, value));
}

/** Ask once before a re-run that does real work; resolves true to go ahead. */
function confirmRerun(execution) {
  return new Promise((resolve) => {
    const yes = h("button", { type: "button", class: "primary", text: "Restart" });
    const no = h("button", { type: "button", text: "Cancel" });
    const text = `Restart runs ${execution.job_id} again for real, with the same variables.`;
    let answer = false;
    const { close } = openDialog(`Restart ${execution.job_id}?`, [h("p", { text }), h("div", { class: "actions" }, no, yes)], {
      onClose: () => resolve(answer),
    });
    no.addEventListener("click", close);
    no.focus();
    yes.addEventListener("click", () => {
      answer = true;
      close();
    });
  });
}

export function render(container, ctx) {
  const id = ctx.route.rest[0] || "";
  const heading = h("h1", { text: "Execution" });
  const banner = h("p", { class: "test-banner", hidden: true, text: "Test run — started with the test flag; it is not counted as the job's last run." });
  const status = h("div", { "aria-live": "polite" });
  const summary = h("section", { class: "card run-head", "aria-label": "Summary" }, h("p", { class: "loading", text: "Loading…" }));
  const reason = h("section", { class: "card run-reason", "aria-label": "Why it failed", hidden: true });
  const actions = h("div", { class: "actions" });
  const details = h("details", { class: "card run-details" }, h("summary", { text: "More about this run" }));
  const variables = h("section", { class: "card", "aria-label": "Variables" });
  const result = h("section", { class: "card", "aria-label": "Result" });
  const notifications = h("section", { class: "card", "aria-label": "Notifications", hidden: true });
  const log = new LogView(`/api/v1/jobs/output/${encodeURIComponent(id)}`, `execution-${id}.log`);
  const outputSection = h("section", { class: "card output-card", "aria-label": "Output" }, h("h2", { text: "Output" }), log.root);
  container.append(heading, banner, status, summary, actions, reason);

  let execution = null;
  let job = null;
  let permissions = {};
  let chart = null;
  let stream = null;
  let elapsedEl = null;

  const drawSummary = () => {
    const e = execution;
    heading.textContent = `${job ? job.name : e.job_id}${e.test ? " (test run)" : ""}${e.dry_run ? " (dry run)" : ""}`;
    banner.hidden = !e.test;
    elapsedEl = h("span", {});
    const zone = jobZone(e.job_id);
    const trigger = e.scheduled_for ? h("span", {}, `${e.trigger} for `, timeAgo(e.scheduled_for, zone)) : e.trigger;
    clear(summary).append(
      h("h2", { class: "visually-hidden", text: "Summary" }),
      h(
        "div",
        { class: "head-items" },
        headerItem("Status", statusBadge(e.status)),
        headerItem("Job", h("a", { href: `#/catalog?q=${encodeURIComponent(e.job_id)}`, text: e.job_id })),
        headerItem("Trigger", trigger),
        headerItem("By", e.user || "—"),
        headerItem("Started", e.started_at ? timeAgo(e.started_at, zone) : "—"),
        headerItem("Duration", elapsedEl),
        headerItem("Exit", exitText(e)),
        e.stopped_by ? headerItem("Stopped by", h("span", { class: "stopped-by", text: e.stopped_by })) : null,
        e.progress !== null && e.progress !== undefined ? headerItem("Progress", progressBar(e)) : null,
      ),
      runLinks(e),
    );
    clear(details).append(
      h("summary", { text: "More about this run" }),
      facts([
        ["Execution ID", e.id],
        ["Queued", formatTime(e.created_at, zone)],
        ["Started", formatTime(e.started_at, zone)],
        ["Ended", formatTime(e.ended_at, zone)],
        ["Scheduled for", e.scheduled_for ? formatTime(e.scheduled_for, zone) : "—"],
        ["CPU", e.cpu_seconds === null || e.cpu_seconds === undefined ? "—" : `${e.cpu_seconds.toFixed(2)} s`],
        ["Peak memory", formatBytes(e.peak_rss_bytes)],
        ["Output", formatBytes(e.output_bytes)],
        ["Host / PID", [e.host, e.pid].filter((v) => v !== null && v !== undefined).join(" / ") || "—"],
        ["Restarts", String(e.restart_count ?? 0)],
      ]),
    );
    drawReason();
    tick();
    clear(variables).append(h("h2", { text: "Variables" }), variablesTable(e.variables));
    clear(result).append(
      h("h2", { text: "Result" }),
      e.result === null || e.result === undefined
        ? h("p", { class: "muted", text: "No result." })
        : h("pre", { class: "json", tabindex: "0", text: JSON.stringify(e.result, null, 2) }),
    );
    drawActions();
  };

  const drawReason = () => {
    const e = execution;
    const failed = FAILED.has(e.status);
    reason.hidden = !(failed || (e.status === "stopped" && e.error));
    if (reason.hidden) return;
    const exit = exitText(e);
    const title = e.status === "stopped" ? "Why it stopped" : `Why it ${e.status === "rejected" ? "was rejected" : "failed"}`;
    reason.setAttribute("aria-label", title);
    // The last lines the job wrote to stderr say why, most often; else its last lines.
    const errors = log.stderrTail(5);
    const tail = errors || log.text.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "").trimEnd().split("\n").slice(-5).join("\n");
    const parts = [
      h("h2", { text: title }),
      h("p", { class: "reason-text", text: e.error || (exit !== "—" ? `The process ended with exit ${exit}.` : "No reason was recorded.") }),
      e.error && exit !== "—" ? h("p", { class: "muted", text: `Exit: ${exit}` }) : null,
      tail && e.status !== "rejected" ? h("div", {}, h("p", { class: "muted", text: errors ? "Its last lines on stderr:" : "Its last lines of output:" }), h("pre", { class: errors ? "log reason-tail stderr-tail" : "log reason-tail", text: tail })) : null,
    ];
    clear(reason).append(...parts.filter(Boolean));
  };

  const tick = () => {
    if (!elapsedEl || !execution) return;
    const e = execution;
    elapsedEl.textContent = TERMINAL.has(e.status) || !e.started_at ? formatDuration(e.duration_seconds) : formatDuration(secondsSince(e.started_at));
  };

  const drawActions = () => {
    const e = execution;
    clear(actions);
    if (!TERMINAL.has(e.status) && stopAllowed(permissions, e, ctx.user)) {
      actions.append(h("button", { type: "button", class: "danger", text: "Stop", onclick: () => act("stop") }));
    }
    if (job && permissions.start && job.valid) {
      actions.append(
        h("button", {
          type: "button",
          text: e.test ? "Test again…" : "Run again…",
          title: "Opens the start form filled in with this run's variables (secrets left blank)",
          onclick: () => openStartForm(job, e.test ? "test" : "start", (next) => ctx.navigate(`#/executions/${encodeURIComponent(next.id)}`), { values: e.variables }),
        }),
      );
    }
    if (permissions.restart) {
      actions.append(
        h("button", {
          type: "button",
          // A restart repeats the run: a test run's restart is a test run (nothing real to
          // confirm); a real run's restart does the job's work again, so it asks once.
          text: e.test ? "Restart as a test run" : "Restart…",
          onclick: async () => {
            if (e.test || (await confirmRerun(e))) act("restart");
          },
        }),
      );
    }
    actions.append(h("a", { href: `#/history?job_id=${encodeURIComponent(e.job_id)}`, text: "History of this job" }));
  };

  const act = async (what) => {
    clear(status);
    try {
      const body = await api(`/api/v1/jobs/${what}`, { method: "POST", body: { execution_id: id } });
      if (!ctx.alive()) return;
      if (what === "restart" && body && body.id) ctx.navigate(`#/executions/${encodeURIComponent(body.id)}`);
      else if (!TERMINAL.has(execution.status)) status.append(notice("Stop requested.", "info"));
    } catch (err) {
      status.append(notice(err.message, "error"));
    }
  };

  const update = (next) => {
    execution = next;
    ctx.section(TERMINAL.has(next.status) ? "history" : "running");
    if (TERMINAL.has(next.status)) clear(status); // "Stop requested." is answered now
    drawSummary();
  };

  const follow = () => {
    // The server sends id = next offset, so EventSource's automatic reconnect
    // resumes with Last-Event-ID and no output is shown twice. A long log starts at
    // its tail: the DOM keeps 20,000 lines anyway, and the rest is a page away.
    const size = execution.output_bytes || 0;
    const start = size > TAIL_BYTES ? size - TAIL_BYTES : 0;
    if (start > 0) log.startsMidLine();
    stream = ctx.eventSource(`/api/v1/jobs/output/${encodeURIComponent(id)}/stream${start ? `?offset=${start}` : ""}`);
    stream.addEventListener("output", (event) => {
      const data = JSON.parse(event.data);
      log.append(data.output, data.stderr);
      if (chart) chart.feed(data.output);
    });
    stream.addEventListener("end", (event) => {
      stream.close();
      try {
        update(JSON.parse(event.data));
      } catch {
        // the final status still arrives through the events stream
      }
    });
    stream.addEventListener("error", () => {
      if (stream.readyState === EventSource.CLOSED && ctx.alive()) status.append(notice("The live output stream closed; reload the page to follow it again.", "error"));
    });
  };

  const timer = setInterval(tick, 1000);
  log.onDraw = () => {
    if (execution) drawReason(); // its last lines arrive after the status
  };

  const load = async () => {
    let e;
    try {
      e = await api(`/api/v1/jobs/status/${encodeURIComponent(id)}`);
    } catch (err) {
      if (!ctx.alive()) return;
      heading.textContent = "Execution not found";
      clear(summary).append(notice(err.message, "error"));
      return;
    }
    if (!ctx.alive()) return;
    execution = e;
    job = await api(`/api/v1/jobs/catalog/${jobPath(e.job_id)}`).catch(() => null);
    if (!ctx.alive()) return;
    if (job) rememberZones([job]);
    permissions = (job && job.permissions) || {};
    if (e.job_id === METRICS_JOB) {
      chart = new MetricsChart({ from: e.started_at || e.created_at, to: e.ended_at });
      container.append(chart.root);
      chart.start();
    }
    container.append(outputSection, variables, result, details, notifications);
    ctx.section(TERMINAL.has(e.status) ? "history" : "running");
    drawSummary();
    follow();
    const events = ctx.eventSource("/api/v1/jobs/events");
    events.addEventListener("execution", (event) => {
      const next = JSON.parse(event.data);
      if (next.id === id) update(next);
    });
    api(`/api/v1/jobs/status/${encodeURIComponent(id)}/notifications`)
      .then((body) => {
        if (!ctx.alive()) return;
        notifications.hidden = false;
        notifications.append(h("h2", { text: "Notifications" }), deliveriesTable(body.deliveries || []));
      })
      .catch(() => {
        // No notifications on this server (404): the section stays hidden.
      });
  };
  load();

  return () => {
    clearInterval(timer);
    if (stream) stream.close();
    if (chart) chart.destroy();
  };
}
