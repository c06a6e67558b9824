// The console: one module that routes by the path (history.pushState), asks for a token when
// the daemon wants one, and hands each page a fresh view to fill from the daemon's endpoints.

import { ApiError, api, clearToken, setToken, token } from "./lib/api.js";
import { h, notice, replace } from "./lib/dom.js";
import * as clients from "./pages/clients.js";
import * as config from "./pages/config.js";
import * as model from "./pages/model.js";
import * as models from "./pages/models.js";
import * as overview from "./pages/overview.js";
import * as request from "./pages/request.js";
import * as requests from "./pages/requests.js";
import * as usage from "./pages/usage.js";

const ROUTES = [
  [/^\/ui\/?$/, "overview", overview],
  [/^\/ui\/models\/?$/, "models", models],
  [/^\/ui\/models\/(.+)$/, "models", model],
  [/^\/ui\/usage\/?$/, "usage", usage],
  [/^\/ui\/requests\/?$/, "requests", requests],
  [/^\/ui\/requests\/(.+)$/, "requests", request],
  [/^\/ui\/clients\/?$/, "clients", clients],
  [/^\/ui\/config\/?$/, "config", config],
];

const main = document.getElementById("main");
const who = document.getElementById("who");
const ADMIN_LABEL = "localrouter admin";
// Who the console speaks as: null until known; {admin, client, label, tokenNeeded}.
let session = null;
let current = null; // the page on screen: its AbortController
let routed = 0;

function decodePath(raw) {
  return raw.split("/").map((part) => decodeURIComponent(part)).join("/");
}

function showWho() {
  if (session === null) {
    replace(who);
    return;
  }
  if (!token()) {
    replace(who, h("span", { class: "muted" }, "No token needed"));
    return;
  }
  const signOut = h("button", { type: "button" }, "Sign out");
  signOut.addEventListener("click", () => {
    clearToken();
    session = null;
    models.forget();
    start();
  });
  const shown = session.admin ? "admin" : `client ${session.client}`;
  replace(who, h("span", null, "Signed in as ", h("strong", null, shown)), signOut);
}

function signIn(message) {
  session = null;
  models.forget(); // the next caller's list is their own
  showWho();
  document.title = "Sign in · localrouter";
  const input = h("input", {
    type: "password",
    id: "token",
    name: "token",
    autocomplete: "current-password",
    required: true,
    spellcheck: "false",
  });
  const form = h("form", null,
    h("div", { class: "field" }, h("label", { for: "token" }, "Token"), input),
    h("button", { type: "submit", class: "primary" }, "Sign in"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const given = input.value.trim();
    if (!given) return;
    setToken(given);
    start();
  });
  replace(main, h("section", { class: "signin", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "Sign in"),
    h("p", null, "This daemon wants a token. The admin token (server.auth_token) shows " +
      "everything; a client's token shows that client's own requests, spend and limits."),
    message ? notice("bad", h("p", { id: "signin-error" }, message)) : null,
    form,
    h("p", { class: "muted" }, "The token is kept in this tab only (sessionStorage) and " +
      "sent as an Authorization header; no cookie is set.")));
  main.dataset.ready = "signin";
  input.focus();
}

/** Who the token (or no token) is: /api/v1/key names the caller. */
async function identify() {
  try {
    const key = (await api("/api/v1/key")).data;
    const admin = key.label === ADMIN_LABEL;
    return { admin, client: admin ? null : key.label, label: key.label };
  } catch (error) {
    // A token the browser cannot send (a pasted curly quote), or no daemon: sign in again.
    if (!(error instanceof ApiError) || error.status === 401) throw error;
    return { admin: true, client: null, label: null }; // no ledger: the pages find out
  }
}

async function start() {
  main.dataset.ready = "";
  try {
    session = await identify();
  } catch (error) {
    const had = token();
    clearToken();
    if (!(error instanceof ApiError)) {
      signIn(`The console could not ask the daemon who this is: ${error.message}`);
    } else {
      signIn(had ? `That token was not accepted (401): ${error.message}` : null);
    }
    return;
  }
  showWho();
  route(false);
}

function notFound(view, why) {
  markNav(null);
  document.title = "Not found · localrouter";
  replace(view, h("h1", null, "Not found"), h("p", null, why, h("a", { href: "/ui" }, "Overview")));
  main.dataset.ready = "missing";
}

function markNav(page) {
  for (const link of document.querySelectorAll("nav a[data-page]")) {
    if (link.dataset.page === page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

async function route(moveFocus = true) {
  if (session === null) return;
  if (current) current.abort();
  const controller = (current = new AbortController());
  const number = ++routed;
  const path = location.pathname;
  const found = ROUTES.find(([pattern]) => pattern.test(path));
  main.dataset.ready = "";
  const view = h("div", { class: "view" });
  replace(main, view);
  if (!found) {
    notFound(view, "No console page at this address. ");
    return;
  }
  const [pattern, name, page] = found;
  let groups;
  try {
    groups = path.match(pattern).slice(1).map(decodePath);
  } catch {
    groups = null; // a malformed %-escape: nothing can be at this address
  }
  if (groups === null) {
    notFound(view, "This address is not well formed. ");
    return;
  }
  markNav(name);
  const ctx = {
    view,
    signal: controller.signal,
    admin: session.admin,
    client: session.client,
    params: groups,
    query: new URLSearchParams(location.search),
    navigate,
    title(text) {
      document.title = `${text} · localrouter`;
    },
  };
  replace(view, h("p", { class: "muted" }, "Loading…"));
  try {
    await page.render(ctx);
  } catch (error) {
    if (controller.signal.aborted || number !== routed) return;
    if (error instanceof ApiError && error.status === 401) {
      clearToken();
      signIn("The daemon no longer accepts this token (401). Sign in again.");
      return;
    }
    replace(view, h("h1", null, "Something went wrong"),
      notice("bad", h("p", null, error instanceof ApiError
        ? `The daemon answered ${error.status}: ${error.message}`
        : String(error && error.message ? error.message : error))));
  }
  if (number !== routed) return;
  main.dataset.ready = name;
  if (!performance.getEntriesByName("console:usable").length) performance.mark("console:usable");
  if (moveFocus) {
    const heading = view.querySelector("h1");
    if (heading) {
      heading.tabIndex = -1;
      heading.focus({ preventScroll: true });
    }
  }
}

/** Go to a console path, as a link would. */
function navigate(url, { replaceEntry = false } = {}) {
  if (replaceEntry) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  route(!replaceEntry);
}

document.addEventListener("click", (event) => {
  if (event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const link = event.target instanceof Element ? event.target.closest("a[href]") : null;
  if (!link || link.target || link.hasAttribute("download")) return;
  const url = new URL(link.href, location.href);
  if (url.origin !== location.origin || !/^\/ui(\/|$)/.test(url.pathname)) return;
  if (url.pathname.startsWith("/ui/assets/")) return;
  event.preventDefault();
  if (url.pathname === location.pathname && url.search === location.search) return;
  history.pushState(null, "", url.pathname + url.search);
  route(true);
});

window.addEventListener("popstate", () => route(true));

start();
