// Execution detail: facts, variables, result, notifications and the live output.

import { api, jobPath } from "../api.js";
import { clear, facts, formatBytes, formatDuration, formatTime, h, notice, secondsSince, statusBadge } from "../dom.js";
import { METRICS_JOB, MetricsChart } from "../metrics.js";
import { LogView } from "../output.js";
import { stopAllowed } from "./permissions.js";
import { progressBar } from "./running.js";

const TERMINAL = new Set(["succeeded", "failed", "stopped", "timed_out", "lost"]);

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

export function render(container, ctx) {
  const id = ctx.route.rest[0] || "";
  const heading = h("h1", { text: "Execution" });
  const status = h("div", { "aria-live": "polite" });
  const summary = h("section", { class: "card", "aria-label": "Summary" });
  const actions = h("div", { class: "actions" });
  const variables = h("section", { class: "card", "aria-label": "Variables" });
  const result = h("section", { class: "card", "aria-label": "Result" });
  const notifications = h("section", { class: "card", "aria-label": "Notifications", hidden: true });
  const log = new LogView(`/api/v1/jobs/output/${encodeURIComponent(id)}`, `execution-${id}.log`);
  const outputSection = h("section", { class: "card", "aria-label": "Output" }, h("h2", { text: "Output" }), log.root);
  container.append(heading, status, actions, summary);

  let execution = null;
  let permissions = {};
  let chart = null;
  let stream = null;
  let events = null;
  let elapsedEl = null;

  const drawSummary = () => {
    const e = execution;
    heading.textContent = `${e.job_id}${e.test ? " (test run)" : ""}`;
    elapsedEl = h("span", {});
    clear(summary).append(
      h("h2", { class: "visually-hidden", text: "Summary" }),
      facts([
        ["Status", h("span", {}, statusBadge(e.status), e.error ? ` ${e.error}` : "")],
        ["Progress", progressBar(e)],
        ["Execution ID", e.id],
        ["Queued", formatTime(e.created_at)],
        ["Started", formatTime(e.started_at)],
        ["Ended", formatTime(e.ended_at)],
        ["Duration", elapsedEl],
        ["Trigger", e.scheduled_for ? `${e.trigger} (for ${formatTime(e.scheduled_for)})` : e.trigger],
        ["Started by", e.user || "—"],
        ["Exit", exitText(e)],
        ["CPU", e.cpu_seconds === null || e.cpu_seconds === undefined ? "—" : `${e.cpu_seconds.toFixed(2)} s`],
        ["Peak memory", formatBytes(e.peak_rss_bytes)],
        ["Output", formatBytes(e.output_bytes)],
        ["Host / PID", [e.host, e.pid].filter((v) => v !== null && v !== undefined).join(" / ") || "—"],
        ["Restarts", String(e.restart_count ?? 0)],
      ]),
    );
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
    if (permissions.restart) actions.append(h("button", { type: "button", text: "Restart", onclick: () => act("restart") }));
    actions.append(h("a", { href: `#/history?job_id=${encodeURIComponent(e.job_id)}`, text: "History of this job" }));
  };

  const act = async (what) => {
    clear(status);
    try {
      const body = await api(`/api/v1/jobs/${what}`, { method: "POST", body: { execution_id: id } });
      if (what === "restart" && body && body.id) ctx.navigate(`#/executions/${encodeURIComponent(body.id)}`);
      else status.append(notice("Stop requested.", "info"));
    } catch (err) {
      status.append(notice(err.message, "error"));
    }
  };

  const update = (next) => {
    execution = next;
    drawSummary();
  };

  const follow = () => {
    // The server sends id = next offset, so EventSource's automatic reconnect
    // resumes with Last-Event-ID and no output is shown twice.
    stream = new EventSource(`/api/v1/jobs/output/${encodeURIComponent(id)}/stream`);
    stream.addEventListener("output", (event) => {
      const data = JSON.parse(event.data);
      log.append(data.output);
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
      if (stream.readyState === EventSource.CLOSED) status.append(notice("The live output stream closed; reload the page to follow it again.", "error"));
    });
  };

  const timer = setInterval(tick, 1000);

  api(`/api/v1/jobs/status/${encodeURIComponent(id)}`)
    .then(async (e) => {
      execution = e;
      const entry = await api(`/api/v1/jobs/catalog/${jobPath(e.job_id)}`).catch(() => null);
      permissions = (entry && entry.permissions) || {};
      container.append(variables, result, notifications, outputSection);
      drawSummary();
      if (e.job_id === METRICS_JOB) {
        chart = new MetricsChart();
        container.insertBefore(chart.root, outputSection);
        chart.start();
      }
      follow();
      events = new EventSource("/api/v1/jobs/events");
      events.addEventListener("execution", (event) => {
        const next = JSON.parse(event.data);
        if (next.id === id) update(next);
      });
      api(`/api/v1/jobs/status/${encodeURIComponent(id)}/notifications`)
        .then((body) => {
          notifications.hidden = false;
          notifications.append(h("h2", { text: "Notifications" }), deliveriesTable(body.deliveries || []));
        })
        .catch(() => {
          // No notifications on this server (404): the section stays hidden.
        });
    })
    .catch((err) => {
      heading.textContent = "Execution not found";
      status.append(notice(err.message, "error"));
    });

  return () => {
    clearInterval(timer);
    if (stream) stream.close();
    if (events) events.close();
    if (chart) chart.destroy();
  };
}
