// Building the page. Every value is put in as text (a text node, textContent or a plain
// attribute): nothing here, or anywhere in the console, parses HTML from a string, so a
// model name like `<img src=x onerror=...>` is shown as it is written and never runs.

const SVG_NS = "http://www.w3.org/2000/svg";

function setProp(el, key, value) {
  if (value === undefined || value === null || value === false) return;
  if (key === "class") {
    el.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
  } else if (key === "text") {
    el.textContent = String(value);
  } else if (key.startsWith("on")) {
    if (typeof value !== "function") throw new TypeError(`${key} takes a function`);
    el.addEventListener(key.slice(2), value);
  } else if (key === "value" || key === "checked" || key === "selected") {
    el[key] = value;
  } else if (key === "style" || key === "srcdoc") {
    throw new TypeError(`${key} is not set by the console`);
  } else {
    el.setAttribute(key, value === true ? "" : String(value));
  }
}

function append(parent, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(parent, child);
    else if (child instanceof Node) parent.appendChild(child);
    else parent.appendChild(document.createTextNode(String(child)));
  }
}

/** The console path of a model or request id (each segment escaped, slashes kept). */
export function pathOf(base, id) {
  const parts = id.split("/");
  // A "." or ".." part would be resolved away by the browser (a link or a fetch landing on
  // another path, with the token): such an id goes as one segment, its slashes escaped.
  if (parts.some((part) => part === "." || part === "..")) return `${base}/${encodeURIComponent(id)}`;
  return `${base}/${parts.map(encodeURIComponent).join("/")}`;
}

/** An element: h("a", {href: "/ui"}, "Overview"); strings among the children are text. */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  if (props) for (const key of Object.keys(props)) setProp(el, key, props[key]);
  append(el, children);
  return el;
}

/** An SVG element, likewise. */
export function s(tag, props, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  if (props) for (const key of Object.keys(props)) setProp(el, key, props[key]);
  append(el, children);
  return el;
}

export function replace(parent, ...children) {
  parent.replaceChildren();
  append(parent, children);
  return parent;
}

/** A table in a sideways-scrolling wrapper: headers [[text, "num"?]], rows of cells. */
export function table(headers, rows, props = {}) {
  const head = h("tr", null, headers.map((cell) => {
    const [text, kind] = Array.isArray(cell) ? cell : [cell];
    return h("th", { scope: "col", class: kind }, text);
  }));
  return h("div", { class: "table-wrap" },
    h("table", props, h("thead", null, head), h("tbody", null, rows)));
}

export function td(value, kind) {
  return h("td", { class: kind }, value);
}

export function notice(kind, ...children) {
  return h("div", { class: ["notice", kind], role: kind === "bad" ? "alert" : "status" }, children);
}

/** What the Usage and Requests pages say when the daemon keeps no ledger (`recording: false`
 * in /api/usage and /api/requests): empty tables would read as "no traffic". */
export function ledgerOff() {
  return notice("warn", h("p", { id: "ledger-off" },
    h("strong", null, "The usage ledger is off"),
    ": calls are answered but not recorded, so nothing shows here. ",
    "It is on by default; check usage.enabled and usage.path in the config, then restart localrouter."));
}

export function badge(text, kind) {
  return h("span", { class: ["badge", kind || text] }, text);
}

export function chips(values) {
  return h("span", { class: "chips" }, values.map((v) => h("span", { class: "chip" }, v)));
}

export function facts(pairs) {
  return h("dl", { class: "facts" },
    pairs.filter(Boolean).map(([term, value]) => [h("dt", null, term), h("dd", null, value)]));
}

/** A labelled control: field("Instance", h("select", {id: ...}, ...)). */
let fields = 0;

export function field(label, control, props = {}) {
  if (!control.id) control.id = `field-${++fields}`;
  return h("div", { class: ["field", props.class] }, h("label", { for: control.id }, label), control);
}

export function options(values, selected) {
  return values.map(([value, text]) => h("option", { value, selected: value === selected }, text));
}

/** A button that copies `text` to the clipboard, and says it did. */
export function copyButton(text, what) {
  const button = h("button", { type: "button", "aria-label": `Copy ${what}` }, "Copy");
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = "Copied";
    } catch {
      button.textContent = "Select and copy";
    }
    setTimeout(() => { button.textContent = "Copy"; }, 1500);
  });
  return button;
}

// Numbers, money, sizes and times, as people read them.
const INT = new Intl.NumberFormat("en-US");
const SHORT = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 });

export function int(n) {
  return n === null || n === undefined ? "–" : INT.format(n);
}

export function compact(n) {
  return n === null || n === undefined ? "–" : SHORT.format(n);
}

export function usd(n) {
  if (n === null || n === undefined) return "unpriced";
  if (n === 0) return "$0";
  const abs = Math.abs(n);
  const digits = abs >= 100 ? 2 : abs >= 1 ? 3 : abs >= 0.01 ? 4 : 6;
  return `$${n.toFixed(digits).replace(/(\.\d*?[1-9])0+$|\.0+$/, "$1")}`;
}

/** USD per token (a price string from a list) as USD per million tokens. */
export function perMillion(price) {
  if (price === undefined || price === null || price === "") return null;
  const n = Number(price);
  return Number.isFinite(n) ? Math.round(n * 1e12) / 1e6 : null; // to a millionth of a cent
}

export function priceText(perM) {
  if (perM === null || perM === undefined) return "–";
  if (perM === 0) return "free";
  if (perM < 0.01) return `$${Number(perM.toPrecision(2))}`;
  return `$${perM.toFixed(4).replace(/0{1,2}$/, "")}`;
}

export function age(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  if (seconds < 86400) return `${(seconds / 3600).toFixed(1).replace(/\.0$/, "")} h`;
  return `${(seconds / 86400).toFixed(1).replace(/\.0$/, "")} d`;
}

/** Unix seconds as a UTC date and time (the daemon counts days in UTC). */
export function when(unix) {
  if (unix === null || unix === undefined) return "–";
  return `${new Date(unix * 1000).toISOString().replace("T", " ").slice(0, 19)} UTC`;
}

export function pct(share) {
  return share === null || share === undefined ? "–" : `${(share * 100).toFixed(1).replace(/\.0$/, "")} %`;
}
