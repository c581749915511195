// The live log view: ANSI SGR colours as classed spans (text always as text nodes),
// batched appends (one DOM write per animation frame however fast output arrives),
// a cap on the lines kept in the DOM, and auto-scroll that pauses while the user
// reads further up and resumes when they scroll back to the bottom.

import { api } from "./api.js";
import { h } from "./dom.js";

const MAX_LINES = 20000;
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
    this.root = h("div", { class: "log-wrap" }, this.trimmed, this.element, this.resume);
    this.style = new Style();
    this.pending = "";
    this.carry = ""; // an escape sequence cut in half by a chunk boundary
    this.frame = null;
    this.chunks = []; // [{node, lines}] oldest first
    this.lines = 0;
    this.follow = true;
    this.element.addEventListener("scroll", () => {
      const atEnd = this.element.scrollTop + this.element.clientHeight >= this.element.scrollHeight - 8;
      this.follow = atEnd;
      this.resume.hidden = atEnd;
    });
  }

  /** Queue text; it reaches the DOM on the next animation frame. */
  append(text) {
    if (!text) return;
    this.pending += text;
    if (this.frame === null) this.frame = requestAnimationFrame(() => this.flush());
  }

  flush() {
    this.frame = null;
    let text = this.carry + this.pending;
    this.pending = "";
    this.carry = "";
    const cut = text.lastIndexOf("\x1b");
    if (cut !== -1 && !/^\x1b\[[0-9;?]*[A-Za-z]/.test(text.slice(cut)) && text.length - cut < 32) {
      this.carry = text.slice(cut);
      text = text.slice(0, cut);
    }
    if (!text) return;
    const lines = (text.match(/\n/g) || []).length;
    if (lines > MAX_LINES) {
      // This batch alone fills the view: render only its tail (styles of the skipped
      // head still apply) and drop everything shown before it.
      let cut = -1;
      for (let skip = lines - MAX_LINES; skip > 0; skip -= 1) cut = text.indexOf("\n", cut + 1);
      this.skipStyles(text.slice(0, cut + 1));
      text = text.slice(cut + 1);
      for (const old of this.chunks) old.node.remove();
      this.chunks = [];
      this.lines = 0;
      this.trimmed.hidden = false;
    }
    const chunk = document.createElement("span");
    let last = 0;
    CSI.lastIndex = 0;
    for (let m = CSI.exec(text); m !== null; m = CSI.exec(text)) {
      this.emit(chunk, text.slice(last, m.index));
      if (m[2] === "m") this.style.apply(m[1]);
      last = CSI.lastIndex;
    }
    this.emit(chunk, text.slice(last));
    const kept = (text.match(/\n/g) || []).length;
    this.chunks.push({ node: chunk, lines: kept });
    this.lines += kept;
    this.element.appendChild(chunk);
    this.trim();
    if (this.follow) this.scrollToEnd();
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

  emit(parent, text) {
    // Other control characters (bell, lone ESC) are dropped; tabs and newlines stay.
    const clean = text.replace(/[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/g, "").replace(/\r\n/g, "\n");
    if (!clean) return;
    parent.appendChild(this.style.plain ? document.createTextNode(clean) : this.style.span(clean));
  }

  trim() {
    while (this.lines > MAX_LINES && this.chunks.length > 1) {
      const oldest = this.chunks.shift();
      oldest.node.remove();
      this.lines -= oldest.lines;
      this.trimmed.hidden = false;
    }
  }

  scrollToEnd() {
    this.element.scrollTop = this.element.scrollHeight;
    this.resume.hidden = true;
  }

  /** The text shown so far plus what is queued (for tests and copy). */
  get text() {
    return this.element.textContent + this.pending;
  }
}
