// Requests: the request log (/api/requests, newest first, paged by its cursor), narrowed by
// client, model, instance, status and route, with a live tail of /api/requests/stream: each
// request that ends while the page is open comes in at the top.

import { api, readEvents, withQuery } from "../lib/api.js";
import { badge, field, h, int, ledgerOff, notice, options, pathOf, replace, usd, when } from "../lib/dom.js";

const ROUTES = [
  "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/messages", "/v1/responses",
  "/api/chat", "/api/generate", "/api/embed", "/api/embeddings", "/api/v1/chat/completions",
  "/api/v1/completions", "/api/v1/embeddings",
];
const STATUSES = [
  ["", "Any status"], ["failed", "Failed only"], ["200", "200"], ["400", "400"], ["401", "401"],
  ["403", "403"], ["404", "404"], ["408", "408"], ["413", "413"], ["429", "429"], ["500", "500"],
  ["502", "502"], ["503", "503"], ["504", "504"],
];
const FILTERS = ["client", "model", "instance", "status", "route"];
const RETRY_MS = 2000;

export function failed(row) {
  return Boolean(row.cancelled) || row.status < 200 || row.status >= 400;
}

export function duration(ms) {
  if (ms === null || ms === undefined) return "–";
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

function matches(row, filters) {
  if (filters.client && row.client !== filters.client) return false;
  if (filters.model && row.model !== filters.model && row.requested_model !== filters.model) return false;
  if (filters.instance && row.instance !== filters.instance) return false;
  if (filters.route && row.route !== filters.route) return false;
  if (filters.status === "failed") return failed(row);
  if (filters.status && row.status !== Number(filters.status)) return false;
  return true;
}

function statusBadge(row) {
  if (row.cancelled) return badge("cancelled", "warn");
  return badge(String(row.status), failed(row) ? "bad" : "ok");
}

function rowOf(row, fresh) {
  const asked = row.requested_model && row.requested_model !== row.model
    ? h("span", { class: "sub" }, `asked ${row.requested_model}`) : null;
  return h("tr", { "data-request-id": row.id, class: fresh ? "fresh" : null },
    h("td", null, h("a", { href: pathOf("/ui/requests", row.id) }, when(row.started_at)),
      h("span", { class: "sub" }, row.id)),
    h("td", null, row.client || "–"),
    h("td", null, row.model || row.requested_model || "–", asked),
    h("td", null, row.route),
    h("td", null, statusBadge(row), row.error ? h("span", { class: "sub" }, row.error) : null),
    h("td", { class: "num" }, int(row.attempts)),
    h("td", { class: "num" }, `${int(row.input_tokens)} / ${int(row.output_tokens)}`),
    h("td", { class: "num" }, usd(row.cost_usd)),
    h("td", { class: "num" }, duration(row.duration_ms)));
}

export async function render(ctx) {
  const { view, signal } = ctx;
  ctx.title("Requests");
  const filters = Object.fromEntries(FILTERS.map((name) => [name, ctx.query.get(name) || ""]));
  if (!ctx.admin) filters.client = "";
  const liveWanted = ctx.query.get("live") !== "off";
  const first = await api(withQuery("/api/requests", { ...filters, limit: 50 }), signal);

  const body = h("tbody", null, first.data.map((row) => rowOf(row, false)));
  const seen = new Set(first.data.map((row) => row.id));
  let cursor = first.next_cursor;
  const empty = h("p", { class: "muted", id: "requests-empty", hidden: first.data.length > 0 },
    "No requests match yet.");

  const older = h("button", { type: "button", hidden: !cursor }, "Load older requests");
  older.addEventListener("click", async () => {
    older.disabled = true;
    const page = await api(withQuery("/api/requests", { ...filters, limit: 50, cursor }), signal);
    for (const row of page.data) {
      if (seen.has(row.id)) continue;
      seen.add(row.id);
      body.appendChild(rowOf(row, false));
    }
    cursor = page.next_cursor;
    older.hidden = !cursor;
    older.disabled = false;
  });

  const inputs = {
    client: h("input", { type: "text", id: "filter-client", value: filters.client, autocomplete: "off" }),
    model: h("input", { type: "text", id: "filter-model", value: filters.model, autocomplete: "off" }),
    instance: h("input", { type: "text", id: "filter-instance", value: filters.instance, autocomplete: "off" }),
    status: h("select", { id: "filter-status" }, options(STATUSES, filters.status)),
    route: h("input", { type: "text", id: "filter-route", value: filters.route, list: "known-routes", autocomplete: "off" }),
  };
  const live = h("input", { type: "checkbox", id: "live", checked: liveWanted });
  const form = h("form", { class: "filters", "aria-label": "Narrow the requests" },
    ctx.admin ? field("Client", inputs.client) : null,
    field("Model", inputs.model),
    field("Instance", inputs.instance),
    field("Status", inputs.status),
    field("Route", inputs.route),
    h("datalist", { id: "known-routes" }, ROUTES.map((route) => h("option", { value: route }))),
    h("button", { type: "submit", class: "primary" }, "Apply"),
    h("div", { class: "row" }, live, h("label", { for: "live" }, "Live tail")));
  function address(liveOn) {
    const params = {};
    for (const name of FILTERS) {
      const value = inputs[name].value.trim();
      if (value && (name !== "client" || ctx.admin)) params[name] = value;
    }
    if (!liveOn) params.live = "off";
    return withQuery("/ui/requests", params);
  }
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    ctx.navigate(address(live.checked));
  });

  const state = h("p", { id: "live-state", "data-state": "off", "aria-live": "polite", class: "muted" },
    "Live tail off.");
  let tail = null;
  function setState(name, text) {
    state.dataset.state = name;
    state.textContent = text;
  }
  function follow() {
    if (tail) tail.abort();
    tail = new AbortController();
    const mine = tail;
    signal.addEventListener("abort", () => mine.abort(), { once: true });
    setState("connecting", "Live tail: connecting…");
    readEvents("/api/requests/stream", mine.signal, (row) => {
      if (seen.has(row.id) || !matches(row, filters)) return;
      seen.add(row.id);
      empty.hidden = true;
      body.insertBefore(rowOf(row, true), body.firstChild);
    }, (news) => {
      if (mine.signal.aborted) return;
      if (news === "open") setState("open", "Live tail: each request appears here as it ends.");
      else {
        const why = news === "closed" ? "the stream ended" : `the daemon answered ${news.status}: ${news.message}`;
        setState("closed", `Live tail: ${why}; trying again…`);
        setTimeout(() => { if (!mine.signal.aborted) follow(); }, RETRY_MS);
      }
    });
  }
  live.addEventListener("change", () => {
    history.replaceState(null, "", address(live.checked));
    if (live.checked) follow();
    else {
      if (tail) tail.abort();
      setState("off", "Live tail off.");
    }
  });

  replace(view,
    h("h1", null, "Requests"),
    ctx.admin ? null : notice("", h("p", null, `Signed in as client ${ctx.client}: your own requests.`)),
    first.recording === false ? ledgerOff() : null,
    form,
    state,
    h("div", { class: "table-wrap" },
      h("table", { "aria-label": "Requests, newest first" },
        h("thead", null, h("tr", null,
          ["Started", "Client", "Model", "Route", "Status"].map((text) => h("th", { scope: "col" }, text)),
          ["Attempts", "Tokens in / out", "Cost", "Took"].map((text) => h("th", { scope: "col", class: "num" }, text)))),
        body)),
    empty,
    h("div", { class: "pager" }, older));
  if (liveWanted) follow();
}
