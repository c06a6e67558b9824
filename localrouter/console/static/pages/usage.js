// Usage: spend and tokens per day as charts, by client, model or instance, over a date
// range; each group's totals and cache-read share; calls without a known price called out;
// the same rows as CSV. All of it from /api/usage (the admin's).

import { api, apiBlob, withQuery } from "../lib/api.js";
import { COLOURS, stackedBars } from "../lib/chart.js";
import {
  compact, facts, field, h, int, ledgerOff, notice, options, pct, replace, table, td, usd,
} from "../lib/dom.js";

const DAY_MS = 86400000;
const RANGES = [
  ["0d", "Today"],
  ["6d", "7 days"],
  ["29d", "30 days"],
  ["89d", "90 days"],
  ["all", "All kept"],
];
const GROUPS = [
  ["model", "Model"],
  ["client", "Client"],
  ["instance", "Instance"],
];
const NOBODY = { client: "(no client: the admin or no token)", model: "(no model)", instance: "(no instance)" };

function dayOf(unix) {
  return new Date(unix * 1000).toISOString().slice(0, 10);
}

/** Every day from the first to the last (ISO dates, UTC), at most 400. */
function daysBetween(first, last) {
  const days = [];
  for (let at = Date.parse(`${first}T00:00:00Z`); days.length < 400; at += DAY_MS) {
    const day = new Date(at).toISOString().slice(0, 10);
    if (day > last) break;
    days.push(day);
  }
  return days;
}

export function readState(query) {
  const by = query.get("by");
  return {
    since: query.get("since") ?? "29d",
    until: query.get("until") ?? "",
    by: GROUPS.some(([value]) => value === by) ? by : "model",
  };
}

function address(state) {
  const params = new URLSearchParams();
  params.set("since", state.since);
  if (state.until) params.set("until", state.until);
  params.set("by", state.by);
  return `/ui/usage?${params}`;
}

function seriesOf(rows, by, days) {
  const groups = new Map();
  for (const row of rows) {
    const name = row[by] ?? NOBODY[by];
    if (!groups.has(name)) groups.set(name, { name, cost: 0, tokens: 0, rows: [] });
    const group = groups.get(name);
    group.cost += row.cost_usd || 0;
    group.tokens += (row.input_tokens || 0) + (row.output_tokens || 0);
    group.rows.push(row);
  }
  let ordered = [...groups.values()].sort((a, b) => b.cost - a.cost || b.tokens - a.tokens ||
    (a.name < b.name ? -1 : 1));
  if (ordered.length > COLOURS) {
    const rest = ordered.slice(COLOURS - 1);
    ordered = ordered.slice(0, COLOURS - 1);
    ordered.push({ name: `${rest.length} others`, rows: rest.flatMap((group) => group.rows) });
  }
  const index = new Map(days.map((day, number) => [day, number]));
  const spend = [];
  const tokens = [];
  for (const group of ordered) {
    const money = new Array(days.length).fill(0);
    const counted = new Array(days.length).fill(0);
    for (const row of group.rows) {
      const at = index.get(row.day);
      if (at === undefined) continue;
      money[at] += row.cost_usd || 0;
      counted[at] += (row.input_tokens || 0) + (row.output_tokens || 0);
    }
    spend.push({ name: group.name, values: money });
    tokens.push({ name: group.name, values: counted });
  }
  return { spend, tokens };
}

function card(label, value, extra, id) {
  return h("div", { class: "card", id },
    h("div", { class: "label" }, label), h("div", { class: "big" }, value),
    extra ? h("div", { class: "muted" }, extra) : null);
}

function groupTable(rows, by) {
  const sorted = [...rows].sort((a, b) => (b.cost_usd || 0) - (a.cost_usd || 0) ||
    b.requests - a.requests);
  return table(
    [GROUPS.find(([value]) => value === by)[1], ["Requests", "num"], ["Failed", "num"],
      ["Tokens in", "num"], ["Tokens out", "num"], ["Cache-read share", "num"], ["Spend", "num"],
      ["Unpriced calls", "num"]],
    sorted.map((row) => h("tr", null,
      td(row[by] ?? NOBODY[by]),
      td(int(row.requests), "num"),
      td(int(row.failed), "num"),
      td(int(row.input_tokens), "num"),
      td(int(row.output_tokens), "num"),
      td(pct(row.cache_read_share), "num"),
      td(row.cost_usd === null && row.unpriced_requests ? "unpriced" : usd(row.cost_usd || 0), "num"),
      td(row.unpriced_requests ? h("strong", null, int(row.unpriced_requests)) : "0", "num"))),
    { "aria-label": `Usage by ${by}` });
}

async function clientView(ctx) {
  const key = (await api("/api/v1/key", ctx.signal)).data;
  replace(ctx.view,
    h("h1", null, "Usage"),
    notice("", h("p", null, `Signed in as client ${ctx.client}: your own spend. Charts by day, client, model and instance are the admin's view.`)),
    h("div", { class: "cards" },
      card("Last 24 hours", usd(key.usage_daily), null, "spend-day"),
      card("Last 7 days", usd(key.usage_weekly), null, "spend-week"),
      card("Last 30 days", usd(key.usage_monthly), null, "spend-month"),
      card("Everything kept", usd(key.usage), null, "spend-all")),
    key.unpriced_requests
      ? notice("warn", h("p", null, `${int(key.unpriced_requests)} of your calls had no known price: they are not in these sums.`))
      : null,
    key.limit !== null
      ? facts([["Budget", `${usd(key.limit_remaining)} left of ${usd(key.limit)} (${key.limit_reset})`]])
      : null);
}

export async function render(ctx) {
  ctx.title("Usage");
  if (!ctx.admin) {
    await clientView(ctx);
    return;
  }
  const { view, signal } = ctx;
  const state = readState(ctx.query);
  const range = {
    since: state.since === "all" ? "" : state.since,
    until: state.until || "0d", // through today, by the daemon's clock
  };
  const [daily, groups, totals] = await Promise.all([
    api(withQuery("/api/usage", { ...range, group_by: `day,${state.by}` }), signal),
    api(withQuery("/api/usage", { ...range, group_by: state.by }), signal),
    api(withQuery("/api/usage", range), signal),
  ]);
  const total = totals.data[0] || {};
  const seen = daily.data.map((row) => row.day).sort();
  const first = daily.since !== null ? dayOf(daily.since) : seen[0];
  const last = [daily.until !== null ? dayOf(daily.until) : null, seen[seen.length - 1],
    first].filter(Boolean).sort().pop();
  const days = first ? daysBetween(first, last) : [];
  const { spend, tokens } = seriesOf(daily.data, state.by, days);

  const presets = h("div", { class: "row", role: "group", "aria-label": "Date range" },
    RANGES.map(([value, label]) => {
      const pressed = !state.until && state.since === value;
      const button = h("button", { type: "button", "aria-pressed": pressed ? "true" : "false" }, label);
      button.addEventListener("click", () => ctx.navigate(address({ ...state, since: value, until: "" })));
      return button;
    }));
  const from = h("input", { type: "date", id: "usage-from", value: /^\d{4}-\d\d-\d\d$/.test(state.since) ? state.since : "" });
  const to = h("input", { type: "date", id: "usage-to", value: /^\d{4}-\d\d-\d\d$/.test(state.until) ? state.until : "" });
  const by = h("select", { id: "usage-by" }, options(GROUPS, state.by));
  by.addEventListener("change", () => ctx.navigate(address({ ...state, by: by.value })));
  const custom = h("form", { class: "row", "aria-label": "From and to" },
    field("From", from), field("To", to), h("button", { type: "submit" }, "Show"));
  custom.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!from.value) return;
    ctx.navigate(address({ ...state, since: from.value, until: to.value }));
  });
  const exporting = h("button", { type: "button", id: "usage-csv" }, "Export CSV");
  exporting.addEventListener("click", async () => {
    const blob = await apiBlob(withQuery("/api/usage", { ...range, group_by: `day,${state.by}`, format: "csv" }));
    const link = h("a", { href: URL.createObjectURL(blob), download: `localrouter-usage-${first || "all"}-${last || "now"}.csv` });
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  });

  const unpriced = total.unpriced_requests || 0;
  const spanText = days.length ? `${days[0]} to ${days[days.length - 1]} (UTC)` : "no requests kept";
  replace(view,
    h("h1", null, "Usage"),
    h("div", { class: "filters" }, presets, custom, field("Group by", by), exporting),
    h("p", { class: "muted", id: "usage-span" }, spanText),
    totals.recording === false ? ledgerOff() : null,
    unpriced
      ? notice("warn", h("p", { id: "unpriced" }, h("strong", null, `${int(unpriced)} ${unpriced === 1 ? "call" : "calls"} had no known price`),
        ": the spend leaves them out. Price their models in the config (providers[].pricing or model_pricing)."))
      : null,
    h("div", { class: "cards" },
      card("Requests", int(total.requests || 0), total.failed ? `${int(total.failed)} failed` : null, "usage-requests"),
      card("Spend", usd(total.cost_usd || 0), unpriced ? `${int(unpriced)} unpriced` : null, "usage-spend"),
      card("Tokens", compact((total.input_tokens || 0) + (total.output_tokens || 0)),
        `${compact(total.input_tokens || 0)} in, ${compact(total.output_tokens || 0)} out`, "usage-tokens"),
      card("Cache-read share", pct(total.cache_read_share), "of input tokens read from a prompt cache", "usage-cache")),
    days.length
      ? [
        stackedBars({ id: "chart-spend", title: "Spend per day (USD)", days, series: spend, format: usd }),
        stackedBars({ id: "chart-tokens", title: "Tokens per day (in and out)", days, series: tokens, format: compact }),
      ]
      : h("p", { class: "muted" }, "No requests in this range."),
    h("h2", null, `By ${state.by}`),
    groups.data.length ? groupTable(groups.data, state.by) : h("p", { class: "muted" }, "Nothing yet."));
}
