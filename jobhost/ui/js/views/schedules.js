// Schedules: every job's schedule, its source and next fires, with an enable toggle
// and an edit form that previews the next fire times as you type.

import { api, jobPath } from "../api.js";
import { openDialog } from "../dialog.js";
import { checkValue, fieldValue, variableFields } from "../form.js";
import { clear, debounce, field, formatTime, h, jobZone, notice, rememberZones, statusBadge, timeAgo } from "../dom.js";

const BAD = new Set(["failed", "timed_out", "lost", "rejected"]);
const SHOWN_FIRES = 3;

function fireItem(f, zone) {
  return h("li", {}, timeAgo(f, zone), h("span", { class: "muted", text: ` · ${formatTime(f, zone)}` }));
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

/** Which field of the schedule form an error is about: the zone's, or the cron's. */
function fieldOf(err) {
  if (err.details && err.details.field === "timezone") return "timezone";
  return /^Unknown time zone/.test(err.message) ? "timezone" : "schedule";
}

async function editSchedule(entry, onSaved, alive) {
  // The job's variables, for the same generated fields as the start form.
  const job = await api(`/api/v1/jobs/catalog/${jobPath(entry.job_id)}`).catch(() => null);
  if (!alive()) return; // the page was left meanwhile: no dialog over another page
  const specs = (job && job.variables) || [];
  const secrets = specs.filter((spec) => spec.secret).map((spec) => spec.name);
  const expr = field("Cron expression", h("input", { name: "schedule", value: entry.schedule || "", autocomplete: "off", spellcheck: "false" }), "5 fields (minute hour day month weekday), an optional 6th for seconds, or @hourly, @daily…");
  const tz = field("Time zone", h("input", { name: "timezone", value: entry.timezone || "", autocomplete: "off", placeholder: "UTC" }), "An IANA name such as Europe/Berlin");
  const enabled = h("input", { type: "checkbox", name: "enabled", checked: Boolean(entry.schedule) && entry.enabled !== false });
  const enabledField = field("Enabled", enabled);
  enabledField.wrap.classList.add("field-check");
  const varFields = variableFields(specs.filter((spec) => !spec.secret), entry.variables || {});
  const vars = h(
    "fieldset",
    { class: "schedule-vars" },
    h("legend", { text: "Variables of scheduled runs" }),
    specs.length ? null : h("p", { class: "muted", text: job ? "This job takes no variables." : "The job's variables could not be loaded." }),
    [...varFields.values()].map((f) => f.wrap),
    secrets.length ? h("p", { class: "hint", text: `Secret variables (${secrets.join(", ")}) are never stored in a schedule: scheduled runs use their defaults.` }) : null,
  );
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
    h("h3", { text: "Next fire times" }),
    preview,
    vars,
    h("div", { class: "actions" }, save, cancel, reset),
  );
  const { close } = openDialog(`Schedule: ${entry.job_id}`, form);
  cancel.addEventListener("click", close);

  const allFields = [expr, tz, ...varFields.values()];
  const mark = (byName, message) => {
    for (const f of allFields) {
      f.error.textContent = "";
      f.input.removeAttribute("aria-invalid");
    }
    clear(status);
    let first = null;
    for (const [name, text] of Object.entries(byName)) {
      const f = name === "schedule" ? expr : name === "timezone" ? tz : varFields.get(name);
      if (!f) continue;
      f.error.textContent = text;
      f.input.setAttribute("aria-invalid", "true");
      first = first || f.input;
    }
    if (message && !first) status.append(notice(message, "error"));
    return first;
  };

  // The preview checks cron and zone as you type; its error goes on the field at fault.
  let seq = 0;
  let checked = null; // the last check: {ok, byName}
  const check = async () => {
    const mine = (seq += 1);
    const schedule = expr.input.value.trim();
    enabled.disabled = !schedule;
    if (!schedule) {
      enabled.checked = false;
      clear(preview).append(h("p", { class: "muted", text: "No schedule: the job only runs when started." }));
      checked = { ok: true, byName: {} };
      mark({});
      return checked;
    }
    try {
      const body = await api("/api/v1/jobs/schedules/preview", { method: "POST", body: { schedule, timezone: tz.input.value.trim() || null } });
      if (mine !== seq) return checked;
      checked = { ok: true, byName: {} };
      mark({});
      clear(preview).append(fireList(body.next_fires, tz.input.value.trim() || undefined));
    } catch (err) {
      if (mine !== seq) return checked;
      checked = { ok: false, byName: { [fieldOf(err)]: err.message } };
      mark(checked.byName);
      clear(preview);
    }
    return checked;
  };
  const refresh = debounce(check, 300);
  let hadSchedule = Boolean(entry.schedule);
  expr.input.addEventListener("input", () => {
    const has = Boolean(expr.input.value.trim());
    if (has && !hadSchedule) enabled.checked = true; // a new schedule starts enabled
    hadSchedule = has;
    refresh();
  });
  tz.input.addEventListener("input", refresh);
  for (const f of varFields.values()) f.input.addEventListener("input", () => mark({}));
  check();

  const path = `/api/v1/jobs/schedules/${jobPath(entry.job_id)}`;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const result = await check(); // a bad cron or zone is never sent
    if (!result.ok) {
      const first = mark(result.byName);
      if (first) first.focus();
      return;
    }
    const schedule = expr.input.value.trim();
    const variables = {};
    const problems = {};
    for (const [name, f] of varFields) {
      const value = fieldValue(f);
      const given = Object.hasOwn(entry.variables || {}, name);
      // Only what differs from job.json's default is stored, so a later default applies.
      if (value !== null && (given || String(value) !== String(f.spec.default))) variables[name] = value;
      if (schedule && job && !job.has_init_script) {
        const problem = checkValue(f.spec, value === null ? (f.spec.default ?? null) : value);
        if (problem) problems[name] = problem;
      }
    }
    if (Object.keys(problems).length) {
      const first = mark(problems);
      if (first) first.focus();
      return;
    }
    save.disabled = true;
    try {
      await api(path, {
        method: "PUT",
        body: { schedule: schedule || null, timezone: tz.input.value.trim() || null, enabled: enabled.checked, variables },
      });
      close();
      onSaved();
    } catch (err) {
      let byName = {};
      if (err.code === "invalid_schedule") byName = { [fieldOf(err)]: err.message };
      else if (err.details && typeof err.details === "object" && !Array.isArray(err.details)) {
        byName = Object.fromEntries(Object.entries(err.details).filter(([k]) => varFields.has(k)));
      }
      const first = mark(byName, err.message);
      if (first) first.focus();
    } finally {
      save.disabled = false;
    }
  });
  if (reset) {
    reset.addEventListener("click", async () => {
      try {
        await api(path, { method: "DELETE" });
        close();
        onSaved();
      } catch (err) {
        mark({}, err.message);
      }
    });
  }
}

export function render(container, ctx) {
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
      rememberZones(data.schedules);
      clear(body);
      // Scheduled jobs first; the unscheduled ones follow, greyed, never "enabled".
      const entries = (data.schedules || []).slice().sort((a, b) => Number(!a.schedule) - Number(!b.schedule));
      for (const entry of entries) body.append(scheduleRow(entry));
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
      { class: scheduled ? null : "unscheduled", dataset: { jobId: entry.job_id } },
      h("td", { text: entry.job_id }),
      h(
        "td",
        {},
        scheduled ? h("code", { text: entry.schedule }) : h("span", { class: "muted", text: "not scheduled" }),
        scheduled && entry.timezone ? ` (${entry.timezone})` : "",
        entry.description ? h("p", { class: "cron-words", text: entry.description }) : null,
        entry.problem ? h("p", { class: "reason", text: entry.problem }) : null,
      ),
      h("td", { text: scheduled ? entry.source : "—" }),
      h("td", {}, fireList(entry.next_fires, jobZone(entry.job_id))),
      h("td", {}, lastFire(entry.last_fire)),
      h("td", {}, scheduled ? toggle : h("span", { class: "muted", text: "no schedule" })),
      h(
        "td",
        {},
        entry.can_edit
          ? h("button", { type: "button", "aria-label": `Edit the schedule of ${entry.job_id}`, text: "Edit", onclick: () => editSchedule(entry, load, ctx.alive) })
          : h("span", { class: "muted", text: "read only" }),
      ),
    );
  };

  load();
}
