// A model's page: its metadata and where each field came from, what the config makes of it
// (aliases pointing at it, hidden or not, the clients that may call it, its fallbacks), and
// the ids to copy for curl, Claude Code and Codex.

import { ApiError, api, withQuery } from "../lib/api.js";
import {
  badge, chips, copyButton, facts, h, int, notice, pathOf, perMillion, priceText, replace, table,
  td, when,
} from "../lib/dom.js";

const SOURCES = {
  live: "live: fetched from the upstream",
  stale: "stale: the last good list, while the upstream fails",
  persisted: "persisted: the list kept on disk, until the upstream answers after a restart",
  catalog: "catalog: the upstream could not be reached, so the catalog's models stand in",
  fleet: "fleet: a list another daemon of the fleet fetched",
};

const PRICE_KEYS = [
  ["prompt", "Price in (per 1M tokens)"],
  ["completion", "Price out (per 1M tokens)"],
  ["input_cache_read", "Cache read (per 1M tokens)"],
  ["input_cache_write", "Cache write (per 1M tokens)"],
];

function list(values) {
  return values && values.length ? values : null;
}

// [label, the entry's value, the catalog's value (plain ModelInfo fields), how to show it]
function fieldsOf(entry, catalog) {
  const cat = catalog || {};
  const arch = entry.architecture || {};
  const prices = entry.pricing || {};
  const catPrices = cat.pricing || {};
  const rows = [
    ["Name", entry.name, cat.name, (v) => v],
    ["Description", entry.description || null, cat.description, (v) => v],
    ["Context length", entry.context_length, cat.context_length, (v) => `${int(v)} tokens`],
    ["Max output", entry.max_output_tokens, cat.max_output_tokens, (v) => `${int(v)} tokens`],
    ...PRICE_KEYS.map(([key, label]) => [
      label,
      perMillion(prices[key]),
      catPrices[key] === undefined ? undefined : catPrices[key] * 1e6,
      (v) => priceText(v),
    ]),
    ["Input modalities", list(arch.input_modalities), cat.input_modalities, (v) => chips(v)],
    ["Output modalities", list(arch.output_modalities), cat.output_modalities, (v) => chips(v)],
    ["Capabilities", list(entry.capabilities), cat.capabilities, (v) => chips(v)],
    ["Parameters", list(entry.supported_parameters), cat.supported_parameters, (v) => chips(v)],
    ["Created", entry.created || null, cat.created, (v) => when(v)],
    ["Provider's aliases", list(entry.aliases), undefined, (v) => chips(v)],
    ["Deprecated", entry.deprecated ? true : null, cat.deprecated, () => "yes"],
  ];
  return rows;
}

function same(a, b) {
  if (b === undefined || b === null) return false;
  if (typeof a === "number" && typeof b === "number") {
    return Math.abs(a - b) <= 1e-9 * Math.max(Math.abs(a), Math.abs(b), 1e-12);
  }
  return JSON.stringify(a) === JSON.stringify(b);
}

function origin(entry, value, catalogValue, about) {
  if (value === null || value === undefined) return h("span", { class: "muted" }, "nobody states it");
  const ref = entry.catalog;
  if (entry.source === "catalog") return "the catalog, standing in for the provider";
  if (ref && about && about.catalog && same(value, catalogValue)) return "the catalog";
  return `${entry.owned_by}'s list`;
}

function metadata(entry, about) {
  const catalog = about && about.catalog ? about.catalog.fields : null;
  const rows = fieldsOf(entry, catalog).map(([label, value, catValue, show]) =>
    h("tr", null,
      h("th", { scope: "row" }, label),
      td(value === null || value === undefined ? "–" : show(value)),
      td(origin(entry, value, catValue, about))));
  return h("div", { class: "table-wrap" },
    h("table", { "aria-label": "Metadata and where it came from" },
      h("thead", null, h("tr", null,
        h("th", { scope: "col" }, "Field"), h("th", { scope: "col" }, "Value"),
        h("th", { scope: "col" }, "From"))),
      h("tbody", null, rows)));
}

function quoted(text) {
  return `'${text.replace(/'/g, "'\\''")}'`;
}

function snippet(title, text, what) {
  return h("div", { class: "snippet" },
    h("div", { class: "row" }, h("h3", null, title), copyButton(text, what)),
    h("pre", null, h("code", null, text)));
}

function copyable(entry) {
  const base = location.origin;
  const id = entry.id;
  const embedding = (entry.capabilities || []).includes("embedding") &&
    !(entry.capabilities || []).includes("chat");
  const body = embedding
    ? JSON.stringify({ model: id, input: "Hello" })
    : JSON.stringify({ model: id, messages: [{ role: "user", content: "Hello" }] });
  const curl = [
    `curl ${base}/v1/${embedding ? "embeddings" : "chat/completions"} \\`,
    '  -H "Authorization: Bearer $LOCALROUTER_TOKEN" \\',
    '  -H "Content-Type: application/json" \\',
    `  -d ${quoted(body)}`,
  ].join("\n");
  const claude = [
    `export ANTHROPIC_BASE_URL=${base}`,
    "export ANTHROPIC_AUTH_TOKEN=$LOCALROUTER_TOKEN",
    `claude --model ${quoted(id)}`,
  ].join("\n");
  const codex = [
    "# ~/.codex/config.toml",
    `model = ${JSON.stringify(id)}`,
    'model_provider = "localrouter"',
    entry.context_length ? `model_context_window = ${entry.context_length}` : null,
    "",
    "[model_providers.localrouter]",
    'name = "localrouter"',
    `base_url = "${base}/v1"`,
    'wire_api = "responses"',
    'env_key = "LOCALROUTER_TOKEN"',
  ].filter((line) => line !== null).join("\n");
  return h("section", { "aria-labelledby": "use-title" },
    h("h2", { id: "use-title" }, "Use it"),
    h("div", { class: "row" }, h("code", { id: "model-id" }, id), copyButton(id, "the model id")),
    snippet("curl", curl, "the curl command"),
    snippet("Claude Code", claude, "the Claude Code setup"),
    snippet("Codex", codex, "the Codex config"));
}

function configSection(about, ctx) {
  const title = h("h2", { id: "control-title" }, "In the config");
  if (!about) {
    return h("section", { "aria-labelledby": "control-title" }, title,
      h("p", { class: "muted" },
        `Aliases, hidden ids and which clients may call it are the admin's view (signed in as client ${ctx.client}).`));
  }
  if (about.error) {
    return h("section", { "aria-labelledby": "control-title" }, title,
      h("p", { class: "muted" }, `Not shown: ${about.error.message}`));
  }
  return h("section", { "aria-labelledby": "control-title" }, title,
    facts([
      ["Aliases pointing at it", about.aliases.length
        ? h("span", { class: "chips" }, about.aliases.map((alias) =>
          h("a", { class: "chip", href: pathOf("/ui/models", alias) }, alias)))
        : "none"],
      ["Hidden", about.hidden ? "yes: left out of every list, still callable by its id" : "no"],
      ["Clients that may call it", about.clients.length ? chips(about.clients)
        : about.clients_configured === false ? "no clients are configured" : "none"],
      ["Fallbacks", about.fallbacks.length ? chips(about.fallbacks) : "none"],
    ]));
}

export async function render(ctx) {
  const { view, signal } = ctx;
  const id = ctx.params[0];
  ctx.title(id);
  let entry;
  try {
    entry = await api(pathOf("/v1/models", id), signal);
  } catch (error) {
    if (error instanceof ApiError && (error.status === 404 || error.status === 403)) {
      replace(view, h("h1", null, "No such model"),
        notice("warn", h("p", null, error.message)),
        h("p", null, h("a", { href: "/ui/models" }, "Back to the models")));
      return;
    }
    throw error;
  }
  let about = null;
  if (ctx.admin) {
    try {
      about = await api(withQuery("/api/models/about", { id: entry.alias_of || entry.id }), signal);
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) throw error;
      about = { error };
    }
  }
  ctx.title(entry.name || entry.id);
  replace(view,
    h("p", null, h("a", { href: "/ui/models" }, "Models")),
    h("h1", null, entry.name || entry.id),
    entry.alias_of
      ? notice("", h("p", null, "An alias of ",
        h("a", { href: pathOf("/ui/models", entry.alias_of) }, entry.alias_of),
        ": it is listed and called with its target's metadata."))
      : null,
    facts([
      ["Id", h("code", null, entry.id)],
      ["Instance", `${entry.owned_by} (${entry.provider || "–"})`],
      ["Upstream id", entry.upstream_id ? h("code", null, entry.upstream_id) : "–"],
      ["List source", h("span", null, badge(entry.source || "–"), " ", SOURCES[entry.source] || "")],
      ["Catalog entry", entry.catalog
        ? `${entry.catalog.id} (matched via ${entry.catalog.matched_via})`
        : "none: the catalog does not know this model"],
      entry.active === false ? ["Active", "no"] : null,
    ]),
    h("section", { "aria-labelledby": "meta-title" },
      h("h2", { id: "meta-title" }, "Metadata"),
      h("p", { class: "muted" }, entry.catalog
        ? `"The catalog" is its entry ${entry.catalog.id} (matched via ${entry.catalog.matched_via}): it fills what ${entry.owned_by}'s list (${entry.provider || "its provider"}) leaves out. A value both state alike is shown as the catalog's.`
        : `Every value is from ${entry.owned_by}'s list (${entry.provider || "its provider"}): the catalog does not know this model.`),
      metadata(entry, about && !about.error ? about : null)),
    configSection(about, ctx),
    copyable(entry));
}
