// Triggers and seeing before doing, in the UI: the dry-run box and the plan of the start dialog, choices a
// script lists (choices_from), and a job's webhook (create, rotate, shown once).
//
// The start form (form.js) calls in here at three points: withChoices() before it
// builds its fields, startExtras() for the controls it appends, and the body it sends
// carries the box's dry_run. The catalog card calls webhookButton().

import { api, jobPath } from "./api.js";
import { openDialog } from "./dialog.js";
import { clear, field, formatTime, h, notice } from "./dom.js";

/**
 * The job with the choices its variables' choices_from scripts list now (from the job
 * detail, which runs them); the job itself when it has none or the detail fails (the
 * server checks the value on start anyway).
 */
export async function withChoices(job) {
  if (job.detailed || !(job.variables || []).some((v) => v.choices_from)) return job;
  try {
    const detail = await api(`/api/v1/jobs/catalog/${jobPath(job.id)}`);
    return { ...job, variables: detail.variables, detailed: true };
  } catch {
    return { ...job, detailed: true };
  }
}

/** A note under a variable whose choices could not be listed (the start would be refused). */
export function choicesNote(spec) {
  return spec.choices_error ? h("p", { class: "field-error", text: spec.choices_error }) : null;
}

/**
 * The dry-run box and the "Show plan" button for the start dialog. `readVariables()`
 * gives the variables as typed so far. Returns {node, dryRun(), at()}: at() is the
 * chosen start time as an ISO instant, or null to start now.
 */
export function startExtras(job, mode, readVariables) {
  const box = h("input", { type: "checkbox", name: "dry_run" });
  const f = field("Dry run", box, "The script gets JOBHOST_DRY_RUN=1 and should change nothing; the run is recorded as a dry run.");
  f.wrap.classList.add("field-check");
  const planButton = h("button", { type: "button", text: "Show plan" });
  planButton.addEventListener("click", () => openPlan(job, readVariables()));
  // Run at: a local date and time, sent as an instant (the server keeps it as `scheduled`).
  const when = h("input", { type: "datetime-local", name: "at", step: "1" });
  const whenField = field("Start at", when, "Leave empty to start now; a later time keeps the run scheduled until then (cancel it with Stop).");
  const node = h(
    "div",
    { class: "policies" },
    f.wrap,
    mode === "start" ? whenField.wrap : null,
    mode === "start" ? h("p", {}, planButton) : null,
  );
  const at = () => (mode === "start" && when.value ? new Date(when.value).toISOString() : null);
  return { node, dryRun: () => box.checked, at };
}

function planSection(title, ...children) {
  return h("section", { class: "plan-section", "aria-label": title }, h("h3", { text: title }), ...children);
}

function verdictText(admission) {
  if (admission.verdict === "queue") return `Queued at position ${admission.position}`;
  if (admission.verdict === "start") return "Starts at once";
  return "Refused";
}

/** The plan of a start with `variables`: what would run, where, and whether it would start. */
export async function openPlan(job, variables) {
  const body = h("div", { class: "plan", "aria-live": "polite" }, h("p", { class: "muted", text: "Planning…" }));
  openDialog(`Plan: ${job.name}`, body);
  const params = Object.entries(variables).map(([k, v]) => `var=${encodeURIComponent(`${k}=${v}`)}`);
  let plan;
  try {
    plan = await api(`/api/v1/jobs/catalog/${jobPath(job.id)}/plan${params.length ? `?${params.join("&")}` : ""}`);
  } catch (err) {
    clear(body).append(notice(err.message, "error"));
    return;
  }
  const a = plan.admission;
  const kind = a.verdict === "reject" ? "error" : a.verdict === "queue" ? "warning" : "info";
  const fires = plan.schedule.next.length
    ? h("ol", {}, ...plan.schedule.next.map((f) => h("li", { text: `${f.local} (${plan.schedule.timezone}) — ${formatTime(f.at)}` })))
    : h("p", { class: "muted", text: plan.schedule.problem || "Not scheduled." });
  const env = plan.env
    ? h("table", { class: "plan-env" }, ...Object.entries(plan.env).map(([k, v]) => h("tr", {}, h("th", { scope: "row", text: k }), h("td", {}, h("code", { text: v })))))
    : h("p", { class: "muted", text: "Not built: the variables were refused." });
  clear(body).append(
    notice(`If started now: ${verdictText(a)} — ${a.reason}`, kind),
    ...plan.problems.map((p) => notice(p, "error")),
    planSection("Init script", h("p", { text: plan.init.script ? `${plan.init.script}: ${plan.init.verdict}${plan.init.message ? ` — ${plan.init.message}` : ""}` : "None" })),
    planSection("Command", h("pre", { class: "plan-argv", text: plan.argv ? plan.argv.join(" ") : "—" }), h("p", { class: "muted", text: `in ${plan.cwd}` })),
    planSection("Environment", env),
    planSection("Limits", h("p", { text: Object.entries(plan.limits || {}).filter(([, v]) => v !== null).map(([k, v]) => `${k} ${v}`).join(" · ") || "—" })),
    planSection(`Next fires${plan.schedule.expression ? ` of ${plan.schedule.expression}` : ""}`, fires),
  );
}

function shownOnce(made) {
  const url = new URL(made.url_path, location.origin).href;
  const rows = [h("p", {}, h("strong", { text: "URL: " }), h("code", { class: "hook-url", text: url }))];
  if (made.signing_secret) {
    rows.push(h("p", {}, h("strong", { text: "Signing secret: " }), h("code", { class: "hook-secret", text: made.signing_secret })));
    rows.push(h("p", { class: "muted", text: "Send X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body> with each call." }));
  }
  return h("div", { class: "notice notice-warning", role: "status" }, h("p", { text: "Copy it now: it is shown this once and the server keeps only a hash." }), ...rows);
}

/** The job's webhook: whether it exists, and create / rotate (the URL shown once). */
export async function openWebhook(job) {
  const body = h("div", { class: "webhook", "aria-live": "polite" }, h("p", { class: "muted", text: "Loading…" }));
  openDialog(`Webhook: ${job.name}`, body);
  const path = `/api/v1/jobs/catalog/${jobPath(job.id)}/hook`;
  const draw = (hook, made = null) => {
    const rules = `${hook.signature ? "Signed calls (HMAC-SHA256)" : "Unsigned calls: the URL is the secret"}, at most ${hook.rate_per_minute} a minute.`;
    const state = hook.exists ? `Made by ${hook.created_by} on ${formatTime(hook.created_at)}.` : "No webhook yet.";
    const action = h("button", { type: "button", class: hook.exists ? "" : "primary", text: hook.exists ? "Rotate (new URL, old one stops)" : "Create webhook" });
    action.addEventListener("click", async () => {
      if (hook.exists && !window.confirm("Rotate the webhook? Its current URL stops working at once.")) return;
      action.disabled = true;
      try {
        const fresh = await api(hook.exists ? `${path}/rotate` : path, { method: "POST" });
        draw(fresh, fresh);
      } catch (err) {
        body.append(notice(err.message, "error"));
        action.disabled = false;
      }
    });
    clear(body).append(h("p", { text: state }), h("p", { class: "muted", text: rules }), made ? shownOnce(made) : "", h("div", { class: "actions" }, action));
  };
  try {
    draw(await api(path));
  } catch (err) {
    clear(body).append(notice(err.message, "error"));
  }
}

/** A "Webhook" button for a job whose job.json enables one, for holders of the start right. */
export function webhookButton(job) {
  if (!job.webhook || !job.webhook.enabled || !(job.permissions || {}).start) return null;
  return h("button", { type: "button", "aria-label": `Webhook of ${job.name}`, text: "Webhook", onclick: () => openWebhook(job) });
}
