"""What every route goes through: the Host and token checks, CORS, OpenAI-shaped errors and
request metrics. A wrapper per route rather than aiohttp middleware: the middleware machinery
alone cost about a quarter of the cached /v1/models throughput in bench/models.py."""

from __future__ import annotations

import enum
import functools
import hmac
import ipaddress
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from time import perf_counter
from typing import Any

import structlog
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from localrouter.base.errors import (
    AdminOnly,
    LocalRouterError,
    MisdirectedRequest,
    TwoCredentials,
    Unauthorized,
    error_body,
)
from localrouter.base.log import CURRENT_REQUEST, RequestSlot, request_id
from localrouter.config.control import Client, token_digest
from localrouter.config.settings import ServerSettings
from localrouter.http.bodies import json_response
from localrouter.http.metrics import FOLD_EVERY, RouteStats
from localrouter.state import CLIENT, GUARD, METRICS

log = structlog.get_logger(__name__)

MAX_REQUEST_BYTES = 32 * 1024 * 1024
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARDS = ("", "0.0.0.0", "::")
_ORIGIN, _HOST, _AUTHORIZATION = hdrs.ORIGIN, hdrs.HOST, hdrs.AUTHORIZATION


class _Known(enum.Enum):
    NOT = "not"  # an Authorization value not (yet) known to carry a token


_UNKNOWN = _Known.NOT


class Guard:
    """Who may call: DNS-rebinding protection (the Host must name this machine's loopback or
    the configured host), the tokens (`server.auth_token`, the admin's, and each client's)
    and the CORS origins; a config reload replaces all but the first (see `use`)."""

    def __init__(
        self, server: ServerSettings, clients: Mapping[bytes, Client] | None = None
    ) -> None:
        self._bound_to = server.host  # the address bound at start; a reload cannot move it
        self._ollama_port = server.ollama_port  # bound at start too
        self._ollama_client: Client | None = None
        self._any_host = server.host in WILDCARDS
        self._allowed: frozenset[str] = frozenset()
        self._hosts_ok: set[str] = set()  # raw Host values already found allowed
        self._token: bytes | None = None
        self._clients: Mapping[bytes, Client] = {}
        # Authorization values already found to be a client's token (or the admin's: None).
        self._known: dict[str, Client | None] = {}
        self.cors_origins: frozenset[str] = frozenset()
        self.use(server, clients or {})

    def use(self, server: ServerSettings, clients: Mapping[bytes, Client]) -> None:
        token = server.auth_token
        self._token = token.get_secret_value().encode() if token is not None else None
        self._clients = clients
        self._known = {}
        named = server.ollama_client
        self._ollama_client = next((c for c in clients.values() if c.name == named), None)
        self.cors_origins = frozenset(server.cors_origins)
        own = (socket.gethostname(),) if self._any_host else ()  # no DNS: the name only
        names = (*LOOPBACK_NAMES, self._bound_to, *own, *server.allowed_hosts)
        self._allowed = frozenset(name.strip("[]").lower() for name in names if name)
        self._hosts_ok = set()

    def allows_origin(self, origin: str) -> bool:
        return origin in self.cors_origins or "*" in self.cors_origins

    def check(
        self, request: web.Request, needs_token: bool, admin_only: bool = False
    ) -> Client | None:
        """Raise unless the request may go on; the client it comes from, or None for one who
        sees everything (the admin, or anyone when no token is set). The common case is two
        lookups."""
        headers = request.headers
        host = headers.get(_HOST)
        if host is not None and host not in self._hosts_ok:
            self._check_host(host, request)
        if not needs_token:
            return None
        if self._clients:
            sent = headers.getall(_AUTHORIZATION, ())
            if len(sent) == 1:
                client = self._known.get(sent[0], _UNKNOWN)
                if client is None or (client is not _UNKNOWN and not admin_only):
                    return client  # else the long way (to a refusal, for a client on admin_only)
            return self._client(request, sent, admin_only)
        if self._token is not None and not _is_token(_presented(request), self._token):
            if _is_preflight(request):
                return None  # browsers send no credentials on a preflight; no_route answers it
            raise Unauthorized(
                "Missing or wrong token: send 'Authorization: Bearer <server.auth_token>' "
                "(the OpenAI SDKs send their api_key that way)."
            )
        return None

    def _client(self, request: web.Request, sent: Sequence[str], admin_only: bool) -> Client | None:
        """The client of a request whose Authorization values (`sent`) are not known yet."""
        presented = _presented(request)
        if presented is not None and self._token is not None and _is_token(presented, self._token):
            self._remember(sent, None)
            return None
        client = self._clients.get(token_digest(presented)) if presented is not None else None
        if client is not None:
            self._remember(sent, client)
        elif presented is None and self._on_ollama_port(request):
            client = self._ollama_client  # Ollama clients send no token (server.ollama_client)
        if client is None:
            if _is_preflight(request):
                return None
            raise Unauthorized(
                "Missing or wrong token: send your client's token (clients[].token) as "
                "'Authorization: Bearer <token>' or 'x-api-key: <token>'."
            )
        return self._admitted(client, request, admin_only=admin_only)

    def _remember(self, sent: Sequence[str], client: Client | None) -> None:
        """Keep an Authorization value that carried a valid token (so a bounded few)."""
        if len(sent) == 1:
            if len(self._known) > 256:
                self._known.clear()
            self._known[sent[0]] = client

    def _admitted(
        self, client: Client | None, request: web.Request, *, admin_only: bool
    ) -> Client | None:
        if client is not None and admin_only:
            admin = "server.auth_token" if self._token is not None else "server.auth_token (unset)"
            raise AdminOnly(
                f"{request.path} is for the admin: send {admin}, not client {client.name!r}'s "
                "token."
            )
        return client

    def _on_ollama_port(self, request: web.Request) -> bool:
        if self._ollama_client is None or request.transport is None:
            return False
        local = request.transport.get_extra_info("sockname")
        return bool(local) and local[1] == self._ollama_port

    def _check_host(self, host: str, request: web.Request) -> None:
        name = _host_name(host)
        if name not in self._allowed and not (self._any_host and _is_own_address(name, request)):
            raise MisdirectedRequest(
                f"Host '{host}' is not allowed: localrouter answers only to "
                f"{', '.join(sorted(self._allowed))} (DNS rebinding protection). Use "
                "http://127.0.0.1:<port>/v1, or add the name to server.allowed_hosts."
            )
        if len(self._hosts_ok) > 256:  # a bounded memo of the few Host values clients send
            self._hosts_ok.clear()
        self._hosts_ok.add(host)


def _is_own_address(name: str, request: web.Request) -> bool:
    """Whether `name` is the address this connection reached (on a wildcard bind, a client
    on the LAN may use the machine's address; a rebinding attack uses a name, never that)."""
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    local = request.transport.get_extra_info("sockname") if request.transport else None
    if not local:
        return False
    try:
        reached = ipaddress.ip_address(str(local[0]).split("%")[0])
    except ValueError:
        return False
    if isinstance(reached, ipaddress.IPv6Address) and reached.ipv4_mapped is not None:
        reached = reached.ipv4_mapped  # a dual-stack socket reached over IPv4
    return reached == address


def _is_preflight(request: web.Request) -> bool:
    return (
        request.method == hdrs.METH_OPTIONS
        and hdrs.ORIGIN in request.headers
        and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers
    )


def _host_name(host: str) -> str:
    """The name in a Host header, without the port and brackets; lowercase. Anything after
    the closing bracket but a port (`[::1]evil.com`) leaves the whole value, never allowed."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        rest = host[end + 1 :] if end > 0 else None
        if rest is None or (rest and not (rest[:1] == ":" and rest[1:].isdigit())):
            return host
        return host[1:end]
    name, _, port = host.rpartition(":")
    if name and port.isdigit():
        try:
            ipaddress.IPv6Address(host)  # a bare IPv6 address has colons but no port
        except ValueError:
            return name
    return host


def _presented(request: web.Request) -> str | None:
    """The token a request carries: `Authorization: Bearer`, or `x-api-key` (Anthropic
    clients' way)."""
    sent = request.headers.getall(hdrs.AUTHORIZATION, ())
    if len(sent) > 1:
        raise TwoCredentials(
            "The request carries more than one Authorization header; send exactly one."
        )
    if not sent:
        api_key = request.headers.get("x-api-key")
        return api_key.strip() if api_key is not None else None
    scheme, _, given = sent[0].partition(" ")
    return given.strip() if scheme.lower() == "bearer" else None


def _is_token(presented: str | None, token: bytes) -> bool:
    return presented is not None and hmac.compare_digest(presented.encode(), token)


# A handler's answer from memory, when it has one at once (`now(request, client)`, None
# otherwise): the cached views answer most requests so, without a coroutine to make and await.
AnswerNow = Callable[[web.Request, Client | None], web.StreamResponse | None]

# How a route renders an error: OpenAI's shape, Anthropic's or Ollama's.
ErrorShape = Callable[[LocalRouterError], dict[str, Any]]


def endpoint(
    handler: Handler,
    guard: Guard,
    stats: RouteStats,
    *,
    open_route: bool = False,
    admin_only: bool = False,
    error_shape: ErrorShape = LocalRouterError.to_body,
) -> Handler:
    """Wrap a handler: checks first (the client, if any, is `request[CLIENT]`), errors in the
    route's protocol's shape (OpenAI's by default), CORS when allowed, metrics. A handler with
    a `now` method (AnswerNow) is asked that first, and awaited only when it has no answer."""

    needs_token = not open_route
    statuses, latencies, callers = stats.statuses, stats.latencies, stats.callers
    now: AnswerNow | None = getattr(handler, "now", None)

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        started = perf_counter()
        response: web.StreamResponse
        client = None
        try:
            client = guard.check(request, needs_token, admin_only)
            if now is None or (answer := now(request, client)) is None:
                # Always set, None included: reading an absent key raises (a KeyError a request).
                request[CLIENT] = client
                # Each request is handled in its own context, where what logs finds the request
                # (log.RequestSlot, emptied once answered; the checks and `now` log nothing).
                # The id itself is made only when something logs or fails.
                slot: RequestSlot = [request]
                CURRENT_REQUEST.set(slot)
                try:
                    response = await handler(request)
                finally:
                    slot[0] = None
            else:
                response = answer
        except LocalRouterError as exc:
            body = error_shape(exc)
            response = _failed(request, json_response(body, status=exc.status))
            response.headers.update(exc.headers)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = _failed(request, _http_error(request, exc))
        except Exception:
            log.exception("http.unhandled_error", path=request.path, request_id=request_id(request))
            body = error_body(
                "Internal error in localrouter; see its log.", "server_error", "internal"
            )
            response = _failed(request, json_response(body, status=500))
        if guard.cors_origins and _ORIGIN in request.headers and not response.prepared:
            add_cors(request, response)  # a stream did this itself before it started
        # RouteStats.record, inline (the client is counted by name when folded)
        statuses.append(response.status)
        latencies.append(perf_counter() - started)
        callers.append(client)
        if len(statuses) >= FOLD_EVERY:
            stats.fold()
        return response

    return wrapped


def _failed(request: web.Request, response: web.Response) -> web.Response:
    response.headers["X-Request-Id"] = request_id(request)
    return response


def add_cors(request: web.Request, response: web.StreamResponse) -> None:
    """Let a browser page read the response when its Origin is in server.cors_origins."""
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is not None and request.app[GUARD].allows_origin(origin):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = _vary(response.headers.get("Vary"), "Origin")


def _vary(existing: str | None, name: str) -> str:
    return f"{existing}, {name}" if existing else name


async def no_route(request: web.Request) -> web.StreamResponse:
    """The catch-all route: CORS preflights, 405 where the path has other methods, else 404."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        match, methods = await resource.resolve(request)
        if match is None:
            allowed |= methods
    origin = request.headers.get("Origin", "")
    preflight = request.method == "OPTIONS" and allowed and origin
    if preflight and request.app[GUARD].allows_origin(origin):
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Methods": ", ".join(sorted(allowed | {"OPTIONS"})),
                "Access-Control-Allow-Headers": request.headers.get(
                    "Access-Control-Request-Headers", "Authorization, Content-Type"
                ),
                "Access-Control-Max-Age": "600",
            },
        )
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    messages = {
        404: f"No route for {request.method} {request.path}. localrouter serves /v1/models, "
        "/v1/chat/completions, /v1/completions, /v1/embeddings, /api/*, /health and /metrics.",
        405: f"{request.method} is not allowed on {request.path}.",
        413: f"The request body is larger than {MAX_REQUEST_BYTES} bytes.",
    }
    message = messages.get(exc.status, exc.reason)
    code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(
        exc.status, "http_error"
    )
    error_type = "invalid_request_error" if exc.status < 500 else "server_error"
    response = json_response(error_body(message, error_type, code), status=exc.status)
    if allow := exc.headers.get("Allow"):
        response.headers["Allow"] = allow
    return response


def add_routes(
    app: web.Application,
    routes: Iterable[tuple[str, str, Handler]],
    open_paths: set[str],
    error_shapes: Mapping[str, ErrorShape] | None = None,
    admin_paths: frozenset[str] = frozenset(),
) -> None:
    """`open_paths` need no token; `admin_paths` need the admin's once clients exist;
    `error_shapes` renders errors on a path in its protocol's shape (OpenAI's otherwise)."""
    guard, metrics = app[GUARD], app[METRICS]
    for method, path, handler in routes:
        stats = metrics.route("unmatched" if path == "/{tail:.*}" else path)
        wrapped = endpoint(
            handler,
            guard,
            stats,
            open_route=path in open_paths,
            admin_only=path in admin_paths,
            error_shape=(error_shapes or {}).get(path, LocalRouterError.to_body),
        )
        if method == "GET":
            app.router.add_get(path, wrapped)  # and HEAD, answered with GET's headers
        else:
            app.router.add_route(method, path, wrapped)
