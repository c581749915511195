// Run policies in the UI: retry attempts, scheduled (due) runs, chain links and queue
// positions. Small functions the views call; each returns a node or null.

import { formatTime, h } from "./dom.js";

function runLink(id, text) {
  return h("a", { href: `#/executions/${encodeURIComponent(id)}`, text: text || id.slice(0, 8) });
}

/** "queued #2" / "due 06:00" beside a status badge, or null. */
export function queueNote(e) {
  if (e.status === "queued" && e.queue_position) return h("span", { class: "queue-note", text: ` #${e.queue_position}` });
  if (e.status === "scheduled" && e.due_at) return h("span", { class: "queue-note", text: ` due ${formatTime(e.due_at)}` });
  return null;
}

/** "attempt 2" for a retry's attempt (history rows, headers), or null for a first run. */
export function attemptNote(e) {
  if (!e.attempt || e.attempt <= 1) return null;
  return h("span", { class: "attempt-note", title: `Attempt ${e.attempt}, a retry of ${e.retry_of}`, text: ` attempt ${e.attempt}` });
}

/** The run's place among attempts, due time, queue position and chain, as a card. */
export function runLinks(e) {
  const items = [];
  if (e.status === "queued" && e.queue_position) items.push(["Queue position", String(e.queue_position)]);
  if (e.due_at) items.push([e.status === "scheduled" ? "Due" : "Was due", formatTime(e.due_at)]);
  if (e.attempt > 1 && e.retry_of) items.push(["Attempt", h("span", {}, `${e.attempt}, retrying `, runLink(e.retry_of, "the first attempt"))]);
  if (e.next_attempt) items.push(["Retried as", runLink(e.next_attempt)]);
  if (e.triggered_by) items.push(["Started by run", runLink(e.triggered_by)]);
  if (e.chained && e.chained.length) items.push(["Started", h("span", { class: "chain-links" }, e.chained.map((id) => runLink(id)))]);
  if (!items.length) return null;
  const list = h("dl", { class: "facts run-links" });
  for (const [label, value] of items) list.append(h("dt", { text: label }), h("dd", {}, value));
  return h("section", { class: "card run-policies", "aria-label": "Attempts and chain" }, h("h2", { text: "Attempts and chain" }), list);
}

/** History rows with a run's attempts kept together, at the place of its newest one,
 * newest attempt first. */
export function groupAttempts(executions) {
  const groups = new Map();
  for (const e of executions) {
    const key = e.retry_of || e.id;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(e);
  }
  const out = [];
  const emitted = new Set();
  for (const e of executions) {
    const key = e.retry_of || e.id;
    if (emitted.has(key)) continue;
    emitted.add(key);
    out.push(...groups.get(key).sort((a, b) => (b.attempt || 1) - (a.attempt || 1)));
  }
  return out;
}
