"""create_app(settings) -> web.Application: routes, middlewares, upstream session, registry."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from localrouter.api import cache_clear, cache_stats, health, providers
from localrouter.api_models import DetailedCache, detailed_models
from localrouter.cache import Clock
from localrouter.catalog import CatalogStore
from localrouter.config import EMBEDDED_DEFAULT, Settings
from localrouter.derived import DerivedCache
from localrouter.errors import LocalRouterError, error_body
from localrouter.log import CURRENT_REQUEST, SecretRedactor, request_id
from localrouter.proxy import chat_completions, completions, embeddings
from localrouter.registry import Registry
from localrouter.reload import ConfigReloader
from localrouter.responses import json_response
from localrouter.state import (
    BARE_IDS,
    CACHE_DIR,
    CLOCK,
    CONFIG_ORIGIN,
    DETAILED_CACHE,
    HTTP_SESSION,
    MODELS_VIEW,
    REDACTOR,
    REGISTRY,
    RELOADER,
    UNIQUE_CACHE,
)
from localrouter.unique import UniqueCache, unique_model, unique_models, warm_common_queries
from localrouter.views import ModelsView, list_models, retrieve_model

log = structlog.get_logger(__name__)

MAX_REQUEST_BYTES = 32 * 1024 * 1024


def create_app(
    settings: Settings,
    *,
    clock: Clock = time.time,
    config_origin: str = EMBEDDED_DEFAULT,
    config_path: Path | None = None,
    cache_dir: Path | None = None,
    handle_sighup: bool = False,
) -> web.Application:
    """The daemon. `config_path` is watched and reloaded (and on SIGHUP when `handle_sighup`);
    `cache_dir` holds what it keeps on disk (an updated catalog, persisted lists); None for
    either turns that off."""
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app[CLOCK] = clock
    app[REDACTOR] = SecretRedactor(settings.secret_values)
    app[CACHE_DIR] = cache_dir
    app[CONFIG_ORIGIN] = config_origin
    app[MODELS_VIEW] = ModelsView()
    app[DETAILED_CACHE] = DetailedCache()
    app[UNIQUE_CACHE] = UniqueCache()
    app[BARE_IDS] = DerivedCache(capacity=1)
    app.cleanup_ctx.append(_upstream_session)
    app.cleanup_ctx.append(_registry(settings))
    app.cleanup_ctx.append(_reloader(config_path, handle_sighup))
    routes = [
        ("GET", "/v1/models", list_models),
        ("GET", "/v1/models/{model_id:.+}", retrieve_model),
        ("GET", "/api/models", detailed_models),
        ("GET", "/api/models/unique", unique_models),
        ("GET", "/api/models/unique/{model_id:.+}", unique_model),
        ("GET", "/api/cache/stats", cache_stats),
        ("POST", "/v1/chat/completions", chat_completions),
        ("POST", "/v1/completions", completions),
        ("POST", "/v1/embeddings", embeddings),
        ("GET", "/health", health),
        ("GET", "/api/providers", providers),
        ("POST", "/api/cache/clear", cache_clear),
        ("*", "/{tail:.*}", no_route),  # last: only what nothing else matched
    ]
    for method, path, handler in routes:
        app.router.add_route(method, path, openai_errors(handler))
    return app


PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "WS_PROXY", "WSS_PROXY")


async def _upstream_session(app: web.Application) -> AsyncIterator[None]:
    # Honour HTTPS_PROXY/NO_PROXY as users behind a corporate proxy expect, but only when one is
    # set: aiohttp reads the environment on every request then, which bench/proxy.py measured
    # at about 0.9 ms of the proxy's added latency.
    trust_env = any(
        os.environ.get(name) or os.environ.get(name.lower()) for name in PROXY_VARIABLES
    )
    async with aiohttp.ClientSession(trust_env=trust_env, raise_for_status=False) as session:
        app[HTTP_SESSION] = session
        yield


def _registry(settings: Settings) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        catalog = CatalogStore(app[CACHE_DIR])
        cache_dir = app[CACHE_DIR]
        registry = Registry(
            settings,
            app[HTTP_SESSION],
            clock=app[CLOCK],
            catalog=catalog,
            lists_dir=cache_dir / "lists" if cache_dir else None,
        )
        app[REGISTRY] = registry
        registry.warm_up()
        warming = asyncio.create_task(warm_common_queries(app))
        yield
        warming.cancel()
        await asyncio.gather(warming, return_exceptions=True)
        await registry.close()

    return context


def _reloader(
    path: Path | None, handle_sighup: bool
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        reloader = ConfigReloader(app[REGISTRY], path, redactor=app[REDACTOR])
        app[RELOADER] = reloader
        stop = asyncio.Event()
        watching = asyncio.create_task(reloader.watch(stop))
        pending: set[asyncio.Task[bool]] = set()
        loop = asyncio.get_running_loop()
        if handle_sighup:

            def on_sighup() -> None:
                task = asyncio.create_task(reloader.reload())
                pending.add(task)
                task.add_done_callback(pending.discard)

            loop.add_signal_handler(signal.SIGHUP, on_sighup)
        yield
        if handle_sighup:
            loop.remove_signal_handler(signal.SIGHUP)
        stop.set()
        await asyncio.gather(watching, *pending, return_exceptions=True)

    return context


def openai_errors(handler: Handler) -> Handler:
    """Every error leaves as OpenAI-shaped JSON; no stack trace ever reaches a client.

    A wrapper per route rather than an aiohttp middleware: the middleware machinery cost about a
    quarter of the cached /v1/models throughput in bench/models.py.
    """

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        # Each request is handled in its own context: nothing to reset afterwards. The id itself
        # is made only when something logs or fails (see log.request_id).
        CURRENT_REQUEST.set(request)
        response: web.StreamResponse
        try:
            return await handler(request)
        except LocalRouterError as exc:
            response = json_response(exc.to_body(), status=exc.status)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = _http_error(request, exc)
        except Exception:
            log.exception("http.unhandled_error", path=request.path)
            body = error_body(
                "Internal error in localrouter; see its log.", "server_error", "internal"
            )
            response = json_response(body, status=500)
        response.headers["X-Request-Id"] = request_id(request)
        return response

    return wrapped


async def no_route(request: web.Request) -> web.StreamResponse:
    """The catch-all route: 405 where the path exists with other methods, else 404."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        match, methods = await resource.resolve(request)
        if match is None:
            allowed |= methods
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    messages = {
        404: f"No route for {request.method} {request.path}. localrouter serves /v1/models, "
        "/v1/chat/completions, /v1/completions, /v1/embeddings, /api/* and /health.",
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
