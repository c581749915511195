// The activity timeline of the History page: one row per job, the last 24 h of runs
// (a bar from start to end, coloured by outcome) and the next 24 h of scheduled fires
// (hollow marks), around a "now" line. Plain positioned elements, no chart library:
// every mark is a link with a label, so it reads and works from the keyboard. Positions
// are set through the CSSOM (el.style), which the page's CSP allows; style attributes
// would be refused.

import { api, query } from "../api.js";
import { formatDuration, formatTime, h, jobZone, notice, rememberZones, timeZone } from "../dom.js";

const HOUR = 3600 * 1000;
const SPAN = 24 * HOUR; // each side of now
const MAX_RUNS = 1000; // history read for the past side, newest first
const ACTIVE = new Set(["queued", "starting", "running", "stopping"]);

async function pastRuns(since, jobId) {
  const runs = [];
  let cursor = null;
  do {
    const page = await api(`/api/v1/jobs/history${query({ since, job_id: jobId, limit: 500, cursor })}`);
    runs.push(...(page.executions || []));
    cursor = page.next_cursor || null;
  } while (cursor && runs.length < MAX_RUNS);
  return runs;
}

/** An element placed on the axis: `left` (and `width`) in percent. */
function placed(el, left, width) {
  el.style.left = `${left}%`;
  if (width !== undefined) el.style.width = `${width}%`;
  return el;
}

/** Where a time falls on the 48 h axis, in percent (clamped to the axis). */
function position(t, start) {
  return Math.max(0, Math.min(100, ((t - start) / (2 * SPAN)) * 100));
}

/** Ticks every 6 h; labels that would collide are classed for the style sheet to hide:
 * `tl-near` (within 3 h of "now": always), and on a narrow screen `tl-minor` (every
 * other tick) and `tl-close` (within 7 h of "now"). */
function axis(start, now) {
  const ticks = [];
  for (let t = Math.ceil(start / (6 * HOUR)) * 6 * HOUR; t <= start + 2 * SPAN; t += 6 * HOUR) {
    const label = new Date(t).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", timeZone: timeZone() });
    const apart = Math.abs(t - now);
    const classes = ["tl-tick"];
    if ((t / (6 * HOUR)) % 2) classes.push("tl-minor");
    if (apart < 3 * HOUR) classes.push("tl-near");
    else if (apart < 7 * HOUR) classes.push("tl-close");
    ticks.push(placed(h("span", { class: classes.join(" "), text: label }), position(t, start)));
  }
  ticks.push(placed(h("span", { class: "tl-now-label", text: "now" }), position(now, start)));
  return h("div", { class: "tl-axis", "aria-hidden": "true" }, ticks);
}

function runMark(e, start, now) {
  const from = Date.parse(e.started_at || e.created_at);
  const to = e.ended_at ? Date.parse(e.ended_at) : ACTIVE.has(e.status) ? now : from;
  const left = position(from, start);
  const width = Math.max(0.25, position(to, start) - left);
  const label = `${e.job_id}: ${e.status} at ${formatTime(e.started_at || e.created_at, jobZone(e.job_id))}, ${formatDuration(e.duration_seconds)}`;
  const mark = h("a", { class: `tl-run tl-${e.status}`, href: `#/executions/${encodeURIComponent(e.id)}?from=history`, title: label, "aria-label": label });
  return placed(mark, left, width);
}

function fireMark(jobId, when, start) {
  const label = `${jobId}: scheduled for ${formatTime(when, jobZone(jobId))}`;
  const mark = h("a", { class: "tl-fire", href: "#/schedules", title: label, "aria-label": label });
  return placed(mark, position(Date.parse(when), start));
}

/** Build the timeline section; it fills in once runs and schedules have arrived. */
export function activityTimeline(ctx, jobId) {
  const section = h("section", { class: "card timeline", "aria-label": "Activity timeline" }, h("h2", { text: "Last 24 h and next 24 h" }), h("p", { class: "loading", text: "Loading…" }));
  const now = Date.now();
  const start = now - SPAN;
  const since = new Date(start).toISOString();
  Promise.all([pastRuns(since, jobId), api("/api/v1/jobs/schedules").catch(() => ({ schedules: [] }))])
    .then(([runs, data]) => {
      if (!ctx.alive()) return;
      rememberZones(data.schedules);
      const rows = new Map(); // job id → {runs, fires}
      const row = (id) => rows.get(id) || rows.set(id, { runs: [], fires: [] }).get(id);
      for (const e of runs) if (!e.test) row(e.job_id).runs.push(e);
      for (const s of data.schedules || []) {
        if (jobId && s.job_id !== jobId) continue;
        const fires = (s.next_fires || []).filter((f) => Date.parse(f) <= now + SPAN);
        if (fires.length) row(s.job_id).fires.push(...fires);
      }
      section.querySelector(".loading").remove();
      if (!rows.size) {
        section.append(notice("Nothing ran in the last 24 hours and nothing is scheduled for the next 24."));
        return;
      }
      const lines = [...rows.keys()].sort().map((id) => {
        const { runs: past, fires } = rows.get(id);
        return h(
          "li",
          { class: "tl-row", dataset: { jobId: id } },
          h("span", { class: "tl-job", text: id }),
          h("div", { class: "tl-track" }, past.map((e) => runMark(e, start, now)), fires.map((f) => fireMark(id, f, start))),
        );
      });
      const list = h("ol", { class: "tl-rows" }, lines);
      list.style.setProperty("--now", `${position(now, start)}%`);
      section.append(
        h("div", { class: "tl-grid" }, axis(start, now), list),
        h("p", { class: "hint", text: "Bars are runs (from start to end, coloured by outcome); hollow marks are the next scheduled fires (up to 5 per job)." }),
      );
    })
    .catch((err) => {
      if (!ctx.alive()) return;
      section.append(notice(err.message, "error"));
    });
  return section;
}
