// DOM building and formatting. Every piece of server data reaches the page through
// textContent or attributes set here, never through innerHTML: a job description
// holding "<script>" is shown as those characters.

/**
 * Create an element: h("button", {class: "primary", onclick: fn}, "Start").
 * Attribute keys starting with "on" become listeners; `text` sets textContent;
 * children may be strings (text nodes), nodes, arrays, null or false (skipped).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "text") {
      el.textContent = String(value);
    } else if (key === "class") {
      el.className = value;
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (value === true) {
      el.setAttribute(key, "");
    } else if (key in el && typeof value !== "string") {
      el[key] = value;
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

let idCounter = 0;
/** A page-unique id for label/for and aria-describedby pairs. */
export function uid(prefix = "f") {
  idCounter += 1;
  return `${prefix}-${idCounter}`;
}

/** A labelled form field: returns {wrap, input, error}. */
export function field(label, input, hint) {
  if (!input.id) input.id = uid();
  const error = h("p", { class: "field-error", id: uid("err"), role: "alert" });
  const hintEl = hint ? h("p", { class: "hint", id: uid("hint"), text: hint }) : null;
  input.setAttribute(
    "aria-describedby",
    [hintEl && hintEl.id, error.id].filter(Boolean).join(" "),
  );
  const labelEl = h("label", { for: input.id, text: label });
  const wrap = h("div", { class: "field" }, labelEl, hintEl, input, error);
  return { wrap, input, error };
}

// Times: every absolute time names its zone. The zone is the browser's unless the user
// picked UTC or "each job's own zone" (the topbar's switch, remembered). A time that
// belongs to a job asks jobZone(jobId): in the job mode it is that job's zone (known
// from the catalog entries a view loaded, rememberZones), else the chosen one.
const ZONE_KEY = "jobhost-zone";
const ZONE_MODES = ["browser", "UTC", "job"];
const jobZones = new Map(); // job id → IANA zone

export function zoneMode() {
  try {
    const mode = localStorage.getItem(ZONE_KEY);
    return ZONE_MODES.includes(mode) ? mode : "browser";
  } catch {
    return "browser";
  }
}

export function setZoneMode(mode) {
  try {
    if (mode === "UTC" || mode === "job") localStorage.setItem(ZONE_KEY, mode);
    else localStorage.removeItem(ZONE_KEY);
  } catch {
    // Storage may be disabled: the choice lasts for this page only.
  }
}

/** The next mode of the switch: browser → UTC → each job's zone → browser. */
export function nextZoneMode(mode = zoneMode()) {
  return ZONE_MODES[(ZONE_MODES.indexOf(mode) + 1) % ZONE_MODES.length];
}

/** The zone of times that belong to no job: UTC when chosen, else the browser's. */
export function timeZone() {
  return zoneMode() === "UTC" ? "UTC" : undefined;
}

/** The zone to show a job's times in. */
export function jobZone(jobId) {
  const mode = zoneMode();
  if (mode === "job") return jobZones.get(jobId) || undefined;
  return mode === "UTC" ? "UTC" : undefined;
}

/** Learn each job's own zone from catalog entries (or schedules: {job_id, timezone}). */
export function rememberZones(entries) {
  for (const entry of entries || []) {
    const id = entry.id || entry.job_id;
    if (id && entry.timezone) jobZones.set(id, entry.timezone);
  }
}

export function formatTime(iso, zone = timeZone()) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleString(undefined, {
    year: "numeric",
    month: "short",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    timeZoneName: "short",
    timeZone: zone,
  });
}

/** "Dec 06" and "19:36" apart, for narrow places (the zone is the page's; a full form
 * beside it says it). */
export function formatShort(iso, zone = timeZone()) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return [String(iso), ""];
  return [
    d.toLocaleDateString(undefined, { month: "short", day: "2-digit", timeZone: zone }),
    d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", timeZone: zone }),
  ];
}

/** "19:36" (with the zone's short name when asked), for compact places. */
export function formatClock(iso, zone = timeZone()) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", timeZone: zone });
}

/** "3 min ago", "in 6 h", "just now". */
export function relativeTime(iso, now = Date.now()) {
  if (!iso) return "—";
  const t = new Date(iso).getTime();
  if (Number.isNaN(t)) return String(iso);
  const diff = (t - now) / 1000;
  const abs = Math.abs(diff);
  if (abs < 45) return diff < 0 ? "just now" : "in a few seconds";
  let text;
  if (abs < 3600) text = `${Math.round(abs / 60)} min`;
  else if (abs < 86400 * 2) text = `${Math.round(abs / 3600)} h`;
  else text = `${Math.round(abs / 86400)} days`;
  return diff < 0 ? `${text} ago` : `in ${text}`;
}

/** A <time> showing the relative form, with the absolute time (and zone) on hover. */
export function timeAgo(iso, zone) {
  if (!iso) return h("span", { text: "—" });
  const absolute = formatTime(iso, zone);
  return h("time", { datetime: iso, title: absolute, text: relativeTime(iso) });
}

export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 1) return `${Math.max(0, Math.round(seconds * 1000))} ms`;
  if (seconds < 10) return `${seconds.toFixed(1)}s`;
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  const hrs = Math.floor(m / 60);
  return `${hrs}h ${String(m % 60).padStart(2, "0")}m`;
}

export function formatBytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

/** Seconds since an ISO time, for ticking elapsed counters. */
export function secondsSince(iso) {
  if (!iso) return null;
  return (Date.now() - new Date(iso).getTime()) / 1000;
}

export function statusBadge(status) {
  return h("span", { class: `status status-${status}`, text: status });
}

/** A definition list from [label, value] pairs; values may be nodes. */
export function facts(pairs) {
  const dl = h("dl", { class: "facts" });
  for (const [label, value] of pairs) {
    dl.append(h("dt", { text: label }), h("dd", {}, value ?? "—"));
  }
  return dl;
}

export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

/** A notice line (info or error) with role=status/alert so screen readers hear it. */
export function notice(text, kind = "info") {
  return h("p", { class: `notice notice-${kind}`, role: kind === "error" ? "alert" : "status", text });
}
