"""create_app(settings) -> web.Application: live settings, the guard, routes, the upstream session
and the registry."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path

import aiohttp
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from localrouter.base.errors import LocalRouterError
from localrouter.base.log import SecretRedactor
from localrouter.catalog import CatalogStore
from localrouter.config.live import LiveSettings
from localrouter.config.loading import EMBEDDED_DEFAULT
from localrouter.config.reload import ConfigReloader, ReloadState
from localrouter.config.settings import Settings
from localrouter.http.admin import cache_clear, cache_stats, health, providers
from localrouter.http.endpoint import MAX_REQUEST_BYTES, Guard, add_routes, no_route
from localrouter.http.metrics import Metrics, metrics_endpoint
from localrouter.lists.cache import Clock
from localrouter.lists.derived import DerivedCache
from localrouter.lists.fleet import Fleet
from localrouter.lists.registry import Registry
from localrouter.protocols import openai as chat_api
from localrouter.protocols.anthropic.front import count_tokens, messages
from localrouter.protocols.attempts import Upstreams
from localrouter.protocols.ollama import front as ollama_api
from localrouter.protocols.responses.front import delete as delete_response
from localrouter.protocols.responses.front import responses
from localrouter.protocols.responses.front import retrieve as retrieve_response
from localrouter.protocols.responses.store import ResponseStore
from localrouter.state import (
    ANTHROPIC_MODELS,
    CACHE_DIR,
    CLOCK,
    DETAILED_CACHE,
    FLEET,
    GUARD,
    HTTP_SESSION,
    METRICS,
    MODEL_INDEX,
    MODELS_VIEW,
    REDACTOR,
    REGISTRY,
    RELOADER,
    RESPONSE_STORE,
    SETTINGS,
    UNIQUE_CACHE,
    VIEW_CACHES,
)
from localrouter.upstream.client import SessionTransport
from localrouter.views import ollama as ollama_models
from localrouter.views.detailed import DetailedCache, detailed_models
from localrouter.views.lmstudio import lmstudio_model
from localrouter.views.merged import (
    ListModels,
    ModelsView,
    ollama_show,
    retrieve_model,
)
from localrouter.views.table import VIEWS, ViewRoute, view_caches
from localrouter.views.unique import UniqueCache, unique_model, unique_models, warm_common_queries

log = structlog.get_logger(__name__)


def _reload_state(app: web.Application) -> ReloadState | None:
    reloader = app.get(RELOADER)
    return reloader.state if reloader is not None else None


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
    live = app[SETTINGS] = LiveSettings(settings, origin=config_origin)
    guard = app[GUARD] = Guard(settings.server, live.rules.clients)
    live.subscribe(lambda applied: guard.use(applied.server, live.rules.clients))
    metrics = Metrics()
    metrics.watch(lambda: app.get(REGISTRY), lambda: _reload_state(app))
    app[METRICS] = metrics
    models_view = app[MODELS_VIEW] = ModelsView()
    app[DETAILED_CACHE] = DetailedCache()
    app[UNIQUE_CACHE] = UniqueCache()
    app[MODEL_INDEX] = DerivedCache(capacity=1)
    app[ANTHROPIC_MODELS] = DerivedCache(capacity=64)  # per config and client (ShapeKey)
    caches = app[VIEW_CACHES] = view_caches()
    app[RESPONSE_STORE] = ResponseStore()
    upstreams = Upstreams(live, metrics)  # its registry comes when the app starts
    app.cleanup_ctx.append(_upstream_session)
    app.cleanup_ctx.append(_registry(settings, upstreams))
    app.cleanup_ctx.append(_reloader(config_path, handle_sighup))
    listing = ListModels(models_view)
    ollama = ollama_routes(upstreams)
    routes: list[tuple[str, str, Handler]] = [
        ("GET", "/v1/models", listing),
        ("GET", "/v1/models/{model_id:.+}", retrieve_model),
        ("GET", "/api/models", detailed_models),
        ("GET", "/api/models/unique", unique_models),
        ("GET", "/api/models/unique/{model_id:.+}", unique_model),
        ("GET", "/api/cache/stats", cache_stats),
        *chat_api.routes(upstreams),
        ("POST", "/v1/messages", partial(messages, upstreams)),
        ("POST", "/v1/responses", partial(responses, upstreams)),
        ("GET", "/v1/responses/{response_id}", retrieve_response),
        ("DELETE", "/v1/responses/{response_id}", delete_response),
        ("POST", "/v1/messages/count_tokens", count_tokens),
        ("GET", "/health", health),
        ("GET", "/metrics", metrics_endpoint),
        ("GET", "/api/providers", providers),
        ("POST", "/api/cache/clear", cache_clear),
        *ollama,
        *(
            ("GET", path, ViewRoute(view, models_view, caches))
            for view in VIEWS
            for path in view.paths
        ),
        ("GET", "/api/v0/models/{model_id:.+}", lmstudio_model),
        ("*", "/{tail:.*}", no_route),  # last: only what nothing else matched
    ]
    shapes = dict.fromkeys(ANTHROPIC_PATHS, LocalRouterError.to_anthropic_body)
    shapes.update((path, LocalRouterError.to_ollama_body) for _, path, _ in ollama)
    shapes["/api/tags"] = LocalRouterError.to_ollama_body
    add_routes(app, routes, open_paths={"/health"}, error_shapes=shapes, admin_paths=ADMIN_PATHS)
    return app


def ollama_routes(upstreams: Upstreams) -> tuple[tuple[str, str, Handler], ...]:
    """Ollama's API, for the tools that speak only it (ollama_models.py, ollama_api.py)."""
    calls = ollama_api.routes(upstreams)
    return (
        ("GET", "/api/version", ollama_models.version),
        ("POST", "/api/show", ollama_show),
        ("GET", "/api/ps", ollama_models.running),
        *(("POST", path, handler) for path, handler in calls.items()),
        ("POST", "/api/pull", ollama_api.manage),
        ("POST", "/api/push", ollama_api.manage),
        ("POST", "/api/create", ollama_api.manage),
        ("POST", "/api/copy", ollama_api.manage),
        ("DELETE", "/api/delete", ollama_api.manage),
        ("POST", "/api/blobs/{digest}", ollama_api.manage),
    )


ANTHROPIC_PATHS = frozenset({"/v1/messages", "/v1/messages/count_tokens"})
# Once clients exist, these need the admin token (server.auth_token): they show or change
# every instance, whatever a client's allowlist.
ADMIN_PATHS = frozenset({"/api/cache/clear", "/api/cache/stats", "/api/providers", "/metrics"})
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


def _registry(
    settings: Settings, upstreams: Upstreams
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        catalog = CatalogStore(app[CACHE_DIR])
        await asyncio.to_thread(catalog.current)  # loaded before the first fetch needs it
        cache_dir = app[CACHE_DIR]
        fleet = app[FLEET] = Fleet(settings.fleet, app[CLOCK]) if settings.fleet.enabled else None
        if fleet is not None:
            await fleet.start()  # before the first fetch, so that it can be the fleet's one
        registry = Registry(
            settings,
            SessionTransport(app[HTTP_SESSION]),
            clock=app[CLOCK],
            catalog=catalog,
            lists_dir=cache_dir / "lists" if cache_dir else None,
            fleet=fleet,
        )
        if fleet is not None:
            fleet.counters = registry.counters
        app[SETTINGS].subscribe(registry.apply)
        app[REGISTRY] = upstreams.registry = registry
        app[MODELS_VIEW].serve_from(registry, app[SETTINGS])
        registry.warm_up()
        warming = asyncio.create_task(warm_common_queries(app))
        yield
        warming.cancel()
        await asyncio.gather(warming, return_exceptions=True)
        await registry.close()
        if fleet is not None:
            await fleet.close()

    return context


def _reloader(
    path: Path | None, handle_sighup: bool
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        reloader = ConfigReloader(app[SETTINGS], path, redactor=app[REDACTOR])
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
