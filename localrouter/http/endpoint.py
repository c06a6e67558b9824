"""What every route goes through: the guard's checks (guard.py), CORS, errors in the route's
protocol's shape, and request metrics. A wrapper per route rather than aiohttp middleware: the
middleware machinery alone cost about a quarter of the cached /v1/models throughput in
bench/models.py."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from time import perf_counter
from typing import Protocol, runtime_checkable

import structlog
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from localrouter.base.errors import OPENAI, ApiError, ErrorShape
from localrouter.base.log import CURRENT_REQUEST, RequestSlot, request_id
from localrouter.config.control import Client
from localrouter.http.bodies import json_response
from localrouter.http.guard import CLIENT, Guard, add_cors
from localrouter.http.metrics import Metrics, RouteStats

log = structlog.get_logger(__name__)

MAX_REQUEST_BYTES = 32 * 1024 * 1024
_ORIGIN = hdrs.ORIGIN


@runtime_checkable
class AnswersFromMemory(Protocol):
    """A cached-list route that can answer at once, without a coroutine to make and await:
    `now` gives the answer when the caller's list is in memory, else None (then the route is
    awaited as any other). The only sync twin of a handler: the cached views answer most
    requests so."""

    def now(self, request: web.Request, client: Client | None) -> web.StreamResponse | None: ...

    async def __call__(self, request: web.Request) -> web.StreamResponse: ...


def endpoint(
    handler: Handler,
    guard: Guard,
    stats: RouteStats,
    *,
    open_route: bool = False,
    admin_only: bool = False,
    error_shape: ErrorShape = OPENAI,
) -> Handler:
    """Wrap a handler: checks first (the client, if any, is `request[CLIENT]`), errors in the
    route's protocol's shape (OpenAI's by default), CORS when allowed, metrics. A handler that
    AnswersFromMemory is asked that first, and awaited only when it has no answer."""

    needs_token = not open_route
    record = stats.record
    now = handler.now if isinstance(handler, AnswersFromMemory) else None

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
        except ApiError as exc:
            body = error_shape.of(exc)
            response = _failed(request, json_response(body, status=exc.status))
            response.headers.update(exc.headers)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = _failed(request, _http_error(request, exc, error_shape))
        except Exception:
            log.exception("http.unhandled_error", path=request.path, request_id=request_id(request))
            message = "Internal error in localrouter; see its log."
            body = error_shape.body(message, 500, "server_error", "internal", None)
            response = _failed(request, json_response(body, status=500))
        if guard.cors_origins and _ORIGIN in request.headers and not response.prepared:
            add_cors(request, response)  # a stream did this itself before it started
        record(response.status, perf_counter() - started, client)
        return response

    return wrapped


def _failed(request: web.Request, response: web.Response) -> web.Response:
    response.headers["X-Request-Id"] = request_id(request)
    return response


class NoRoute:
    """The catch-all route: CORS preflights, 405 where the path has other methods, else 404."""

    def __init__(self, guard: Guard) -> None:
        self._guard = guard

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        return await _no_route(request, self._guard)


async def _no_route(request: web.Request, guard: Guard) -> web.StreamResponse:
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        match, methods = await resource.resolve(request)
        if match is None:
            allowed |= methods
    origin = request.headers.get("Origin", "")
    preflight = request.method == "OPTIONS" and allowed and origin
    if preflight and guard.allows_origin(origin):
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


def _http_error(request: web.Request, exc: web.HTTPException, shape: ErrorShape) -> web.Response:
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
    body = shape.body(message, exc.status, error_type, code, None)
    response = json_response(body, status=exc.status)
    if allow := exc.headers.get("Allow"):
        response.headers["Allow"] = allow
    return response


def add_routes(
    app: web.Application,
    routes: Iterable[tuple[str, str, Handler]],
    *,
    guard: Guard,
    metrics: Metrics,
    open_paths: set[str],
    error_shapes: Mapping[str, ErrorShape] | None = None,
    admin_paths: frozenset[str] = frozenset(),
) -> None:
    """`open_paths` need no token; `admin_paths` need the admin's once clients exist;
    `error_shapes` renders errors on a path in its protocol's shape (OpenAI's otherwise)."""
    for method, path, handler in routes:
        stats = metrics.route("unmatched" if path.endswith("{tail:.*}") else path)
        wrapped = endpoint(
            handler,
            guard,
            stats,
            open_route=path in open_paths,
            admin_only=path in admin_paths,
            error_shape=(error_shapes or {}).get(path, OPENAI),
        )
        if method == "GET":
            app.router.add_get(path, wrapped)  # and HEAD, answered with GET's headers
        else:
            app.router.add_route(method, path, wrapped)
