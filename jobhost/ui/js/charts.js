// uPlot, loaded on first use so the first view stays small (the library is ~50 KB).

import { h } from "./dom.js";

let loading = null;

/** Resolves to the uPlot constructor, loading vendor/uPlot.iife.min.js once. */
export function loadUPlot() {
  if (window.uPlot) return Promise.resolve(window.uPlot);
  if (!loading) {
    loading = new Promise((resolve, reject) => {
      document.head.append(h("link", { rel: "stylesheet", href: new URL("../vendor/uPlot.min.css", import.meta.url).href }));
      const script = h("script", { src: new URL("../vendor/uPlot.iife.min.js", import.meta.url).href });
      script.addEventListener("load", () => resolve(window.uPlot));
      script.addEventListener("error", () => {
        loading = null;
        reject(new Error("The chart library (vendor/uPlot.iife.min.js) could not be loaded."));
      });
      document.head.append(script);
    });
  }
  return loading;
}

/** A colour from the theme's CSS custom properties, so charts follow light/dark. */
export function themeColour(name, fallback) {
  const value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return value || fallback;
}

/** A chart width that fits its container (charts must not overflow at 200% zoom). */
export function chartWidth(container) {
  return Math.max(240, Math.min(1100, (container.clientWidth || 600) - 40));
}

/** An x range that stays readable with one point or a short span (uPlot would pad to years). */
export function timeRange(u, min, max) {
  const xs = u.data && u.data[0];
  if (!xs || !xs.length) return [min, max];
  const first = xs[0];
  const last = xs[xs.length - 1];
  // Pad by a tenth of the span (at least 5 s) so points close together stay apart,
  // instead of a fixed ±5 min that stacked a burst of runs into one column.
  // One point alone gets a minute around it: ±5 s made uPlot tick every half second.
  const pad = first === last ? 30 : Math.max(5, (last - first) / 10);
  return [first - pad, last + pad];
}

/** Keep a chart as wide as its container. Returns a function that stops watching. */
export function fitWidth(plot, container, height) {
  const observer = new ResizeObserver(() => plot.setSize({ width: chartWidth(container), height }));
  observer.observe(container);
  return () => observer.disconnect();
}
