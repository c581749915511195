// The live log view: ANSI SGR colours as classed spans (text always as text nodes),
// batched appends (one DOM write per animation frame however fast output arrives),
// a cap of exactly MAX_LINES whole lines kept in the DOM, and auto-scroll that pauses
// while the user reads further up and resumes when they scroll back to the bottom.
// A toolbar searches what is shown (match count, next / previous, highlighted with the
// CSS Custom Highlight API, so the log's DOM is not touched), toggles wrapping, jumps to
// the top or the end, and browses the full log page by page from the server.
// A long log can be opened at its tail (startsMidLine): the cut first line is dropped.
// Each line is its own element numbered in data-n (shown by CSS, so copying the log
// copies no numbers); text the job wrote to stderr (the API's `stderr` ranges) is
// wrapped in span.stderr and its line marked, so it stands apart from stdout.

import { api } from "./api.js";
import { clear, h } from "./dom.js";

export const MAX_LINES = 20000;
const PAGE_BYTES = 1024 * 1024; // the largest page /output serves
// CSI sequences; only "m" (SGR) changes styling, the rest (cursor moves…) are dropped.
const CSI = /\x1b\[([0-9;?]*)([A-Za-z])/g;

const XTERM_LEVELS = [0, 95, 135, 175, 215, 255];

function xterm256(n) {
  if (n >= 232) {
    const v = 8 + (n - 232) * 10;
    return `rgb(${v}, ${v}, ${v})`;
  }
  const i = n - 16;
  return `rgb(${XTERM_LEVELS[Math.floor(i / 36)]}, ${XTERM_LEVELS[Math.floor(i / 6) % 6]}, ${XTERM_LEVELS[i % 6]})`;
}

/** SGR state across chunks: classes plus optional exact colours (256 / true colour). */
class Style {
  constructor() {
    this.reset();
  }

  reset() {
    this.fg = null; // class suffix 0-15 or {rgb}
    this.bg = null;
    this.bold = false;
    this.dim = false;
    this.italic = false;
    this.underline = false;
  }

  get plain() {
    return !this.fg && this.fg !== 0 && !this.bg && this.bg !== 0 && !this.bold && !this.dim && !this.italic && !this.underline;
  }

  apply(params) {
    const codes = params === "" ? [0] : params.split(";").map((p) => Number(p || 0));
    for (let i = 0; i < codes.length; i += 1) {
      const c = codes[i];
      if (c === 0) this.reset();
      else if (c === 1) this.bold = true;
      else if (c === 2) this.dim = true;
      else if (c === 3) this.italic = true;
      else if (c === 4) this.underline = true;
      else if (c === 22) this.bold = this.dim = false;
      else if (c === 23) this.italic = false;
      else if (c === 24) this.underline = false;
      else if (c >= 30 && c <= 37) this.fg = c - 30;
      else if (c >= 90 && c <= 97) this.fg = c - 90 + 8;
      else if (c === 39) this.fg = null;
      else if (c >= 40 && c <= 47) this.bg = c - 40;
      else if (c >= 100 && c <= 107) this.bg = c - 100 + 8;
      else if (c === 49) this.bg = null;
      else if (c === 38 || c === 48) {
        let colour = null;
        if (codes[i + 1] === 5 && codes[i + 2] !== undefined) {
          const n = codes[i + 2];
          colour = n < 16 ? n : { rgb: xterm256(n) };
          i += 2;
        } else if (codes[i + 1] === 2 && codes[i + 4] !== undefined) {
          colour = { rgb: `rgb(${codes[i + 2]}, ${codes[i + 3]}, ${codes[i + 4]})` };
          i += 4;
        }
        if (c === 38) this.fg = colour;
        else this.bg = colour;
      }
    }
  }

  span(text) {
    const span = document.createElement("span");
    const classes = [];
    if (typeof this.fg === "number") classes.push(`ansi-fg-${this.fg}`);
    else if (this.fg) span.style.color = this.fg.rgb;
    if (typeof this.bg === "number") classes.push(`ansi-bg-${this.bg}`);
    else if (this.bg) span.style.backgroundColor = this.bg.rgb;
    if (this.bold) classes.push("ansi-bold");
    if (this.dim) classes.push("ansi-dim");
    if (this.italic) classes.push("ansi-italic");
    if (this.underline) classes.push("ansi-underline");
    span.className = classes.join(" ");
    span.textContent = text;
    return span;
  }
}

/** Ranges [a, b) clipped to [from, to) and shifted to start at `from`. */
function sliceRanges(ranges, from, to) {
  const out = [];
  for (const [a, b] of ranges) {
    const start = Math.max(a, from);
    const end = Math.min(b, to);
    if (end > start) out.push([start - from, end - from]);
  }
  return out;
}

/** Text with its stderr ranges wrapped in span.stderr (for the full-log pages). */
function markStderr(text, ranges) {
  const parts = [];
  let at = 0;
  for (const [a, b] of ranges) {
    if (a > at) parts.push(text.slice(at, a));
    parts.push(h("span", { class: "stderr", text: text.slice(a, b) }));
    at = b;
  }
  parts.push(text.slice(at));
  return parts;
}

export class LogView {
  /**
   * `outputUrl` is the execution's /api/v1/jobs/output/{id}: when the DOM copy is
   * trimmed, "download full log" pages through it and saves the text as `fileName`.
   */
  constructor(outputUrl, fileName) {
    this.element = h("pre", { class: "log", tabindex: "0", role: "log", "aria-label": "Output", "aria-live": "off" });
    const link = h("a", { href: `${outputUrl}?offset=0`, download: fileName, text: "download full log" });
    link.addEventListener("click", (event) => {
      event.preventDefault();
      this.download(outputUrl, fileName, link);
    });
    this.trimmed = h("p", { class: "notice notice-info", hidden: true }, "Earlier output trimmed — ", link);
    this.resume = h("button", { type: "button", class: "resume-scroll", hidden: true, text: "Auto-scroll paused — jump to the end" });
    this.resume.addEventListener("click", () => {
      this.follow = true;
      this.scrollToEnd();
    });
    this.outputUrl = outputUrl;
    this.toolbar = this.makeToolbar();
    this.pager = h("div", { class: "log-pager", hidden: true });
    this.root = h("div", { class: "log-wrap" }, this.toolbar, this.trimmed, this.element, this.resume, this.pager);
    this.skipFirstLine = false;
    this.matches = [];
    this.current = -1;
    this.style = new Style();
    this.pending = []; // [{text, stderr: [[a, b]…]}] not drawn yet
    this.carry = ""; // an escape sequence cut in half by a chunk boundary
    this.carryErr = [];
    this.frame = null;
    this.lines = 0; // whole lines shown (the open last line is not counted)
    this.open = null; // the last line's element while it has no newline yet
    this.number = 0; // the number of the last line started
    this.next = 0; // in flush: the first stderr range not yet passed
    this.follow = true;
    this.onDraw = null; // called after new output was drawn
    this.element.addEventListener("scroll", () => {
      const atEnd = this.element.scrollTop + this.element.clientHeight >= this.element.scrollHeight - 8;
      this.follow = atEnd;
      this.resume.hidden = atEnd;
    });
  }

  /** The text starts inside a line (a tail read from an offset): drop up to its first newline. */
  startsMidLine() {
    this.skipFirstLine = true;
    this.trimmed.hidden = false;
    // Where this tail starts in the whole log is not known: its numbers count from the
    // first line read, marked "+N" so they are not taken for the log's own.
    this.element.classList.add("relative-numbers");
    this.element.title = "Line numbers (+N) count from where this view starts: the end of a long log";
  }

  makeToolbar() {
    this.search = h("input", { type: "search", class: "log-search", placeholder: "Search the output", "aria-label": "Search the output", autocomplete: "off" });
    this.count = h("span", { class: "log-count", role: "status", "aria-live": "polite" });
    const prev = h("button", { type: "button", class: "ghost", "aria-label": "Previous match", text: "↑", onclick: () => this.step(-1) });
    const next = h("button", { type: "button", class: "ghost", "aria-label": "Next match", text: "↓", onclick: () => this.step(1) });
    this.wrapButton = h("button", { type: "button", class: "ghost", "aria-pressed": "true", text: "Wrap lines", onclick: () => this.toggleWrap() });
    const top = h("button", { type: "button", class: "ghost", text: "Top", onclick: () => this.scrollToTop() });
    const end = h("button", { type: "button", class: "ghost", text: "End", onclick: () => { this.follow = true; this.scrollToEnd(); } });
    const browse = h("button", { type: "button", class: "ghost", text: "Browse full log", onclick: () => this.browse(0) });
    let timer = null;
    this.search.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => this.find(), 200);
    });
    this.search.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        this.step(event.shiftKey ? -1 : 1);
      }
    });
    return h("div", { class: "log-toolbar", role: "toolbar", "aria-label": "Output tools" }, this.search, prev, next, this.count, this.wrapButton, top, end, browse);
  }

  toggleWrap() {
    const wrap = this.element.classList.toggle("nowrap") === false;
    this.wrapButton.setAttribute("aria-pressed", String(wrap));
  }

  scrollToTop() {
    this.follow = false;
    this.element.scrollTop = 0;
  }

  /** Find every match of the search text in what is shown; highlight them. */
  find() {
    const needle = this.search.value.toLowerCase();
    this.matches = [];
    this.current = -1;
    if (needle) {
      const walker = document.createTreeWalker(this.element, NodeFilter.SHOW_TEXT);
      for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        const text = node.data.toLowerCase();
        for (let i = text.indexOf(needle); i !== -1; i = text.indexOf(needle, i + needle.length)) {
          const range = document.createRange();
          range.setStart(node, i);
          range.setEnd(node, i + needle.length);
          this.matches.push(range);
        }
      }
    }
    if (globalThis.CSS && CSS.highlights) {
      CSS.highlights.set("log-match", new Highlight(...this.matches));
      CSS.highlights.delete("log-current");
    }
    this.count.textContent = needle ? `${this.matches.length} match${this.matches.length === 1 ? "" : "es"}` : "";
    if (this.matches.length) this.step(1);
  }

  step(direction) {
    if (!this.matches.length) return;
    this.current = (this.current + direction + this.matches.length) % this.matches.length;
    const range = this.matches[this.current];
    this.count.textContent = `${this.current + 1} of ${this.matches.length}`;
    if (globalThis.CSS && CSS.highlights) CSS.highlights.set("log-current", new Highlight(range));
    this.follow = false;
    const box = range.getBoundingClientRect();
    const view = this.element.getBoundingClientRect();
    this.element.scrollTop += box.top - view.top - view.height / 2;
  }

  /** Show one page (1 MiB) of the full log from the server, with earlier / later. */
  async browse(offset) {
    clear(this.pager).append(h("p", { class: "loading", text: "Loading…" }));
    this.pager.hidden = false;
    let page;
    try {
      page = await api(`${this.outputUrl}?offset=${offset}&limit=${PAGE_BYTES}`);
    } catch (err) {
      clear(this.pager).append(h("p", { class: "notice notice-error", text: err.message }));
      return;
    }
    const end = page.next_offset;
    const earlier = h("button", { type: "button", text: "Earlier page", disabled: offset === 0, onclick: () => this.browse(Math.max(0, offset - PAGE_BYTES)) });
    const later = h("button", { type: "button", text: "Later page", disabled: page.done || end === offset, onclick: () => this.browse(end) });
    const close = h("button", { type: "button", class: "ghost", text: "Close", onclick: () => { this.pager.hidden = true; clear(this.pager); } });
    clear(this.pager).append(
      h("div", { class: "actions" }, h("strong", { text: `Full log, bytes ${offset.toLocaleString()}–${end.toLocaleString()}` }), earlier, later, close),
      h("pre", { class: "log log-page", tabindex: "0", "aria-label": "Full log page" }, markStderr(page.output, page.stderr || [])),
    );
  }

  /** Queue text (with its stderr ranges); it reaches the DOM on the next animation frame. */
  append(text, stderr = []) {
    if (!text) return;
    this.pending.push({ text, stderr: Array.isArray(stderr) ? stderr : [] });
    if (this.frame === null) this.frame = requestAnimationFrame(() => this.flush());
  }

  flush() {
    this.frame = null;
    let text = this.carry;
    let ranges = this.carryErr;
    for (const part of this.pending) {
      for (const [a, b] of part.stderr) ranges.push([a + text.length, b + text.length]);
      text += part.text;
    }
    this.pending = [];
    this.carry = "";
    this.carryErr = [];
    const cut = text.lastIndexOf("\x1b");
    if (cut !== -1 && !/^\x1b\[[0-9;?]*[A-Za-z]/.test(text.slice(cut)) && text.length - cut < 32) {
      this.carry = text.slice(cut);
      this.carryErr = sliceRanges(ranges, cut, text.length);
      ranges = sliceRanges(ranges, 0, cut);
      text = text.slice(0, cut);
    }
    if (this.skipFirstLine) {
      const newline = text.indexOf("\n");
      if (newline === -1) {
        this.skipStyles(text);
        return; // still inside the cut line
      }
      this.skipStyles(text.slice(0, newline + 1));
      ranges = sliceRanges(ranges, newline + 1, text.length);
      text = text.slice(newline + 1);
      this.skipFirstLine = false;
    }
    if (!text) return;
    const lines = (text.match(/\n/g) || []).length;
    if (lines > MAX_LINES) {
      // This batch alone fills the view: render only its tail (styles of the skipped
      // head still apply, and its lines still count) and drop everything shown before.
      let cut = -1;
      for (let skip = lines - MAX_LINES; skip > 0; skip -= 1) cut = text.indexOf("\n", cut + 1);
      this.skipStyles(text.slice(0, cut + 1));
      this.number += lines - MAX_LINES - (this.open ? 1 : 0);
      ranges = sliceRanges(ranges, cut + 1, text.length);
      text = text.slice(cut + 1);
      clear(this.element);
      this.open = null;
      this.lines = 0;
      this.trimmed.hidden = false;
    }
    const batch = document.createDocumentFragment();
    this.next = 0;
    const draw = (from, to) => this.emit(batch, text, from, to, ranges);
    let last = 0;
    CSI.lastIndex = 0;
    for (let m = CSI.exec(text); m !== null; m = CSI.exec(text)) {
      draw(last, m.index);
      if (m[2] === "m") this.style.apply(m[1]);
      last = CSI.lastIndex;
    }
    draw(last, text.length);
    this.element.appendChild(batch);
    this.trim();
    if (this.follow) this.scrollToEnd();
    if (this.onDraw) this.onDraw();
  }

  /** Apply the SGR codes in text that is not shown, so what follows is styled right. */
  skipStyles(text) {
    CSI.lastIndex = 0;
    for (let m = CSI.exec(text); m !== null; m = CSI.exec(text)) if (m[2] === "m") this.style.apply(m[1]);
  }

  /** Fetch the whole output page by page and save it as a text file. */
  async download(outputUrl, fileName, link) {
    const parts = [];
    let offset = 0;
    try {
      for (;;) {
        const page = await api(`${outputUrl}?offset=${offset}&limit=${PAGE_BYTES}`);
        if (page.output) parts.push(page.output);
        if (page.done || page.next_offset === offset) break;
        offset = page.next_offset;
      }
    } catch (err) {
      link.textContent = `download full log (failed: ${err.message})`;
      return;
    }
    const url = URL.createObjectURL(new Blob(parts, { type: "text/plain;charset=utf-8" }));
    const save = h("a", { href: url, download: fileName, hidden: true });
    document.body.append(save);
    save.click();
    save.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  }

  /** Draw text[from, to) into lines: one element per line, stderr parts wrapped. */
  emit(batch, text, from, to, ranges) {
    let at = from;
    while (at < to) {
      // The next boundary: a newline (ends the line) or a change of stream. The ranges
      // are in order and `at` only grows within a flush: this.next walks them once.
      while (this.next < ranges.length && ranges[this.next][1] <= at) this.next += 1;
      const range = ranges[this.next];
      let end = to;
      let err = false;
      if (range && range[0] <= at) {
        err = true;
        end = Math.min(end, range[1]);
      } else if (range && range[0] < end) end = range[0];
      const newline = text.indexOf("\n", at);
      const stop = newline !== -1 && newline < end ? newline + 1 : end;
      this.piece(batch, text.slice(at, stop), err);
      if (stop === newline + 1 && newline !== -1) {
        this.open = null;
        this.lines += 1;
      }
      at = stop;
    }
  }

  piece(batch, raw, err) {
    // Other control characters (bell, lone ESC) are dropped; tabs and newlines stay.
    const clean = raw.replace(/[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/g, "").replace(/\r\n/g, "\n");
    if (!clean) return;
    if (!this.open) {
      this.number += 1;
      this.open = h("span", { class: "ln", "data-n": String(this.number) });
      batch.appendChild(this.open);
    }
    let node = this.style.plain ? document.createTextNode(clean) : this.style.span(clean);
    if (err) {
      node = h("span", { class: "stderr" }, node);
      this.open.classList.add("ln-err");
    }
    this.open.appendChild(node);
  }

  /** Keep at most MAX_LINES whole lines: the oldest go, in one range deletion. */
  trim() {
    const drop = this.lines - MAX_LINES;
    if (drop <= 0) return;
    const range = document.createRange();
    range.setStartBefore(this.element.firstChild);
    range.setEndAfter(this.element.children[drop - 1]);
    range.deleteContents();
    this.lines -= drop;
    this.trimmed.hidden = false;
  }

  scrollToEnd() {
    this.element.scrollTop = this.element.scrollHeight;
    this.resume.hidden = true;
  }

  /** The last `count` lines shown that hold stderr text ("" when there are none). */
  stderrTail(count) {
    const lines = this.element.querySelectorAll(".ln-err");
    return Array.from(lines).slice(-count).map((line) => line.textContent.replace(/\n$/, "")).join("\n");
  }

  /** The text shown so far plus what is queued (for tests and copy). */
  get text() {
    return this.element.textContent + this.pending.map((part) => part.text).join("");
  }
}
