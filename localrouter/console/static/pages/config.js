// Config: the effective configuration as `localrouter check` shows it (never a secret), where
// it came from, and the last reload's error with its file and key path (/api/config).

import { api } from "../lib/api.js";
import { facts, h, int, notice, replace } from "../lib/dom.js";

/** A config error as `check` words it, "<file>: <key path>: <what>", in its parts. */
export function parts(error) {
  const first = error.indexOf(": ");
  if (first < 0) return { message: error };
  const file = error.slice(0, first);
  if (!/[/\\]|\.ya?ml$|^</.test(file)) return { message: error };
  const rest = error.slice(first + 2);
  const second = rest.indexOf(": ");
  const key = second >= 0 ? rest.slice(0, second) : "";
  if (key && /^[A-Za-z_][\w.[\]-]*$/.test(key)) {
    return { file, key, message: rest.slice(second + 2) };
  }
  return { file, message: rest };
}

function reloadError(error) {
  const found = parts(error);
  return notice("bad",
    h("p", null, h("strong", null, "The last reload failed"), ": the daemon keeps running the config shown below."),
    facts([
      found.file ? ["File", h("code", { id: "error-file" }, found.file)] : null,
      found.key ? ["Key path", h("code", { id: "error-key" }, found.key)] : null,
      ["Problem", h("span", { id: "error-message" }, found.message)],
    ]));
}

export async function render(ctx) {
  const { view, signal } = ctx;
  ctx.title("Config");
  if (!ctx.admin) {
    replace(view, h("h1", null, "Config"),
      notice("", h("p", null, `The effective config is the admin's view (signed in as client ${ctx.client}).`)));
    return;
  }
  const config = await api("/api/config", signal);
  replace(view,
    h("h1", null, "Config"),
    config.error ? reloadError(config.error) : notice("ok", h("p", null, "The config file loaded without an error.")),
    config.restart_needed.length
      ? notice("warn", config.restart_needed.map((line) => h("p", null, line)))
      : null,
    facts([
      ["From", h("code", null, config.origin)],
      ["Reloads", int(config.reloads)],
    ]),
    h("h2", null, "As localrouter check shows it"),
    h("pre", { id: "config-text" }, h("code", null, config.text)),
    h("p", { class: "muted" }, "Keys, tokens and passwords are never shown: only whether they are set."));
}
