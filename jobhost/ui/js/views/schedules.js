// Schedules: every job's schedule, its source and next fires, with an enable toggle
// and an edit form that previews the next fire times as you type.

import { api, jobPath } from "../api.js";
import { openDialog } from "../dialog.js";
import { clear, debounce, field, formatTime, h, notice, statusBadge, timeAgo } from "../dom.js";

const BAD = new Set(["failed", "timed_out", "lost", "rejected"]);
const SHOWN_FIRES = 3;

function fireItem(f, zone) {
  return h("li", {}, timeAgo(f), h("span", { class: "muted", text: ` · ${formatTime(f, zone)}` }));
}

/** The next fires, one line each: the first three, the rest behind "more". */
function fireList(fires, zone) {
  if (!fires || !fires.length) return h("span", { class: "muted", text: "none" });
  const first = h("ol", { class: "fires" }, fires.slice(0, SHOWN_FIRES).map((f) => fireItem(f, zone)));
  if (fires.length <= SHOWN_FIRES) return first;
  return h(
    "div",
    {},
    first,
    h("details", { class: "more-fires" }, h("summary", { text: `${fires.length - SHOWN_FIRES} more` }), h("ol", { class: "fires", start: String(SHOWN_FIRES + 1) }, fires.slice(SHOWN_FIRES).map((f) => fireItem(f, zone)))),
  );
}

/** The last fire: when, how it ended, a link to its run and, when it failed, why. */
function lastFire(last) {
  if (!last) return h("span", { class: "muted", text: "never" });
  const reason = h("p", { class: "reason" });
  const wrap = h(
    "div",
    { class: `last-fire${BAD.has(last.status) ? " last-fire-bad" : ""}` },
    timeAgo(last.scheduled_for),
    " ",
    last.status ? statusBadge(last.status) : null,
    last.outcome && last.outcome !== "started" ? ` ${last.outcome}` : "",
    last.execution_id ? [" ", h("a", { href: `#/executions/${encodeURIComponent(last.execution_id)}?from=history`, text: "Open run" })] : null,
    reason,
  );
  if (last.execution_id && BAD.has(last.status)) {
    api(`/api/v1/jobs/status/${encodeURIComponent(last.execution_id)}`)
      .then((e) => {
        reason.textContent = e.error || "";
      })
      .catch(() => {});
  }
  return wrap;
}

function editSchedule(entry, onSaved) {
  const expr = field("Cron expression", h("input", { name: "schedule", value: entry.schedule || "", autocomplete: "off", spellcheck: "false" }), "5 fields (minute hour day month weekday), an optional 6th for seconds, or @hourly, @daily…");
  const tz = field("Time zone", h("input", { name: "timezone", value: entry.timezone || "", autocomplete: "off", placeholder: "UTC" }));
  const enabled = h("input", { type: "checkbox", name: "enabled", checked: entry.enabled !== false });
  const enabledField = field("Enabled", enabled);
  enabledField.wrap.classList.add("field-check");
  const vars = field("Variables (JSON object)", h("textarea", { name: "variables", rows: "3", text: JSON.stringify(entry.variables || {}, null, 2) }));
  const preview = h("div", { class: "preview", "aria-live": "polite" });
  const status = h("div", { class: "form-status", "aria-live": "polite" });
  const save = h("button", { type: "submit", class: "primary", text: "Save" });
  const cancel = h("button", { type: "button", text: "Cancel" });
  const reset = entry.source === "override" ? h("button", { type: "button", class: "danger", text: "Remove override" }) : null;
  const form = h(
    "form",
    { novalidate: true },
    status,
    expr.wrap,
    tz.wrap,
    enabledField.wrap,
    vars.wrap,
    h("h3", { text: "Next fire times" }),
    preview,
    h("div", { class: "actions" }, save, cancel, reset),
  );
  const { close } = openDialog(`Schedule: ${entry.job_id}`, form);
  cancel.addEventListener("click", close);

  let seq = 0;
  const refresh = debounce(async () => {
    const mine = (seq += 1);
    const schedule = expr.input.value.trim();
    if (!schedule) {
      clear(preview).append(h("p", { class: "muted", text: "No schedule: the job only runs when started." }));
      return;
    }
    try {
      const body = await api("/api/v1/jobs/schedules/preview", { method: "POST", body: { schedule, timezone: tz.input.value.trim() || null } });
      if (mine !== seq) return; // a newer preview is on its way
      expr.error.textContent = "";
      expr.input.removeAttribute("aria-invalid");
      clear(preview).append(fireList(body.next_fires));
    } catch (err) {
      if (mine !== seq) return;
      expr.error.textContent = err.message;
      expr.input.setAttribute("aria-invalid", "true");
      clear(preview);
    }
  }, 300);
  expr.input.addEventListener("input", refresh);
  tz.input.addEventListener("input", refresh);
  refresh();

  const path = `/api/v1/jobs/schedules/${jobPath(entry.job_id)}`;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(status);
    let variables;
    try {
      variables = JSON.parse(vars.input.value || "{}");
      if (typeof variables !== "object" || variables === null || Array.isArray(variables)) throw new Error("not an object");
      vars.error.textContent = "";
    } catch {
      vars.error.textContent = 'Variables must be a JSON object, such as {"Interval": 30}';
      vars.input.focus();
      return;
    }
    try {
      await api(path, {
        method: "PUT",
        body: { schedule: expr.input.value.trim() || null, timezone: tz.input.value.trim() || null, enabled: enabled.checked, variables },
      });
      close();
      onSaved();
    } catch (err) {
      status.append(notice(err.message, "error"));
    }
  });
  if (reset) {
    reset.addEventListener("click", async () => {
      try {
        await api(path, { method: "DELETE" });
        close();
        onSaved();
      } catch (err) {
        status.append(notice(err.message, "error"));
      }
    });
  }
}

export function render(container) {
  const status = h("div", { "aria-live": "polite" });
  const body = h("tbody");
  const table = h(
    "table",
    { class: "table" },
    h("caption", { class: "visually-hidden", text: "Schedules" }),
    h("thead", {}, h("tr", {}, ["Job", "Schedule", "Source", "Next fires", "Last fire", "Enabled", "Actions"].map((t) => h("th", { scope: "col", text: t })))),
    body,
  );
  const wrap = h("div", { class: "table-wrap" }, table);
  container.append(h("h1", { text: "Schedules" }), status, wrap);

  const load = async () => {
    clear(status);
    try {
      const data = await api("/api/v1/jobs/schedules");
      clear(body);
      for (const entry of data.schedules || []) body.append(scheduleRow(entry));
      if (!(data.schedules || []).length) status.append(notice("No jobs you may view have a schedule."));
    } catch (err) {
      wrap.hidden = err.status === 404;
      status.append(notice(err.status === 404 ? "Scheduling is not available on this server" : err.message, err.status === 404 ? "info" : "error"));
    }
  };

  const scheduleRow = (entry) => {
    const scheduled = Boolean(entry.schedule);
    const toggle = h("input", {
      type: "checkbox",
      checked: entry.enabled !== false,
      disabled: !entry.can_edit,
      "aria-label": `Enable the schedule of ${entry.job_id}`,
    });
    toggle.addEventListener("change", async () => {
      clear(status);
      try {
        await api(`/api/v1/jobs/schedules/${jobPath(entry.job_id)}`, { method: "PUT", body: { enabled: toggle.checked } });
        await load();
      } catch (err) {
        toggle.checked = !toggle.checked;
        status.append(notice(err.message, "error"));
      }
    });
    return h(
      "tr",
      { dataset: { jobId: entry.job_id } },
      h("td", { text: entry.job_id }),
      h(
        "td",
        {},
        scheduled ? h("code", { text: entry.schedule }) : h("span", { class: "muted", text: "not scheduled" }),
        scheduled && entry.timezone ? ` (${entry.timezone})` : "",
        entry.description ? h("p", { class: "cron-words", text: entry.description }) : null,
        entry.problem ? h("p", { class: "reason", text: entry.problem }) : null,
      ),
      h("td", { text: entry.source }),
      h("td", {}, fireList(entry.next_fires)),
      h("td", {}, lastFire(entry.last_fire)),
      h("td", {}, scheduled ? toggle : h("span", { class: "muted", text: "—" })),
      h(
        "td",
        {},
        entry.can_edit
          ? h("button", { type: "button", "aria-label": `Edit the schedule of ${entry.job_id}`, text: "Edit", onclick: () => editSchedule(entry, load) })
          : h("span", { class: "muted", text: "read only" }),
      ),
    );
  };

  load();
}
