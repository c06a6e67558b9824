// Overview: the daemon's health in words, every instance's state, the local servers found,
// where the config came from, the fleet, and today's requests, spend, tokens and failures.

import { ApiError, api } from "../lib/api.js";
import { age, badge, compact, facts, h, int, notice, replace, table, td, usd } from "../lib/dom.js";
import { loadModels } from "./models.js";

/** An endpoint's answer, or {error} when it refused (a 401 still ends the page). */
export async function softly(promise) {
  try {
    return await promise;
  } catch (error) {
    if (error instanceof ApiError && error.status !== 401) return { error };
    throw error;
  }
}

function healthSection(health) {
  const ok = health.status === "ok";
  const problems = health.reasons.length;
  const words = ok
    ? "Healthy: every instance answers and the config is loaded."
    : `Degraded: ${problems} ${problems === 1 ? "problem" : "problems"}.`;
  return h("section", { "aria-labelledby": "health-title" },
    h("h2", { id: "health-title" }, "Health"),
    notice(ok ? "ok" : "warn",
      h("p", { class: "status-line", id: "health-words" }, words),
      problems ? h("ul", null, health.reasons.map((reason) => h("li", null, reason))) : null),
    health.notes && health.notes.length
      ? h("details", null, h("summary", null, `Notes (${health.notes.length})`),
        h("ul", null, health.notes.map((note) => h("li", { class: "muted" }, note))))
      : null);
}

function stateOf(status) {
  if (status.last_error) return "failing";
  if (status.source) return status.source;
  return status.refreshing ? "fetching" : "no list";
}

function instancesTable(rows) {
  return table(
    ["Instance", "Type", "State", ["Models", "num"], ["Age", "num"], ["Upstream calls", "num"], "Last error"],
    rows.map((row) => h("tr", { "data-instance": row.name },
      td(h("strong", null, row.name)),
      td(row.type || "–"),
      td([badge(row.state), row.state === "failing" && row.source
        ? h("span", { class: "sub" }, `serving ${row.source}`) : null]),
      td(int(row.count), "num"),
      td(age(row.age), "num"),
      td(row.calls === undefined ? "–" : `${int(row.calls)}${row.errors ? ` (${int(row.errors)} failed)` : ""}`, "num"),
      td(row.error ? h("span", { class: "error-text" }, row.error) : "–"))),
    { "aria-label": "Instances" });
}

function adminInstances(stats) {
  return Object.entries(stats.instances).map(([name, status]) => ({
    name,
    type: status.type,
    state: stateOf(status),
    source: status.source,
    count: status.count,
    age: status.age_seconds,
    calls: status.upstream_calls,
    errors: status.upstream_errors,
    error: status.last_error,
  }));
}

function clientInstances(listing) {
  return Object.entries(listing.providers).map(([name, status]) => ({
    name,
    type: null,
    state: status.error ? "failing" : status.source || "no list",
    source: status.source,
    count: status.count,
    age: status.age_seconds,
    error: status.error,
  }));
}

function discoverySection(discovery) {
  const title = h("h2", { id: "found-title" }, "Local servers found");
  if (discovery.error) {
    return h("section", { "aria-labelledby": "found-title" }, title,
      h("p", { class: "muted" }, `Not shown: ${discovery.error.message}`));
  }
  if (!discovery.enabled) {
    return h("section", { "aria-labelledby": "found-title" }, title,
      h("p", { class: "muted" }, "Discovery is off (discovery.enabled: false): no port is probed."));
  }
  const found = discovery.servers.filter((server) => server.state && server.state !== "not_running");
  const body = found.length
    ? table(["Address", "Server", "State", "Version", ["Models", "num"], "Instance"],
      found.map((server) => h("tr", null,
        td(`${server.host}:${server.port}`),
        td(server.type || "–"),
        td(badge(server.state)),
        td(server.version || "–"),
        td(int(server.models), "num"),
        td(server.instance || (discovery.expose ? "–" : "not listed (expose: false)")))),
      { "aria-label": "Local servers found" })
    : h("p", { class: "muted" },
      `None found on the ${discovery.servers.length} ports probed (${discovery.rounds} rounds so far).`);
  return h("section", { "aria-labelledby": "found-title" }, title, body);
}

function configSection(health) {
  const config = health.config;
  return h("section", { "aria-labelledby": "config-title" },
    h("h2", { id: "config-title" }, "Config"),
    facts([
      ["From", h("code", null, config.origin)],
      ["Reloads", int(config.reloads)],
    ]),
    config.error ? notice("bad", h("p", null, "The last reload failed; the running config is kept:"),
      h("p", null, h("code", null, config.error))) : null,
    config.restart_needed.length
      ? notice("warn", config.restart_needed.map((line) => h("p", null, line)))
      : null,
    h("p", null, h("a", { href: "/ui/config" }, "The effective config")));
}

function fleetSection(health, stats) {
  const fleet = health.fleet;
  const title = h("h2", { id: "fleet-title" }, "Fleet");
  if (!fleet) {
    return h("section", { "aria-labelledby": "fleet-title" }, title,
      h("p", null, "Not in a fleet: this daemon works alone."));
  }
  const shared = stats && !stats.error ? stats.fleet : undefined;
  return h("section", { "aria-labelledby": "fleet-title" }, title,
    facts([
      ["Redis", h("code", null, fleet.redis)],
      ["State", fleet.connected ? badge("connected", "ok") : badge("unreachable", "bad")],
      ["This daemon", h("code", null, fleet.daemon)],
      shared ? ["Fleet counters", `${int(shared.hits)} hits, ${int(shared.misses)} misses, ${int(shared.upstream_calls)} upstream calls`] : null,
    ]));
}

function card(label, value, extra, id) {
  return h("div", { class: "card", id },
    h("div", { class: "label" }, label),
    h("div", { class: "big" }, value),
    extra ? h("div", { class: "muted" }, extra) : null);
}

function todayAdmin(today) {
  if (today.error) {
    return h("p", { class: "muted" }, `Not shown: ${today.error.message}`);
  }
  const row = today.data[0] || {};
  const tokens = (row.input_tokens || 0) + (row.output_tokens || 0);
  return h("div", { class: "cards" },
    card("Requests", int(row.requests || 0), null, "today-requests"),
    card("Failed", int(row.failed || 0), null, "today-failed"),
    card("Spend", usd(row.cost_usd || 0),
      row.unpriced_requests ? `${int(row.unpriced_requests)} unpriced, not counted` : null, "today-spend"),
    card("Tokens", compact(tokens),
      `${compact(row.input_tokens || 0)} in, ${compact(row.output_tokens || 0)} out`, "today-tokens"));
}

function todayClient(key, requests) {
  const rows = requests.error ? [] : requests.data;
  const failed = rows.filter((row) => row.status >= 400 || row.error_type).length;
  const tokens = rows.reduce((sum, row) => sum + (row.input_tokens || 0) + (row.output_tokens || 0), 0);
  const more = !requests.error && requests.next_cursor ? "+" : "";
  return h("div", { class: "cards" },
    card("Requests", `${int(rows.length)}${more}`, null, "today-requests"),
    card("Failed", int(failed), null, "today-failed"),
    card("Spend (24 h)", key.error ? "–" : usd(key.data.usage_daily),
      key.error || !key.data.unpriced_requests ? null : `${int(key.data.unpriced_requests)} unpriced, not counted`, "today-spend"),
    card("Tokens", compact(tokens), null, "today-tokens"));
}

export async function render(ctx) {
  const { view, signal } = ctx;
  ctx.title("Overview");
  if (ctx.admin) {
    const [health, stats, discovery, today] = await Promise.all([
      api("/health", signal),
      softly(api("/api/cache/stats", signal)),
      softly(api("/api/discovery", signal)),
      softly(api("/api/usage?since=0d", signal)),
    ]);
    replace(view,
      h("h1", null, "Overview"),
      healthSection(health),
      h("section", { "aria-labelledby": "today-title" },
        h("h2", { id: "today-title" }, "Today (UTC)"), todayAdmin(today)),
      h("section", { "aria-labelledby": "instances-title" },
        h("h2", { id: "instances-title" }, "Instances"),
        stats.error ? h("p", { class: "muted" }, `Not shown: ${stats.error.message}`)
          : instancesTable(adminInstances(stats)),
        stats.error ? null : h("p", { class: "muted" },
          `Lists: ${int(stats.hits)} hits, ${int(stats.misses)} misses (${stats.hit_rate_percent} % hit rate), ${int(stats.refreshes)} refreshes.`)),
      discoverySection(discovery),
      configSection(health),
      fleetSection(health, stats));
    return;
  }
  const [health, listing, key, requests] = await Promise.all([
    api("/health", signal),
    softly(loadModels(signal)),
    softly(api("/api/v1/key", signal)),
    softly(api("/api/requests?since=0d&limit=500", signal)),
  ]);
  replace(view,
    h("h1", null, "Overview"),
    notice("", h("p", null, `Signed in as client ${ctx.client}: the instances you can use, and your own requests and spend.`)),
    healthSection(health),
    h("section", { "aria-labelledby": "today-title" },
      h("h2", { id: "today-title" }, "Today (UTC)"), todayClient(key, requests)),
    h("section", { "aria-labelledby": "instances-title" },
      h("h2", { id: "instances-title" }, "Instances"),
      listing.error ? h("p", { class: "muted" }, `Not shown: ${listing.error.message}`)
        : instancesTable(clientInstances(listing.raw))),
    configSection(health),
    fleetSection(health, null));
}
