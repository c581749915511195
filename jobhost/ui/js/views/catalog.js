// Catalog as a status board: per job its last run, whether it runs now, its next fire
// and its recent outcomes, as cards or a dense list (the choice is remembered).
// The search text and the failing / running / scheduled / app filters live in the URL,
// so a filtered board can be bookmarked. Live changes arrive on the events stream.

import { api, query } from "../api.js";
import { clear, debounce, formatDuration, formatTime, h, jobZone, notice, relativeTime, rememberZones, statusBadge, timeAgo } from "../dom.js";
import { describe, openStartForm } from "../form.js";
import { webhookButton } from "../triggers.js";

const ACTIONS = ["start", "stop", "restart"];
const BAD = new Set(["failed", "timed_out", "lost", "rejected"]);
const LAYOUT_KEY = "jobhost-catalog-layout";
const FILTERS = [
  ["", "All"],
  ["failing", "Failing"],
  ["running", "Running"],
  ["scheduled", "Scheduled"],
];

function rolesText(roles) {
  return roles && roles.length ? roles.join(", ") : "any signed-in user";
}

/** Pills only for what the user may not do: for someone who may do everything they are noise. */
function missingRights(job) {
  const perms = job.permissions || {};
  const missing = ACTIONS.filter((action) => !perms[action]);
  if (!missing.length) return null;
  return h(
    "ul",
    { class: "badges", "aria-label": "What you may not do" },
    missing.map((action) =>
      h("li", { class: "badge badge-no", title: `${action} needs: ${rolesText(job.roles && job.roles[action])}`, text: `✗ ${action}` }),
    ),
  );
}

/** Why a run failed: its error, else its exit code or signal. */
function reasonOf(run) {
  if (run.error) return run.error;
  if (run.exit_signal !== null && run.exit_signal !== undefined) return `ended by signal ${run.exit_signal}`;
  if (run.exit_code !== null && run.exit_code !== undefined && run.exit_code !== 0) return `exit code ${run.exit_code}`;
  return null;
}

/** Board order: what needs a look first (failing, then running), then by app and id. */
function urgency(job) {
  if (failing(job) || !job.valid) return 0;
  return (job.active || []).length ? 1 : 2;
}

function failing(job) {
  return Boolean(job.last_run && BAD.has(job.last_run.status));
}

/** The job's own live runs that count against max_concurrent (test runs do not). */
function realActive(job) {
  return (job.active || []).filter((e) => !e.test);
}

function atCapacity(job) {
  return job.max_concurrent > 0 && realActive(job).length >= job.max_concurrent;
}

/** Badges for what needs a look: an invalid definition, a failing schedule. */
function warningBadges(job) {
  const items = [];
  if (!job.valid) items.push(h("li", { class: "badge badge-bad", text: "⚠ invalid definition" }));
  const last = job.last_run;
  if (last && BAD.has(last.status) && last.trigger === "schedule") {
    items.push(h("li", { class: "badge badge-bad", text: "⚠ schedule failing" }));
  }
  if (job.warnings && job.warnings.length) items.push(h("li", { class: "badge badge-warn", title: job.warnings.join("\n"), text: `⚠ ${job.warnings.length} warning${job.warnings.length > 1 ? "s" : ""}` }));
  return items.length ? h("ul", { class: "badges", "aria-label": "Needs attention" }, items) : null;
}

/** The run's status as a link to it. */
function runBadge(run) {
  return h("a", { class: "status-link", href: `#/executions/${encodeURIComponent(run.id)}?from=history`, "aria-label": `Last run ${run.status}, open it` }, statusBadge(run.status));
}

/** "✓ succeeded 3 min ago · 1.2 s" (+ the reason when it failed), or "Never ran". */
function lastRun(job) {
  const run = job.last_run;
  if (!run) return h("p", { class: "last-run muted", text: "Never ran" });
  const when = run.ended_at || run.started_at || run.created_at;
  return h(
    "div",
    { class: `last-run${BAD.has(run.status) ? " last-run-bad" : ""}` },
    h("span", { class: "label", text: "Last run " }),
    runBadge(run),
    " ",
    timeAgo(when, jobZone(job.id)),
    run.duration_seconds !== null && run.duration_seconds !== undefined ? ` · ${formatDuration(run.duration_seconds)}` : "",
    run.trigger === "schedule" ? " · scheduled" : "",
    BAD.has(run.status) && reasonOf(run) ? h("p", { class: "reason", text: reasonOf(run) }) : null,
  );
}

function outcomeStrip(job) {
  const runs = (job.outcomes || []).slice().reverse(); // oldest left, newest right
  if (!runs.length) return null;
  const ok = runs.filter((r) => r.status === "succeeded").length;
  return h(
    "ol",
    { class: "strip", "aria-label": `Last ${runs.length} runs: ${ok} succeeded` },
    runs.map((r) =>
      h(
        "li",
        {},
        h("a", {
          class: `tick tick-${r.status}`,
          href: `#/executions/${encodeURIComponent(r.id)}?from=history`,
          title: `${r.status} · ${formatTime(r.ended_at || r.created_at, jobZone(job.id))}${r.error ? ` · ${r.error}` : ""}`,
          "aria-label": `${r.status} ${relativeTime(r.ended_at || r.created_at)}`,
        }),
      ),
    ),
  );
}

function runningNow(job) {
  const live = job.active || [];
  if (!live.length) return null;
  const first = live[0];
  return h(
    "p",
    { class: "running-now" },
    h("span", { class: "pulse", "aria-hidden": "true" }),
    live.length > 1 ? `${live.length} running · oldest ` : `${first.test ? "Test run " : ""}${first.status} `,
    first.started_at ? h("span", {}, "since ", timeAgo(first.started_at, jobZone(job.id)), " ") : "",
    h("a", { href: `#/executions/${encodeURIComponent(first.id)}?from=running`, text: "Open live run" }),
  );
}

function nextFire(job) {
  if (!job.schedule && !job.next_fire) return h("p", { class: "schedule muted", text: "Not scheduled" });
  return h(
    "p",
    { class: "schedule" },
    h("span", { class: "label", text: "Next " }),
    job.next_fire
      ? h("span", {}, timeAgo(job.next_fire, jobZone(job.id)), h("span", { class: "muted", text: ` (${formatTime(job.next_fire, jobZone(job.id))})` }))
      : h("span", { class: "muted", text: "no fire planned (disabled or scheduler off)" }),
    h("span", { class: "cron muted", text: ` · ${job.schedule || ""}` }),
  );
}

function startControls(job, ctx) {
  const perms = job.permissions || {};
  const full = atCapacity(job);
  const rejects = full && (job.on_conflict || "reject") === "reject";
  const canStart = Boolean(perms.start) && job.valid && job.enabled !== false && !rejects;
  const headingId = `job-${job.id.replace(/[^A-Za-z0-9_-]/g, "_")}`;
  let why = null;
  if (!job.valid) why = "This job is invalid and cannot run until its errors are fixed.";
  else if (job.enabled === false) why = "This job is disabled in its job.json.";
  else if (!perms.start) why = `You may not start this job: it needs one of the roles ${rolesText(job.roles && job.roles.start)}.`;
  else if (rejects) why = `Already running: at most ${job.max_concurrent} run${job.max_concurrent > 1 ? "s" : ""} at a time. Open the live run, or stop it first.`;
  const whyEl = why ? h("p", { class: "why", id: `${headingId}-why`, text: why }) : null;
  const onStarted = (execution) => ctx.navigate(`#/executions/${encodeURIComponent(execution.id)}`);
  const another = realActive(job).length > 0;
  let label = another ? "Start another" : "Start";
  if (full && job.on_conflict === "queue") label = "Queue another";
  else if (full && job.on_conflict === "replace") label = "Start (replaces the run)";
  else if (rejects) label = "Start";
  const startButton = h("button", {
    type: "button",
    class: "primary",
    disabled: !canStart,
    title: why,
    "aria-label": `${label} ${job.name}`,
    "aria-describedby": whyEl ? whyEl.id : null,
    text: label,
    onclick: () => openStartForm(job, "start", onStarted),
  });
  const testButton = h("button", {
    type: "button",
    disabled: !(Boolean(perms.start) && job.valid && job.enabled !== false),
    title: why,
    "aria-label": `Test run ${job.name}`,
    text: "Test run",
    onclick: () => openStartForm(job, "test", onStarted),
  });
  return {
    buttons: h("div", { class: "actions" }, startButton, testButton, webhookButton(job), h("a", { href: `#/history?job_id=${encodeURIComponent(job.id)}`, text: "History" })),
    whyEl,
  };
}

function jobCard(job, ctx) {
  const headingId = `job-${job.id.replace(/[^A-Za-z0-9_-]/g, "_")}`;
  const { buttons, whyEl } = startControls(job, ctx);
  const state = (job.active || []).length ? "running" : failing(job) ? "failing" : "ok";
  return h(
    "article",
    { class: `card job job-${state}${job.valid ? "" : " job-invalid"}`, "aria-labelledby": headingId, dataset: { jobId: job.id } },
    h("h3", { id: headingId, text: job.name }),
    h("p", { class: "job-id", text: job.id }),
    warningBadges(job),
    job.description ? h("p", { class: "description" }, describe(job)) : null,
    runningNow(job),
    lastRun(job),
    outcomeStrip(job),
    nextFire(job),
    missingRights(job),
    job.errors && job.errors.length ? h("ul", { class: "errors", "aria-label": "Errors" }, job.errors.map((e) => h("li", { text: e }))) : null,
    job.warnings && job.warnings.length ? h("ul", { class: "warnings", "aria-label": "Warnings" }, job.warnings.map((w) => h("li", { text: w }))) : null,
    buttons,
    whyEl,
  );
}

function jobRow(job, ctx) {
  const { buttons, whyEl } = startControls(job, ctx);
  const headingId = `job-${job.id.replace(/[^A-Za-z0-9_-]/g, "_")}`;
  const run = job.last_run;
  return h(
    "tr",
    { class: `job job-row${failing(job) ? " job-failing" : ""}`, dataset: { jobId: job.id }, "aria-labelledby": headingId },
    h("th", { scope: "row" }, h("h3", { id: headingId, class: "row-name", text: job.name }), h("span", { class: "job-id", text: job.id }), warningBadges(job)),
    h(
      "td",
      {},
      run ? h("span", {}, runBadge(run), " ", timeAgo(run.ended_at || run.created_at, jobZone(job.id))) : h("span", { class: "muted", text: "never" }),
      run && run.duration_seconds !== null && run.duration_seconds !== undefined ? h("span", { class: "muted nowrap", text: ` · ${formatDuration(run.duration_seconds)}` }) : null,
      run && BAD.has(run.status) && reasonOf(run) ? h("p", { class: "reason", text: reasonOf(run) }) : null,
    ),
    h("td", {}, outcomeStrip(job)),
    h("td", {}, runningNow(job) || h("span", { class: "muted", text: "—" })),
    h("td", {}, job.next_fire ? timeAgo(job.next_fire, jobZone(job.id)) : h("span", { class: "muted", text: job.schedule ? "—" : "not scheduled" })),
    h("td", { class: "actions" }, buttons, whyEl),
  );
}

function matches(job, needle, filter, app) {
  if (app && job.app !== app) return false;
  if (filter === "failing" && !(failing(job) || !job.valid)) return false;
  if (filter === "running" && !(job.active || []).length) return false;
  if (filter === "scheduled" && !job.next_fire) return false;
  if (!needle) return true;
  return [job.id, job.name, job.description].some((s) => String(s || "").toLowerCase().includes(needle));
}

function savedLayout() {
  try {
    return localStorage.getItem(LAYOUT_KEY) === "list" ? "list" : "cards";
  } catch {
    return "cards";
  }
}

export function render(container, ctx) {
  const params = ctx.route.params;
  const state = { q: params.get("q") || "", filter: params.get("filter") || "", app: params.get("app") || "", layout: savedLayout() };
  const search = h("input", { type: "search", id: "catalog-search", placeholder: "Filter by id, name or description", autocomplete: "off", value: state.q });
  const appSelect = h("select", { id: "catalog-app", "aria-label": "App" }, h("option", { value: "", text: "All apps" }));
  const filterButtons = FILTERS.map(([value, text]) =>
    h("button", { type: "button", class: "chip", "aria-pressed": String(state.filter === value), dataset: { filter: value }, text }),
  );
  const layoutButton = h("button", { type: "button", class: "ghost", id: "catalog-layout" });
  const summary = h("p", { class: "board-summary", role: "status" });
  const list = h("div", { class: "catalog", "aria-live": "polite" }, h("p", { class: "loading", text: "Loading the catalog…" }));
  const count = h("p", { class: "muted" });
  container.append(
    h("h1", { text: "Job catalog" }),
    summary,
    h(
      "div",
      { class: "toolbar" },
      h("label", { for: search.id, text: "Search jobs" }),
      search,
      appSelect,
      h("div", { class: "chips", role: "group", "aria-label": "Show" }, filterButtons),
      layoutButton,
    ),
    count,
    list,
  );
  let jobs = [];

  // Keep the filters in the URL without re-rendering the view (replaceState fires no hashchange).
  const remember = () => {
    const q = query({ q: state.q, filter: state.filter, app: state.app });
    history.replaceState(null, "", `#/catalog${q}`);
  };

  const draw = () => {
    layoutButton.textContent = state.layout === "list" ? "Show as cards" : "Show as list";
    layoutButton.setAttribute("aria-label", state.layout === "list" ? "Show jobs as cards" : "Show jobs as a list");
    for (const b of filterButtons) b.setAttribute("aria-pressed", String(b.dataset.filter === state.filter));
    const needle = state.q.trim().toLowerCase();
    const shown = jobs.filter((j) => matches(j, needle, state.filter, state.app));
    const bad = jobs.filter((j) => failing(j) || !j.valid).length;
    const runningCount = jobs.filter((j) => (j.active || []).length).length;
    const upcoming = jobs.filter((j) => j.next_fire).sort((a, b) => a.next_fire.localeCompare(b.next_fire))[0];
    clear(summary).append(
      h("span", { class: bad ? "sum sum-bad" : "sum sum-ok", text: bad ? `${bad} failing` : "Nothing failing" }),
      h("span", { class: "sum", text: `${runningCount} running` }),
      upcoming ? h("span", { class: "sum" }, `Next: ${upcoming.name} `, timeAgo(upcoming.next_fire)) : h("span", { class: "sum", text: "No fire planned" }),
    );
    clear(list);
    count.textContent = `${shown.length} of ${jobs.length} jobs`;
    if (state.layout === "list") {
      const table = h(
        "table",
        { class: "table board" },
        h("caption", { class: "visually-hidden", text: "Jobs" }),
        h("thead", {}, h("tr", {}, ["Job", "Last run", "Recent", "Running", "Next fire", "Actions"].map((t) => h("th", { scope: "col", text: t })))),
        h("tbody", {}, [...shown].sort((a, b) => urgency(a) - urgency(b) || a.id.localeCompare(b.id)).map((j) => jobRow(j, ctx))),
      );
      list.append(h("div", { class: "table-wrap" }, table));
    } else {
      const apps = new Map();
      for (const job of shown) {
        if (!apps.has(job.app)) apps.set(job.app, []);
        apps.get(job.app).push(job);
      }
      for (const [app, appJobs] of [...apps].sort(([a], [b]) => a.localeCompare(b))) {
        list.append(h("section", { class: "app-group", "aria-label": app }, h("h2", { text: app }), h("div", { class: "cards" }, appJobs.map((j) => jobCard(j, ctx)))));
      }
    }
    if (!shown.length) list.append(notice(jobs.length ? "No job matches that filter." : "No jobs you may view."));
  };

  search.addEventListener("input", () => {
    state.q = search.value;
    remember();
    draw();
  });
  appSelect.addEventListener("change", () => {
    state.app = appSelect.value;
    remember();
    draw();
  });
  for (const b of filterButtons) {
    b.addEventListener("click", () => {
      state.filter = b.dataset.filter;
      remember();
      draw();
    });
  }
  layoutButton.addEventListener("click", () => {
    state.layout = state.layout === "list" ? "cards" : "list";
    try {
      localStorage.setItem(LAYOUT_KEY, state.layout);
    } catch {
      // Storage may be disabled: the layout lasts for this page.
    }
    draw();
  });

  const load = () =>
    api("/api/v1/jobs/catalog")
      .then((data) => {
        if (!ctx.alive()) return;
        jobs = data.jobs || [];
        rememberZones(jobs);
        const apps = [...new Set(jobs.map((j) => j.app))].sort();
        if (appSelect.options.length !== apps.length + 1) {
          clear(appSelect).append(h("option", { value: "", text: "All apps" }), apps.map((a) => h("option", { value: a, text: a, selected: a === state.app })));
        }
        // Redraw only when something changed, so focus and hover survive a refresh.
        const signature = JSON.stringify(jobs);
        if (signature !== lastSignature) {
          lastSignature = signature;
          draw();
        }
      })
      .catch((err) => {
        if (ctx.alive()) clear(list).append(notice(err.message, "error"));
      });
  let lastSignature = null;
  load();

  // A run starting or ending changes the board: refetch (debounced) on such events.
  const refresh = debounce(load, 400);
  const events = ctx.eventSource("/api/v1/jobs/events");
  events.addEventListener("execution", refresh);
  const timer = setInterval(() => {
    // Relative times age: refresh their text in place.
    for (const el of list.querySelectorAll("time[datetime]")) el.textContent = relativeTime(el.getAttribute("datetime"));
    for (const el of summary.querySelectorAll("time[datetime]")) el.textContent = relativeTime(el.getAttribute("datetime"));
  }, 30000);
  return () => clearInterval(timer);
}
