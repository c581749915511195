// The CPU / memory / disk chart of WebHostMetrics/CollectMetrics: history from the
// job's samples endpoint, then each JSON sample line of the live output as it arrives.
// Only samples taken while this run ran are drawn: the job's samples file also holds
// earlier runs', which would otherwise be bridged into one misleading line.

import { api } from "./api.js";
import { chartWidth, fitWidth, loadUPlot, themeColour, timeRange } from "./charts.js";
import { h, notice } from "./dom.js";

export const METRICS_JOB = "WebHostMetrics/CollectMetrics";
const KEEP = 500;
const HEIGHT = 260;

function sampleTime(sample) {
  const t = Date.parse(sample.ts || sample.timestamp || "");
  return Number.isNaN(t) ? null : t / 1000;
}

export class MetricsChart {
  /** `from` / `to`: the run's start and end (ISO; `to` null while it runs). */
  constructor({ from = null, to = null } = {}) {
    this.from = from ? Date.parse(from) / 1000 - 1 : null;
    this.to = to ? Date.parse(to) / 1000 + 1 : null;
    this.root = h("section", { class: "card chart-card", "aria-label": "System metrics chart" }, h("h2", { text: "CPU, memory and disk" }));
    this.data = [[], [], [], []];
    this.plot = null;
    this.unfit = null;
    this.partial = "";
  }

  async start() {
    try {
      const [UPlot, body] = await Promise.all([
        loadUPlot(),
        api(`/api/v1/jobs/catalog/${METRICS_JOB}/samples?limit=${KEEP}`),
      ]);
      for (const sample of body.samples || []) this.add(sample, false);
      const holder = h("div", { class: "chart" });
      this.root.append(holder);
      const series = (label, colourVar, fallback) => ({
        label,
        stroke: themeColour(colourVar, fallback),
        width: 2,
        value: (u, v) => (v === null || v === undefined ? "—" : `${v.toFixed(1)}%`),
      });
      this.plot = new UPlot(
        {
          width: chartWidth(this.root),
          height: HEIGHT,
          scales: { x: { time: true, range: timeRange }, y: { range: [0, 100] } },
          axes: [
            { stroke: themeColour("--fg", "#222") },
            { stroke: themeColour("--fg", "#222"), values: (u, ticks) => ticks.map((t) => `${t}%`) },
          ],
          series: [
            {},
            series("CPU", "--chart-1", "#2563eb"),
            series("Memory", "--chart-2", "#16a34a"),
            series("Disk", "--chart-3", "#d97706"),
          ],
        },
        this.data,
        holder,
      );
      this.unfit = fitWidth(this.plot, this.root, HEIGHT);
    } catch (err) {
      this.root.append(notice(err.message, "error"));
    }
  }

  add(sample, redraw = true) {
    const t = sampleTime(sample);
    if (t === null || typeof sample.cpu_percent !== "number") return;
    if ((this.from !== null && t < this.from) || (this.to !== null && t > this.to)) return;
    const last = this.data[0][this.data[0].length - 1];
    if (last !== undefined && t <= last) return; // already have it (history overlaps live)
    this.data[0].push(t);
    this.data[1].push(sample.cpu_percent);
    this.data[2].push(sample.memory_percent ?? null);
    this.data[3].push(sample.disk_percent ?? null);
    if (this.data[0].length > KEEP) this.data.forEach((col) => col.shift());
    if (redraw && this.plot) this.plot.setData(this.data);
  }

  /** Feed raw output; complete lines that are JSON samples are added to the chart. */
  feed(text) {
    const lines = (this.partial + text).split("\n");
    this.partial = lines.pop();
    for (const line of lines) {
      const trimmed = line.trim();
      if (!trimmed.startsWith("{")) continue;
      try {
        this.add(JSON.parse(trimmed));
      } catch {
        // not a sample line
      }
    }
  }

  destroy() {
    if (this.unfit) this.unfit();
    if (this.plot) this.plot.destroy();
  }
}
