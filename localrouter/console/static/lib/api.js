// The daemon's JSON endpoints, from script: the token (when one is given) goes as
// `Authorization: Bearer`, kept in sessionStorage for this tab only; never a cookie.

const TOKEN_KEY = "localrouter.console.token";

export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function token() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

export function setToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
}

export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

function headers(accept) {
  const sent = { Accept: accept };
  const given = token();
  if (given) sent.Authorization = `Bearer ${given}`;
  return sent;
}

async function failure(response) {
  let message = `${response.status} ${response.statusText}`;
  let code;
  try {
    const body = await response.json();
    const error = body && body.error;
    if (typeof error === "string") message = error;
    else if (error && typeof error.message === "string") {
      message = error.message;
      code = error.code;
    }
  } catch {
    // not JSON: the status says it
  }
  return new ApiError(response.status, message, code);
}

async function call(path, accept, signal) {
  const response = await fetch(path, {
    headers: headers(accept),
    signal,
    credentials: "omit",
    cache: "no-store",
  });
  if (!response.ok) throw await failure(response);
  return response;
}

/** GET a JSON endpoint. Throws ApiError with the status and the daemon's message. */
export async function api(path, signal) {
  return (await call(path, "application/json", signal)).json();
}

/** GET an endpoint as a Blob (the usage CSV). */
export async function apiBlob(path, signal) {
  return (await call(path, "*/*", signal)).blob();
}

/** The path with a query built from `params` (empty values left out). */
export function withQuery(path, params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") query.set(key, String(value));
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

/**
 * Read a server-sent events stream with fetch (EventSource cannot send the token), calling
 * `onEvent` with each event's parsed data and `onState` with "open", "closed" or an
 * ApiError; ends when `signal` aborts.
 */
export async function readEvents(path, signal, onEvent, onState) {
  let response;
  try {
    response = await call(path, "text/event-stream", signal);
  } catch (error) {
    if (!signal.aborted) onState(error);
    return;
  }
  onState("open");
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffered.indexOf("\n\n")) >= 0) {
        const block = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        const data = block
          .split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, ""))
          .join("\n");
        if (data) {
          try {
            onEvent(JSON.parse(data));
          } catch {
            // a malformed event is skipped, the stream goes on
          }
        }
      }
    }
  } catch {
    // aborted, or the connection went away
  }
  if (!signal.aborted) onState("closed");
}
