// Catalog: every job the user may view, grouped by app, filtered as you type.

import { api } from "../api.js";
import { clear, formatTime, h, notice } from "../dom.js";
import { openStartForm } from "../form.js";

const ACTIONS = ["start", "stop", "restart"];

function rolesText(roles) {
  return roles && roles.length ? roles.join(", ") : "any signed-in user";
}

function badges(job) {
  const perms = job.permissions || {};
  return h(
    "ul",
    { class: "badges", "aria-label": "What you may do" },
    ACTIONS.map((action) =>
      h("li", {
        class: `badge ${perms[action] ? "badge-yes" : "badge-no"}`,
        title: `${action}: ${rolesText(job.roles && job.roles[action])}`,
        text: `${perms[action] ? "✓" : "✗"} ${action}`,
      }),
    ),
  );
}

function jobCard(job, ctx) {
  const perms = job.permissions || {};
  const canStart = Boolean(perms.start) && job.valid && job.enabled !== false;
  const headingId = `job-${job.id.replace(/[^A-Za-z0-9_-]/g, "_")}`;
  let why = null;
  if (!job.valid) why = "This job is invalid and cannot run until its errors are fixed.";
  else if (job.enabled === false) why = "This job is disabled in its job.json.";
  else if (!perms.start) why = `You may not start this job: it needs one of the roles ${rolesText(job.roles && job.roles.start)}.`;
  const whyEl = why ? h("p", { class: "why", id: `${headingId}-why`, text: why }) : null;
  const onStarted = (execution) => ctx.navigate(`#/executions/${encodeURIComponent(execution.id)}`);
  const startButton = h("button", {
    type: "button",
    class: "primary",
    disabled: !canStart,
    title: why,
    "aria-label": `Start ${job.name}`,
    "aria-describedby": whyEl ? whyEl.id : null,
    text: "Start",
    onclick: () => openStartForm(job, "start", onStarted),
  });
  const testButton = h("button", {
    type: "button",
    disabled: !canStart,
    title: why,
    "aria-label": `Test run ${job.name}`,
    text: "Test run",
    onclick: () => openStartForm(job, "test", onStarted),
  });
  const schedule = job.schedule
    ? `${job.schedule}${job.next_fire ? ` — next ${formatTime(job.next_fire)}` : ""}`
    : "not scheduled";
  return h(
    "article",
    { class: `card job${job.valid ? "" : " job-invalid"}`, "aria-labelledby": headingId, dataset: { jobId: job.id } },
    h("h3", { id: headingId, text: job.name }),
    h("p", { class: "job-id", text: job.id }),
    job.description ? h("p", { class: "description", text: job.description }) : null,
    h("p", { class: "schedule" }, h("span", { class: "label", text: "Schedule: " }), schedule),
    badges(job),
    job.errors && job.errors.length
      ? h("ul", { class: "errors", "aria-label": "Errors" }, job.errors.map((e) => h("li", { text: e })))
      : null,
    job.warnings && job.warnings.length
      ? h("ul", { class: "warnings", "aria-label": "Warnings" }, job.warnings.map((w) => h("li", { text: w })))
      : null,
    h(
      "div",
      { class: "actions" },
      startButton,
      testButton,
      h("a", { href: `#/history?job_id=${encodeURIComponent(job.id)}`, text: "History" }),
    ),
    whyEl,
  );
}

function matches(job, needle) {
  if (!needle) return true;
  return [job.id, job.name, job.description].some((s) => String(s || "").toLowerCase().includes(needle));
}

export function render(container, ctx) {
  const search = h("input", {
    type: "search",
    id: "catalog-search",
    placeholder: "Filter by id, name or description",
    autocomplete: "off",
  });
  const list = h("div", { class: "catalog", "aria-live": "polite" });
  const count = h("p", { class: "muted", role: "status" });
  container.append(
    h("h1", { text: "Job catalog" }),
    h("div", { class: "toolbar" }, h("label", { for: search.id, text: "Search jobs" }), search),
    count,
    list,
  );
  let jobs = [];

  const draw = () => {
    const needle = search.value.trim().toLowerCase();
    const shown = jobs.filter((j) => matches(j, needle));
    clear(list);
    count.textContent = `${shown.length} of ${jobs.length} jobs`;
    const apps = new Map();
    for (const job of shown) {
      if (!apps.has(job.app)) apps.set(job.app, []);
      apps.get(job.app).push(job);
    }
    for (const [app, appJobs] of [...apps].sort(([a], [b]) => a.localeCompare(b))) {
      list.append(
        h("section", { class: "app-group", "aria-label": app }, h("h2", { text: app }), h("div", { class: "cards" }, appJobs.map((j) => jobCard(j, ctx)))),
      );
    }
    if (!shown.length) list.append(notice(jobs.length ? "No job matches that filter." : "No jobs you may view."));
  };
  search.addEventListener("input", draw);

  api("/api/v1/jobs/catalog")
    .then((data) => {
      jobs = data.jobs || [];
      draw();
    })
    .catch((err) => list.append(notice(err.message, "error")));
}
