// A stacked bar chart per day, drawn as SVG elements (no canvas, no library): each bar part
// is a <rect> that carries its value (data-value) and a tooltip (<title>), the colours come
// from CSS classes, and the numbers are also given as a table for anyone who cannot see it.

import { h, s } from "./dom.js";

const WIDTH = 760;
const HEIGHT = 260;
const LEFT = 70;
const RIGHT = 12;
const TOP = 12;
const BOTTOM = 34;
export const COLOURS = 10;

function niceMax(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (value <= step * power) return step * power;
  }
  return 10 * power;
}

/**
 * days: ["2027-01-15", ...]; series: [{name, values: [one per day]}]; format: a number as
 * text. Returns a <figure> with the chart, its legend and the numbers.
 */
export function stackedBars({ id, title, days, series, format }) {
  const totals = days.map((_, day) => series.reduce((sum, one) => sum + (one.values[day] || 0), 0));
  const total = totals.reduce((a, b) => a + b, 0);
  const top = niceMax(Math.max(0, ...totals));
  const plotWidth = WIDTH - LEFT - RIGHT;
  const plotHeight = HEIGHT - TOP - BOTTOM;
  const slot = plotWidth / Math.max(days.length, 1);
  const barWidth = Math.max(1, Math.min(slot * 0.72, 48));
  const y = (value) => TOP + plotHeight - (value / top) * plotHeight;

  const grid = [];
  for (let tick = 0; tick <= 4; tick += 1) {
    const value = (top * tick) / 4;
    grid.push(
      s("line", { class: tick ? "grid" : "axis", x1: LEFT, x2: WIDTH - RIGHT, y1: y(value), y2: y(value) }),
      s("text", { x: LEFT - 6, y: y(value) + 4, "text-anchor": "end" }, format(value)));
  }
  const every = Math.max(1, Math.ceil(days.length / 12));
  const bars = [];
  days.forEach((day, index) => {
    const x = LEFT + slot * index + (slot - barWidth) / 2;
    let base = 0;
    series.forEach((one, number) => {
      const value = one.values[index] || 0;
      if (value <= 0) return;
      const rect = s("rect", {
        class: `bar s${number % COLOURS}`,
        x: x.toFixed(2),
        y: y(base + value).toFixed(2),
        width: barWidth.toFixed(2),
        height: Math.max(0.5, y(base) - y(base + value)).toFixed(2),
        "data-value": String(value),
        "data-day": day,
        "data-series": one.name,
      }, s("title", null, `${day} · ${one.name}: ${format(value)}`));
      bars.push(rect);
      base += value;
    });
    if (index % every === 0) {
      bars.push(s("text", { x: (x + barWidth / 2).toFixed(2), y: HEIGHT - BOTTOM + 16, "text-anchor": "middle" },
        day.slice(5)));
    }
  });
  const label = `${title}: ${format(total)} in total over ${days.length} ${days.length === 1 ? "day" : "days"}`;
  const svg = s("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    role: "img",
    "aria-label": label,
    preserveAspectRatio: "xMidYMid meet",
  }, grid, bars);
  const legend = h("ul", { class: "legend", "aria-label": `${title}: legend` },
    series.map((one, number) => h("li", null,
      h("span", { class: `swatch s${number % COLOURS}`, "aria-hidden": "true" }), one.name)));
  const numbers = h("details", null, h("summary", null, "The numbers, day by day"),
    h("div", { class: "table-wrap" }, h("table", { "aria-label": `${title} by day` },
      h("thead", null, h("tr", null, h("th", { scope: "col" }, "Day"),
        series.map((one) => h("th", { scope: "col", class: "num" }, one.name)),
        h("th", { scope: "col", class: "num" }, "Total"))),
      h("tbody", null, days.map((day, index) => h("tr", null, h("th", { scope: "row" }, day),
        series.map((one) => h("td", { class: "num" }, format(one.values[index] || 0))),
        h("td", { class: "num" }, format(totals[index]))))))));
  return h("figure", { class: "chart", id, "data-total": String(total) },
    h("figcaption", null, title, h("span", { class: "muted" }, ` · ${format(total)} in total`)),
    svg, legend, numbers);
}
