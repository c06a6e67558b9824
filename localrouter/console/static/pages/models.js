// Models: the merged list (/api/models, as the caller sees it) as a browser. Searching,
// filtering and sorting run on a prepared index in the page, synchronously on each keystroke,
// and only one page of rows is in the document, so 20,000 models answer within a frame.

import { api } from "../lib/api.js";
import { field, h, int, notice, options, pathOf, perMillion, priceText, replace } from "../lib/dom.js";

export const PAGE_SIZE = 50;
const CONTEXTS = [
  ["", "Any context"],
  ["8000", "8k tokens or more"],
  ["32000", "32k or more"],
  ["128000", "128k or more"],
  ["200000", "200k or more"],
  ["1000000", "1M or more"],
];
const PRICES = [
  ["", "Any price"],
  ["0", "Free"],
  ["0.5", "Up to $0.50 per 1M in"],
  ["1", "Up to $1 per 1M in"],
  ["3", "Up to $3 per 1M in"],
  ["10", "Up to $10 per 1M in"],
  ["unpriced", "No known price"],
];
const SORTS = [
  ["id", "Id"],
  ["name", "Name"],
  ["price", "Price, cheapest first"],
  ["-price", "Price, dearest first"],
  ["context", "Context, largest first"],
];

let loading = null; // the list as this session sees it: one fetch, shared by the pages

export function forget() {
  loading = null;
}

function prepare(raw) {
  const rows = raw.models.map((entry, index) => {
    const name = entry.name || entry.id;
    const pricing = entry.pricing || {};
    return {
      entry,
      index,
      id: entry.id,
      name,
      lname: name.toLowerCase(),
      key: `${entry.id}\u0000${name}`.toLowerCase(),
      instance: entry.owned_by,
      caps: entry.capabilities && entry.capabilities.length ? entry.capabilities : ["chat"],
      context: entry.context_length || 0,
      priceIn: perMillion(pricing.prompt),
      priceOut: perMillion(pricing.completion),
      source: entry.source || "",
    };
  });
  const capabilities = new Map();
  const sources = new Set();
  for (const row of rows) {
    for (const cap of row.caps) capabilities.set(cap, (capabilities.get(cap) || 0) + 1);
    if (row.source) sources.add(row.source);
  }
  const instances = [...new Set([...Object.keys(raw.providers), ...rows.map((row) => row.instance)])];
  return {
    raw,
    rows,
    byId: new Map(rows.map((row) => [row.id, row])),
    instances: instances.sort(),
    capabilities: [...capabilities.entries()].sort((a, b) => (a[0] < b[0] ? -1 : 1)),
    sources: [...sources].sort(),
    orders: new Map([["id", rows]]),
  };
}

/** The merged list, prepared once per session (the Reload button fetches it again). */
export function loadModels() {
  if (loading === null) {
    loading = api("/api/models").then(prepare);
    loading.catch(() => { loading = null; });
  }
  return loading;
}

function byNumber(pick, descending) {
  return (a, b) => {
    const x = pick(a);
    const y = pick(b);
    if (x === y) return a.index - b.index;
    if (x === null) return 1;
    if (y === null) return -1;
    return descending ? y - x : x - y;
  };
}

const ORDERS = {
  name: (a, b) => (a.lname < b.lname ? -1 : a.lname > b.lname ? 1 : a.index - b.index),
  price: byNumber((row) => row.priceIn, false),
  "-price": byNumber((row) => row.priceIn, true),
  context: byNumber((row) => row.context || null, true),
};

function ordered(store, sort) {
  if (!store.orders.has(sort)) store.orders.set(sort, [...store.rows].sort(ORDERS[sort]));
  return store.orders.get(sort);
}

/** The filters a page address holds (/ui/models?q=...&cap=vision&sort=price). */
export function readState(query) {
  const sort = query.get("sort") || "id";
  return {
    q: query.get("q") || "",
    instance: query.get("instance") || "",
    cap: query.get("cap") || "",
    context: query.get("context") || "",
    price: query.get("price") || "",
    source: query.get("source") || "",
    sort: SORTS.some(([value]) => value === sort) ? sort : "id",
    page: Math.max(1, Number.parseInt(query.get("page") || "1", 10) || 1),
  };
}

function predicate(state) {
  const q = state.q.trim().toLowerCase();
  const minContext = state.context ? Number(state.context) : 0;
  const price = state.price;
  const maxPrice = price && price !== "unpriced" ? Number(price) : null;
  return (row) =>
    (!q || row.key.includes(q)) &&
    (!state.instance || row.instance === state.instance) &&
    (!state.cap || row.caps.includes(state.cap)) &&
    (!minContext || row.context >= minContext) &&
    (price !== "unpriced" || row.priceIn === null) &&
    (maxPrice === null || (row.priceIn !== null && row.priceIn <= maxPrice)) &&
    (!state.source || row.source === state.source);
}

/** The rows that pass, counted, and the page of them to show. The last answer is kept: a
 * search that only grows (typing on) looks among the rows that matched before. */
export function select(store, state) {
  const q = state.q.trim().toLowerCase();
  const rest = [state.instance, state.cap, state.context, state.price, state.source, state.sort].join("\u0000");
  const last = store.last;
  const narrower = last !== undefined && last.rest === rest && q.includes(last.q);
  let matches;
  if (narrower && last.q === q) matches = last.matches;
  else matches = (narrower ? last.matches : ordered(store, state.sort)).filter(predicate(state));
  store.last = { q, rest, matches };
  const first = (state.page - 1) * PAGE_SIZE;
  return { count: matches.length, shown: matches.slice(first, first + PAGE_SIZE) };
}

/** One table row, made once and filled again for each page shown (filling ~50 rows is much
 * cheaper than making them anew on every keystroke). */
function makeRow() {
  const link = h("a");
  const id = h("span", { class: "sub" });
  const cells = [h("td"), h("td", { class: "num" }), h("td", { class: "num" }), h("td", { class: "num" })];
  const caps = h("span", { class: "caps" });
  const source = h("span", { class: "badge" });
  const tr = h("tr", null, h("td", null, link, id), cells, h("td", null, caps), h("td", null, source));
  return {
    tr,
    fill(row) {
      tr.dataset.id = row.id;
      link.href = pathOf("/ui/models", row.id);
      link.textContent = row.name;
      id.textContent = row.id;
      cells[0].textContent = row.instance;
      cells[1].textContent = row.context ? int(row.context) : "–";
      cells[2].textContent = priceText(row.priceIn);
      cells[3].textContent = priceText(row.priceOut);
      caps.textContent = row.caps.join(", ");
      source.textContent = row.source || "–";
      source.className = `badge ${row.source}`;
    },
  };
}

function query(state) {
  const params = new URLSearchParams();
  for (const key of ["q", "instance", "cap", "context", "price", "source"]) {
    if (state[key]) params.set(key, state[key]);
  }
  if (state.sort !== "id") params.set("sort", state.sort);
  if (state.page > 1) params.set("page", String(state.page));
  const text = params.toString();
  return text ? `/ui/models?${text}` : "/ui/models";
}

export async function render(ctx) {
  const { view } = ctx;
  ctx.title("Models");
  const store = await loadModels();
  if (ctx.signal.aborted) return;
  const state = readState(ctx.query);
  const total = store.rows.length;

  const search = h("input", {
    type: "search", id: "model-search", value: state.q, placeholder: "Id or name",
    autocomplete: "off", spellcheck: "false",
  });
  const instance = h("select", { id: "filter-instance" },
    options([["", "Every instance"], ...store.instances.map((name) => [name, name])], state.instance));
  const cap = h("select", { id: "filter-capability" },
    options([["", "Any capability"], ...store.capabilities.map(([name, n]) => [name, `${name} (${int(n)})`])], state.cap));
  const context = h("select", { id: "filter-context" }, options(CONTEXTS, state.context));
  const price = h("select", { id: "filter-price" }, options(PRICES, state.price));
  const source = h("select", { id: "filter-source" },
    options([["", "Any source"], ...store.sources.map((name) => [name, name])], state.source));
  const sort = h("select", { id: "sort" }, options(SORTS, state.sort));
  const count = h("p", { id: "model-count", "aria-live": "polite" });
  const body = h("tbody");
  const previous = h("button", { type: "button" }, "Previous page");
  const next = h("button", { type: "button" }, "Next page");
  const where = h("span", { id: "model-page" });

  const pool = Array.from({ length: PAGE_SIZE }, makeRow);
  let urlTimer = 0;

  function update({ keepPage = false, typing = false } = {}) {
    state.q = search.value;
    state.instance = instance.value;
    state.cap = cap.value;
    state.context = context.value;
    state.price = price.value;
    state.source = source.value;
    state.sort = sort.value;
    if (!keepPage) state.page = 1;
    const { count: found, shown } = select(store, state);
    const pages = Math.max(1, Math.ceil(found / PAGE_SIZE));
    if (state.page > pages) {
      state.page = pages;
      return update({ keepPage: true });
    }
    shown.forEach((row, index) => pool[index].fill(row));
    const rows = body.rows.length;
    if (rows > shown.length) {
      for (let index = rows - 1; index >= shown.length; index -= 1) pool[index].tr.remove();
    } else {
      for (let index = rows; index < shown.length; index += 1) body.appendChild(pool[index].tr);
    }
    count.dataset.count = String(found);
    count.textContent = found === total
      ? `${int(total)} models`
      : `${int(found)} of ${int(total)} models match`;
    where.textContent = `Page ${int(state.page)} of ${int(pages)}`;
    previous.disabled = state.page <= 1;
    next.disabled = state.page >= pages;
    // The address follows (for a reload or a shared link); while typing, once it pauses.
    clearTimeout(urlTimer);
    if (typing) urlTimer = setTimeout(() => history.replaceState(null, "", query(state)), 300);
    else history.replaceState(null, "", query(state));
    return found;
  }

  search.addEventListener("input", () => update({ typing: true }));
  for (const control of [instance, cap, context, price, source, sort]) {
    control.addEventListener("change", () => update());
  }
  previous.addEventListener("click", () => { state.page -= 1; update({ keepPage: true }); });
  next.addEventListener("click", () => { state.page += 1; update({ keepPage: true }); });
  const reload = h("button", { type: "button" }, "Reload the list");
  reload.addEventListener("click", () => { forget(); ctx.navigate(query(state), { replaceEntry: true }); });

  const errors = store.raw.errors || [];
  replace(view,
    h("div", { class: "row" }, h("h1", null, "Models"), reload),
    errors.length
      ? notice("warn", errors.map((item) => h("p", null, `${item.provider}: ${item.error}`)))
      : null,
    h("form", { class: "filters", role: "search", "aria-label": "Find models", onsubmit: (event) => event.preventDefault() },
      field("Search models", search, { class: "grow" }),
      field("Instance", instance),
      field("Capability", cap),
      field("Context length", context),
      field("Price", price),
      field("Source", source),
      field("Sort by", sort)),
    count,
    h("div", { class: "table-wrap" },
      h("table", { class: "models-table", "aria-label": "Models", "aria-describedby": "model-count" },
        h("thead", null, h("tr", null,
          h("th", { scope: "col" }, "Model"),
          h("th", { scope: "col" }, "Instance"),
          h("th", { scope: "col", class: "num" }, "Context"),
          h("th", { scope: "col", class: "num" }, "$ / 1M in"),
          h("th", { scope: "col", class: "num" }, "$ / 1M out"),
          h("th", { scope: "col" }, "Capabilities"),
          h("th", { scope: "col" }, "Source"))),
        body)),
    h("nav", { class: "pager", "aria-label": "Pages of models" }, previous, where, next));
  update({ keepPage: true });
}
