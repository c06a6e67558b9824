// A request's page: its record (who, which model was asked and which answered, the path,
// attempts and fallbacks, status, tokens, cost, times) and its bodies when the log kept them.

import { ApiError, api } from "../lib/api.js";
import { badge, facts, h, int, notice, pathOf, replace, table, td, usd, when } from "../lib/dom.js";
import { duration, failed } from "./requests.js";

function pretty(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "string") return value;
  return JSON.stringify(value, null, 2);
}

function attempts(row) {
  const lines = [];
  const asked = row.requested_model;
  const answered = row.model;
  lines.push(h("p", null, `${int(row.attempts)} upstream ${row.attempts === 1 ? "call" : "calls"}` +
    (row.key_position !== null && row.key_position !== undefined
      ? `; the last with key #${row.key_position} of ${row.instance}'s pool.` : ".")));
  if (asked && answered && asked !== answered) {
    lines.push(h("p", null, "Asked for ", h("code", null, asked), "; answered by ",
      h("a", { href: pathOf("/ui/models", answered) }, answered),
      row.attempts > 1 ? " after the calls before it failed (a fallback, or another key)." : " (an alias or a bare id, resolved)."));
  } else if (row.attempts > 1) {
    lines.push(h("p", null, "The calls before the last failed, and the call was made again (another key of the pool, or a fallback to the same id)."));
  }
  if (row.upstream_status !== null && row.upstream_status !== undefined && row.upstream_status !== row.status) {
    lines.push(h("p", null, `The upstream answered ${row.upstream_status}; the client got ${row.status}.`));
  }
  return lines;
}

function bodies(kept) {
  if (!kept) {
    return h("p", { class: "muted" },
      "Bodies were not kept for this request (request_log.bodies is off, or errors only, or past body_retention_days).");
  }
  const headers = kept.headers && typeof kept.headers === "object" ? Object.entries(kept.headers) : [];
  return [
    h("h3", null, "Request", kept.request_truncated ? " (cut at max_body_bytes)" : ""),
    h("pre", { id: "request-body" }, h("code", null, pretty(kept.request))),
    headers.length
      ? [h("h3", null, "Request headers"),
        table(["Header", "Value"], headers.map(([name, value]) => h("tr", null, td(name), td(String(value)))),
          { "aria-label": "Request headers" })]
      : null,
    h("h3", null, `Response${kept.response_kind ? ` (${kept.response_kind})` : ""}`,
      kept.response_truncated ? " (cut at max_body_bytes)" : ""),
    h("pre", { id: "response-body" }, h("code", null, pretty(kept.response))),
  ];
}

const TRIES = 8;
const WAIT_MS = 400;

/** The record; a request that just ended (the live tail shows it at once) is written to the
 * ledger within a second, so a 404 is asked again a few times first. */
async function fetchRecord(id, signal, view) {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return (await api(pathOf("/api/requests", id), signal)).data;
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 404 || attempt >= TRIES) throw error;
      replace(view, h("p", { class: "muted" }, "Waiting for the record to be written…"));
      await new Promise((done) => setTimeout(done, WAIT_MS));
      if (signal.aborted) throw error;
    }
  }
}

export async function render(ctx) {
  const { view, signal } = ctx;
  const id = ctx.params[0];
  ctx.title(`Request ${id}`);
  let row;
  try {
    row = await fetchRecord(id, signal, view);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      replace(view, h("h1", null, "No such request"), notice("warn", h("p", null, error.message)),
        h("p", null, h("a", { href: "/ui/requests" }, "Back to the requests")));
      return;
    }
    throw error;
  }
  const status = row.cancelled ? badge("cancelled", "warn") : badge(String(row.status), failed(row) ? "bad" : "ok");
  replace(view,
    h("p", null, h("a", { href: "/ui/requests" }, "Requests")),
    h("h1", null, `Request ${row.id}`),
    row.error ? notice("bad", h("p", null, h("strong", null, row.error_type || "error"), ": ", row.error)) : null,
    facts([
      ["Status", h("span", null, status, row.upstream_status ? ` (upstream ${row.upstream_status})` : "")],
      ["Started", when(row.started_at)],
      ["Client", row.client || "(no client: the admin or no token)"],
      ["Route", h("code", null, row.route)],
      ["Model asked", row.requested_model ? h("code", null, row.requested_model) : "–"],
      ["Answered by", row.model ? h("a", { href: pathOf("/ui/models", row.model) }, row.model) : "–"],
      ["Instance", row.instance ? `${row.instance} (${row.provider_type || "–"})` : "–"],
      ["Path", row.path === "translated" ? "translated (to Chat Completions and back)" : row.path || "–"],
      ["Streamed", row.stream ? "yes" : "no"],
      ["Took", `${duration(row.duration_ms)}${row.ttft_ms !== null && row.ttft_ms !== undefined ? `, first byte after ${duration(row.ttft_ms)}` : ""}`],
      ["Tokens", `${int(row.input_tokens)} in (${int(row.cache_read_tokens)} cache read, ${int(row.cache_write_tokens)} written), ${int(row.output_tokens)} out (${int(row.reasoning_tokens)} reasoning); ${row.usage_source}`],
      ["Cost", `${usd(row.cost_usd)} (${row.cost_source})`],
      row.session ? ["Session", h("code", null, row.session)] : null,
    ]),
    h("section", { "aria-labelledby": "attempts-title" },
      h("h2", { id: "attempts-title" }, "Attempts and fallbacks"), attempts(row)),
    h("section", { "aria-labelledby": "bodies-title" },
      h("h2", { id: "bodies-title" }, "Bodies"), bodies(row.bodies)));
}
