// Running: the running/queued executions (and scheduled ones, due later), kept live by the /api/v1/jobs/events stream.
// Rows are updated in place; a finished run stays (marked) until the page is left,
// so a run that ends while you look at it does not vanish under the pointer.

import { api } from "../api.js";
import { clear, formatDuration, h, notice, secondsSince, statusBadge } from "../dom.js";
import { queueNote } from "../policies.js";
import { stopAllowed } from "./permissions.js";

const TERMINAL = new Set(["succeeded", "failed", "stopped", "timed_out", "lost"]);
// How far along a run is; a state never goes back, so a lower stage is stale news.
const STAGE = { scheduled: -1, queued: 0, starting: 1, running: 2, stopping: 3, succeeded: 4, failed: 4, stopped: 4, timed_out: 4, lost: 4 };

export function progressBar(execution) {
  const wrap = h("div", { class: "progress" });
  if (execution.progress !== null && execution.progress !== undefined) {
    const pct = Math.round(Math.max(0, Math.min(1, execution.progress)) * 100);
    wrap.append(h("progress", { max: "100", value: String(pct), "aria-label": `Progress ${pct}%` }), ` ${pct}%`);
  }
  if (execution.progress_message) wrap.append(h("span", { class: "progress-message", text: ` ${execution.progress_message}` }));
  return wrap;
}

export function render(container, ctx) {
  const body = h("tbody");
  const status = h("div", { "aria-live": "polite" });
  const empty = h("p", { class: "muted", hidden: true, text: "Nothing is running." }); // shown once the list is known
  const table = h(
    "table",
    { class: "table" },
    h("caption", { class: "visually-hidden", text: "Running and queued executions" }),
    h(
      "thead",
      {},
      // On a phone the optional columns (opt) give way: job, status, elapsed and stop stay.
      h("tr", {}, ["Job", "Status", "Started by", "Elapsed", "Progress", "Actions"].map((t) => h("th", { scope: "col", class: ["Started by", "Progress"].includes(t) ? "opt" : null, text: t }))),
    ),
    body,
  );
  container.append(h("h1", { text: "Running" }), status, h("div", { class: "table-wrap" }, table), empty);

  const rows = new Map(); // execution id → {tr, execution, elapsed}
  let permissions = new Map(); // job id → permissions

  const act = async (path, execution) => {
    clear(status);
    try {
      const result = await api(path, { method: "POST", body: { execution_id: execution.id } });
      if (path.endsWith("restart") && result && result.id) ctx.navigate(`#/executions/${encodeURIComponent(result.id)}`);
    } catch (err) {
      status.append(notice(err.message, "error"));
    }
  };

  const fill = (row) => {
    const e = row.execution;
    const perms = permissions.get(e.job_id) || {};
    const live = !TERMINAL.has(e.status);
    row.elapsed = h("td", { class: "elapsed" });
    clear(row.tr).append(
      h("td", {}, h("a", { href: `#/executions/${encodeURIComponent(e.id)}`, text: e.job_id }), e.test ? " (test)" : ""),
      h("td", {}, statusBadge(e.status), queueNote(e), e.stopped_by ? h("p", { class: "stopped-by", text: `by ${e.stopped_by}` }) : null),
      h("td", { class: "opt", text: e.user || e.trigger }),
      row.elapsed,
      h("td", { class: "opt" }, progressBar(e)),
      h(
        "td",
        { class: "actions" },
        live && stopAllowed(perms, e, ctx.user)
          ? h("button", { type: "button", "aria-label": `Stop ${e.job_id}`, text: "Stop", onclick: () => act("/api/v1/jobs/stop", e) })
          : null,
        perms.restart
          ? h("button", { type: "button", "aria-label": `Restart ${e.job_id}`, text: "Restart", onclick: () => act("/api/v1/jobs/restart", e) })
          : null,
      ),
    );
    tick(row);
  };

  const tick = (row) => {
    const e = row.execution;
    if (e.status === "scheduled") return; // not started: its due time is beside its status
    const seconds = TERMINAL.has(e.status) ? e.duration_seconds : secondsSince(e.started_at || e.created_at);
    row.elapsed.textContent = formatDuration(seconds);
  };

  const upsert = (execution) => {
    let row = rows.get(execution.id);
    if (!row) {
      if (TERMINAL.has(execution.status)) return; // never seen running here: not news
      row = { tr: h("tr", { dataset: { executionId: execution.id } }), execution };
      rows.set(execution.id, row);
      body.prepend(row.tr);
    } else if (STAGE[execution.status] < STAGE[row.execution.status]) {
      return; // an older state that arrived late (snapshot vs. stream): keep the newer one
    }
    row.execution = execution;
    fill(row);
    empty.hidden = rows.size > 0;
  };

  const timer = setInterval(() => rows.forEach(tick), 1000);
  let loaded = false;
  const early = []; // changes that arrived before the snapshot was shown

  // Subscribe first, then read the snapshot: a run that starts in between is then in
  // the snapshot or arrives as an event, never in neither. The server subscribes
  // before it answers, so "open" means no later change can be missed.
  const source = new EventSource("/api/v1/jobs/events");
  source.addEventListener("execution", (event) => {
    let execution;
    try {
      execution = JSON.parse(event.data);
    } catch (err) {
      console.error("bad execution event", err);
      return;
    }
    if (loaded) upsert(execution);
    else early.push(execution);
  });

  let requested = false;
  const load = () => {
    // EventSource reconnects by itself; the stream only carries changes, so a
    // reconnect may miss one, which the next change of that row repairs.
    if (requested) return;
    requested = true;
    const due = api("/api/v1/jobs/scheduled").catch(() => ({ executions: [] }));
    Promise.all([api("/api/v1/jobs/running"), api("/api/v1/jobs/catalog").catch(() => ({ jobs: [] })), due])
      .then(([running, catalog, scheduled]) => {
        permissions = new Map((catalog.jobs || []).map((j) => [j.id, j.permissions || {}]));
        for (const e of [...(scheduled.executions || [])].reverse()) upsert(e);
        for (const e of [...(running.executions || [])].reverse()) upsert(e);
        loaded = true;
        for (const e of early.splice(0)) upsert(e);
        empty.hidden = rows.size > 0;
      })
      .catch((err) => status.append(notice(err.message, "error")));
  };
  // "error" too: if the stream cannot open (signed out, proxy), the snapshot still
  // loads and shows why.
  source.addEventListener("open", load);
  source.addEventListener("error", load);

  return () => {
    clearInterval(timer);
    source.close();
  };
}
