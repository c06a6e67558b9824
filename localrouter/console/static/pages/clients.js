// Clients and limits: each client's allowlist, and its rate windows and budgets as bars
// against their limits (/api/clients and /api/limits, the admin's; a client sees its own
// limits from /api/v1/key).

import { api } from "../lib/api.js";
import { chips, facts, h, int, notice, replace, usd } from "../lib/dom.js";

const DOLLARS = new Set(["usd_per_day", "usd_per_month"]);

function named(kind) {
  const text = kind.replace(/_/g, " ").replace(/^usd\b/, "USD");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function amount(kind, value) {
  return DOLLARS.has(kind) ? usd(value) : int(Math.round(value * 100) / 100);
}

/** One limit as a bar (a <meter>) against its value, with the numbers in words. */
export function limitBar(row, warnAt) {
  const used = row.used + (row.reserved || 0);
  const id = `limit-${row.client || "none"}-${row.limit}-${row.models}`.replace(/[^A-Za-z0-9_-]/g, "_");
  const scope = row.models && row.models !== "*" ? ` on ${row.models}` : "";
  const words = `${amount(row.limit, row.used)} of ${amount(row.limit, row.value)} used` +
    (row.reserved ? `, ${amount(row.limit, row.reserved)} held by calls in flight` : "") +
    (row.resets ? `; resets ${row.resets}` : "");
  return h("div", { class: "limit", "data-limit": row.limit },
    h("div", { class: "head" },
      h("span", { id: `${id}-label` }, h("strong", null, named(row.limit)), scope),
      h("span", { class: "muted" }, words)),
    h("meter", {
      class: "limit-bar",
      min: 0,
      max: row.value,
      value: Math.min(used, row.value),
      low: row.value * warnAt,
      high: row.value * 0.999,
      optimum: 0,
      "aria-labelledby": `${id}-label`,
      "aria-valuetext": words,
    }),
    h("div", { class: "muted where" }, `${row.configured}; counted by the ${row.counted}`));
}

function clientCard(client, rows, warnAt) {
  const allow = client.allow === null ? "everything" : chips(client.allow);
  const modelLimits = Object.entries(client.model_limits || {});
  return h("section", { class: "card", "data-client": client.name, "aria-labelledby": `client-${client.name}` },
    h("h2", { id: `client-${client.name}` }, client.name),
    facts([
      ["May use", allow],
      ["Limits", client.own_limits ? "its own" : Object.keys(client.limits).length ? "the defaults (limits:)" : "none"],
      modelLimits.length ? ["Per model", modelLimits.map(([glob, values]) =>
        h("div", null, h("code", null, glob), ": ", Object.entries(values).map(([k, v]) => `${named(k)} ${v}`).join(", ")))] : null,
    ]),
    rows.length ? rows.map((row) => limitBar(row, warnAt)) : h("p", { class: "muted" }, "No limits: nothing is counted."));
}

export async function render(ctx) {
  const { view, signal } = ctx;
  ctx.title("Clients and limits");
  if (!ctx.admin) {
    const key = (await api("/api/v1/key", signal)).data;
    const rows = key.limits || [];
    replace(view,
      h("h1", null, "Your limits"),
      notice("", h("p", null, `Signed in as client ${ctx.client}: your own limits. Every client's allowlist and limits are the admin's view.`)),
      h("p", null, "You may use the models the Models page lists: it shows only what your allowlist admits."),
      rows.length ? rows.map((row) => limitBar(row, 0.8)) : h("p", { class: "muted" }, "No limits: nothing is counted."));
    return;
  }
  const [clients, limits] = await Promise.all([
    api("/api/clients", signal),
    api("/api/limits", signal),
  ]);
  const warnAt = limits.warn_at || 0.8;
  const byClient = new Map();
  for (const row of limits.data) {
    const key = row.client || "";
    if (!byClient.has(key)) byClient.set(key, []);
    byClient.get(key).push(row);
  }
  const defaults = Object.entries(clients.default_limits || {});
  const others = byClient.get("") || [];
  replace(view,
    h("h1", null, "Clients and limits"),
    h("p", { class: "muted" }, `Limits count in this ${limits.counted === "fleet" ? "fleet" : "daemon"}; days and months in ${limits.timezone} time; a warning is logged at ${Math.round(warnAt * 100)} %.`),
    clients.data.length
      ? h("div", { class: "cards clients" }, clients.data.map((client) =>
        clientCard(client, byClient.get(client.name) || [], warnAt)))
      : notice("", h("p", null, "No clients are configured: anyone with the admin token (or anyone, without one) may use every model. Add clients: to give each tool its own token, allowlist and limits.")),
    defaults.length
      ? h("section", null, h("h2", null, "Defaults"),
        h("p", null, `For clients without their own limits: ${defaults.map(([k, v]) => `${named(k)} ${v}`).join(", ")}.`))
      : null,
    others.length
      ? h("section", { class: "card", "data-client": "" }, h("h2", null, "Requests without a client"),
        others.map((row) => limitBar(row, warnAt)))
      : null);
}
