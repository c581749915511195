// The start / test-run form, generated from a catalog entry's `variables`.
//
// Client-side checks mirror the server's (jobhost/catalog/templates.py, same wording)
// so most mistakes are caught before a round trip. They are skipped for jobs with an
// init script: the server runs that script *before* its own checks, and the script
// may fill in or normalise values, so only the server can judge the final values.

import { api } from "./api.js";
import { openDialog } from "./dialog.js";
import { clear, field, formatClock, h, notice } from "./dom.js";
import { choicesNote, startExtras, withChoices } from "./triggers.js";

/**
 * A description with its {{Variable}} placeholders filled in with the defaults; a
 * variable without a default (or a secret) shows as a chip with its name.
 */
export function describe(job) {
  const text = String(job.description || "");
  const specs = new Map((job.variables || []).map((v) => [v.name, v]));
  const parts = [];
  let last = 0;
  const re = /\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}/g;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    parts.push(text.slice(last, m.index));
    const spec = specs.get(m[1]);
    const known = spec && !spec.secret && spec.default !== null && spec.default !== undefined;
    parts.push(known ? String(spec.default) : h("span", { class: "var-chip", title: "set when the job starts", text: m[1] }));
    last = re.lastIndex;
  }
  parts.push(text.slice(last));
  return parts.filter((p) => p !== "");
}

function inputFor(spec, values) {
  const name = spec.name;
  if (values && Object.hasOwn(values, name) && !spec.secret) {
    spec = { ...spec, default: values[name] };
  }
  if (spec.type === "boolean") {
    return h("input", { type: "checkbox", name, checked: spec.default === true });
  }
  if (Array.isArray(spec.choices) && spec.choices.length) {
    const select = h("select", { name });
    if (!spec.required) select.append(h("option", { value: "", text: "(none)" }));
    for (const choice of spec.choices) {
      select.append(h("option", { value: String(choice), text: String(choice), selected: choice === spec.default }));
    }
    return select;
  }
  const defaultValue = spec.default === null || spec.default === undefined || spec.secret ? "" : String(spec.default);
  if (spec.type === "integer" || spec.type === "number") {
    return h("input", {
      type: "number",
      name,
      value: defaultValue,
      min: spec.min ?? null,
      max: spec.max ?? null,
      step: spec.type === "integer" ? "1" : "any",
      inputmode: spec.type === "integer" ? "numeric" : "decimal",
    });
  }
  return h("input", {
    type: spec.secret ? "password" : "text",
    name,
    value: defaultValue,
    pattern: spec.pattern ?? null,
    autocomplete: spec.secret ? "new-password" : "off",
    placeholder: spec.secret && spec.default === "***" ? "(leave empty to use the stored default)" : null,
  });
}

function readValue(spec, input) {
  if (spec.type === "boolean") return input.checked;
  const text = input.value;
  if (text === "") return null;
  if (spec.type === "integer" || spec.type === "number") {
    const n = Number(text);
    return Number.isFinite(n) ? n : text;
  }
  return text;
}

function g(n) {
  return String(Number(n)); // like Python's :g for the values job.json holds
}

/** The server's message for a bad value, or null; same words as templates.py. */
export function checkValue(spec, value) {
  const name = spec.name;
  if (value === null || value === "") return spec.required ? `${name} is required` : null;
  if (spec.type === "integer" || spec.type === "number") {
    if (typeof value !== "number") return `${name} must be ${spec.type === "integer" ? "an integer" : "a number"}, got '${value}'`;
    if (spec.type === "integer" && !Number.isInteger(value)) return `${name} must be an integer, got ${value}`;
    if (spec.min !== null && spec.min !== undefined && value < spec.min) return `${name} must be at least ${g(spec.min)}, got ${value}`;
    if (spec.max !== null && spec.max !== undefined && value > spec.max) return `${name} must be at most ${g(spec.max)}, got ${value}`;
  } else if (spec.type === "string") {
    const size = [...value].length;
    if (spec.min !== null && spec.min !== undefined && size < spec.min) return `${name} must be at least ${g(spec.min)} characters long, got ${size}`;
    if (spec.max !== null && spec.max !== undefined && size > spec.max) return `${name} must be at most ${g(spec.max)} characters long, got ${size}`;
  }
  if (spec.pattern && typeof value === "string") {
    let re = null;
    try {
      re = new RegExp(`^(?:${spec.pattern})$`, "u");
    } catch {
      re = null; // a Python-only pattern: the server checks it
    }
    if (re && !re.test(value)) return `${name} must match the pattern '${spec.pattern}', got '${value}'`;
  }
  if (Array.isArray(spec.choices) && spec.choices.length && !spec.choices.map(String).includes(String(value))) {
    return `${name} must be one of ${spec.choices.join(", ")}, got '${value}'`;
  }
  return null;
}

/** Which field a detail-less message is about: the variable its first word names. */
function fieldNamedBy(message, names) {
  const first = String(message).split(/[\s:]/, 1)[0];
  return names.includes(first) ? first : null;
}

/**
 * The generated fields of a job's variables (the start form's, reused by the schedule
 * form): a Map name → {spec, wrap, input, error}, pre-filled from `values`.
 */
export function variableFields(specs, values = null) {
  const fields = new Map();
  for (const spec of specs || []) {
    const input = inputFor(spec, values);
    const hint = [spec.description, spec.required ? "Required." : null].filter(Boolean).join(" ");
    const f = field(spec.name, input, hint || null);
    if (spec.type === "boolean") f.wrap.classList.add("field-check");
    fields.set(spec.name, { spec, ...f });
  }
  return fields;
}

/** A field's value as the API takes it (null when left empty). */
export function fieldValue(f) {
  return readValue(f.spec, f.input);
}

/** A 409 from a job at its max_concurrent: say since when it runs and offer the way out. */
async function conflictNotice(err, onStarted) {
  const running = (err.details && err.details.running) || [];
  if (!running.length) return notice(err.message, "error");
  let since = "";
  try {
    const other = await api(`/api/v1/jobs/status/${encodeURIComponent(running[0])}`);
    since = ` since ${formatClock(other.started_at || other.created_at)}`;
  } catch {
    since = "";
  }
  const open = h("a", { href: `#/executions/${encodeURIComponent(running[0])}`, text: "Open run" });
  const restart = h("button", { type: "button", text: "Restart it" });
  const box = h("div", { class: "notice notice-error conflict", role: "alert" }, `Already running${since} — `, open, " · ", restart);
  restart.addEventListener("click", async () => {
    restart.disabled = true;
    try {
      onStarted(await api("/api/v1/jobs/restart", { method: "POST", body: { execution_id: running[0] } }));
    } catch (again) {
      box.replaceWith(notice(again.message, "error"));
    }
  });
  return box;
}

/**
 * Open the start (mode "start") or test-run (mode "test") dialog for a catalog entry;
 * on success calls onStarted(execution). `values` pre-fills the fields (a re-run's
 * variables); secrets are never pre-filled.
 */
export function openStartForm(job, mode, onStarted, { values = null } = {}) {
  if (!job.detailed && (job.variables || []).some((v) => v.choices_from)) {
    // Choices a script lists come with the job detail: fetch it, then open.
    withChoices(job).then((detailed) => openStartForm(detailed, mode, onStarted, { values }));
    return;
  }
  const specs = job.variables || [];
  const fields = new Map();
  const top = h("div", { class: "form-status", "aria-live": "polite" });
  const form = h("form", { class: "start-form", novalidate: true });
  form.append(top);
  if (job.description) form.append(h("p", { class: "muted" }, describe(job)));
  if (!specs.length) form.append(h("p", { text: "This job takes no variables." }));
  for (const [name, f] of variableFields(specs, values)) {
    const note = choicesNote(f.spec);
    if (note) f.wrap.append(note);
    fields.set(name, f);
    form.append(f.wrap);
  }
  if (job.has_init_script) {
    form.append(h("p", { class: "hint", text: "This job's init script checks the values when you submit." }));
  }
  const typed = () => {
    const now = {};
    for (const [name, f] of fields) {
      const value = readValue(f.spec, f.input);
      if (value !== null && !(f.spec.secret && value === "")) now[name] = value;
    }
    return now;
  };
  const extras = startExtras(job, mode, typed);
  form.append(extras.node);
  const submit = h("button", { type: "submit", class: "primary", text: mode === "test" ? "Start test run" : "Start" });
  const cancel = h("button", { type: "button", text: "Cancel" });
  form.append(h("div", { class: "actions" }, submit, cancel));

  const title = `${mode === "test" ? "Test run" : "Start"}: ${job.name}`;
  const { close } = openDialog(title, form);
  cancel.addEventListener("click", close);

  const showErrors = (perField, message) => {
    clear(top);
    for (const f of fields.values()) {
      f.error.textContent = "";
      f.input.removeAttribute("aria-invalid");
    }
    if (message) top.append(notice(message, "error"));
    let firstBad = null;
    for (const [name, text] of Object.entries(perField)) {
      const f = fields.get(name);
      if (!f) continue;
      f.error.textContent = text;
      f.input.setAttribute("aria-invalid", "true");
      firstBad = firstBad || f.input;
    }
    if (firstBad) firstBad.focus();
  };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const variables = {};
    const problems = {};
    for (const [name, f] of fields) {
      const value = readValue(f.spec, f.input);
      if (f.spec.secret && value === null && f.spec.default === "***") continue; // keep stored default
      if (!job.has_init_script) {
        const problem = checkValue(f.spec, value);
        if (problem) problems[name] = problem;
      }
      if (value !== null) variables[name] = value;
    }
    if (Object.keys(problems).length) {
      showErrors(problems, "Fix the highlighted values and submit again.");
      return;
    }
    submit.disabled = true;
    try {
      const execution = await api(mode === "test" ? "/api/v1/jobs/test" : "/api/v1/jobs/start", {
        method: "POST",
        body: {
          job_id: job.id,
          variables,
          ...(extras.dryRun() ? { dry_run: true } : {}),
          ...(extras.at() ? { at: extras.at() } : {}),
        },
      });
      close();
      onStarted(execution);
    } catch (err) {
      if (err.status === 409 && err.details && err.details.running) {
        clear(top).append(await conflictNotice(err, (execution) => {
          close();
          onStarted(execution);
        }));
        return;
      }
      let perField = {};
      if (err.details && typeof err.details === "object" && !Array.isArray(err.details)) {
        perField = Object.fromEntries(Object.entries(err.details).filter(([k]) => fields.has(k)));
      }
      if (!Object.keys(perField).length && err.status === 422) {
        const named = fieldNamedBy(err.message, [...fields.keys()]);
        if (named) perField = { [named]: err.message };
      }
      showErrors(perField, err.message);
    } finally {
      submit.disabled = false;
    }
  });
}
