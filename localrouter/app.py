"""The composition root: create_app(settings) builds every component, hands each handler its
dependencies, and starts and stops what runs in the background (the upstream session, the
fleet link, list refreshes, the config watcher). Nothing else looks components up."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from localrouter.base.errors import ANTHROPIC, OLLAMA, OPENROUTER
from localrouter.base.log import SecretRedactor
from localrouter.catalog import CatalogStore
from localrouter.config.live import LiveSettings
from localrouter.config.loading import EMBEDDED_DEFAULT
from localrouter.config.reload import ConfigReloader
from localrouter.config.settings import Settings
from localrouter.console.feature import ADMIN_PATHS as CONSOLE_ADMIN_PATHS
from localrouter.console.feature import OPEN_PATHS as CONSOLE_OPEN_PATHS
from localrouter.console.feature import Console
from localrouter.discovery.runner import Discovery, DiscoveryEndpoint
from localrouter.http.admin import Admin
from localrouter.http.endpoint import MAX_REQUEST_BYTES, NoRoute, add_routes
from localrouter.http.guard import GUARD, Guard
from localrouter.http.metrics import Metrics
from localrouter.limits.gate import Limits
from localrouter.limits.report import LimitEndpoints, rebuild
from localrouter.lists.cache import Clock
from localrouter.lists.fleet import Fleet
from localrouter.lists.registry import Registry
from localrouter.lists.resolve import Resolver
from localrouter.protocols import openai
from localrouter.protocols.anthropic.front import Messages
from localrouter.protocols.attempts import Upstreams
from localrouter.protocols.ollama import front as ollama
from localrouter.protocols.responses.front import Responses
from localrouter.protocols.responses.store import ResponseStore
from localrouter.reqlog.feature import RequestLog
from localrouter.telemetry.tracing import Tracing
from localrouter.upstream.client import SessionTransport
from localrouter.usage.feature import ADMIN_PATHS as USAGE_ADMIN_PATHS
from localrouter.usage.feature import Usage
from localrouter.usage.ledger import Ledger
from localrouter.usage.recording import Recorder
from localrouter.views.merged import ModelsView
from localrouter.views.table import model_views
from localrouter.views.unique import UniqueCache

Route = tuple[str, str, Handler]


@dataclass(frozen=True, slots=True)
class Components:
    """What the daemon is made of, built once by create_app (tests and serve.py read it)."""

    clock: Clock
    redactor: SecretRedactor
    live: LiveSettings
    guard: Guard
    metrics: Metrics
    registry: Registry
    fleet: Fleet | None
    reloader: ConfigReloader
    resolver: Resolver
    models: ModelsView
    response_store: ResponseStore
    unique: UniqueCache
    ledger: Ledger
    recorder: Recorder
    limits: Limits
    request_log: RequestLog


COMPONENTS: web.AppKey[Components] = web.AppKey("components")


def create_app(
    settings: Settings,
    *,
    clock: Clock = time.time,
    config_origin: str = EMBEDDED_DEFAULT,
    config_path: Path | None = None,
    server_overrides: Mapping[str, Any] | None = None,
    cache_dir: Path | None = None,
    state_dir: Path | None = None,
    handle_sighup: bool = False,
) -> web.Application:
    """The daemon. `config_path` is watched and reloaded (and on SIGHUP when `handle_sighup`),
    `server_overrides` (the command line's) applied over every reload; `cache_dir` holds what
    it keeps on disk (an updated catalog, persisted lists), `state_dir` the usage ledger
    (unless `usage.path` says where); None for any of them turns that off."""
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    redactor = SecretRedactor(settings.secret_values)
    live = LiveSettings(settings, origin=config_origin)
    guard = app[GUARD] = Guard(settings.server, live.rules.clients)
    live.subscribe(lambda applied: guard.use(applied.server, live.rules.clients))
    transport = SessionTransport()
    catalog = CatalogStore(cache_dir)
    fleet = Fleet(settings.fleet, clock) if settings.fleet.enabled else None
    registry = Registry(
        settings,
        transport,
        clock=clock,
        catalog=catalog,
        lists_dir=cache_dir / "lists" if cache_dir else None,
        fleet=fleet,
    )
    if fleet is not None:
        fleet.counters = registry.counters
    discovery = Discovery(settings, os.environ, clock, registry.apply)
    live.subscribe(discovery.apply)  # the registry gets each config with what was found
    reloader = ConfigReloader(live, config_path, redactor=redactor, overrides=server_overrides)
    metrics = Metrics()
    metrics.watch(lambda: registry, lambda: reloader.state)
    resolver = Resolver(registry, live)
    models = ModelsView(registry, live, resolver)
    store = ResponseStore()
    views = model_views(models, resolver, clock)
    usage = Usage.build(settings, clock, state_dir, fleet)
    metrics.registry.register(usage.metrics)
    limits = Limits(live, clock, fleet=fleet)
    request_log = RequestLog(live, usage.recorder, usage.ledger, clock)
    console = Console(live, reloader, catalog.current) if settings.console.enabled else None
    limit_endpoints = LimitEndpoints(limits)
    usage.endpoints.key_limits = limit_endpoints.of_key
    parts = app[COMPONENTS] = Components(
        clock,
        redactor,
        live,
        guard,
        metrics,
        registry,
        fleet,
        reloader,
        resolver,
        models,
        store,
        views.unique.cache,
        usage.ledger,
        usage.recorder,
        limits,
        request_log,
    )
    tracing = (
        Tracing.build(settings.telemetry, settings.secret_values)
        if settings.telemetry.enabled
        else None
    )
    if tracing is not None:
        usage.recorder.observers.append(tracing.settled)
        app.cleanup_ctx.append(_closing(tracing))
    upstreams = Upstreams(live, metrics, resolver, usage.recorder, limits, tracing)
    messages = Messages(upstreams)
    responses = Responses(upstreams, store)
    admin = Admin(registry, fleet, reloader, live)
    ollama_calls = ollama_routes(upstreams)
    routes: list[Route] = [
        *views.routes,
        *openai.routes(upstreams),
        *openai.routes(upstreams, OPENROUTER_BASE, OPENROUTER),  # the same calls, its errors
        ("POST", "/v1/messages", messages.create),
        ("POST", "/v1/messages/count_tokens", messages.count_tokens),
        ("POST", "/v1/responses", responses.create),
        ("GET", "/v1/responses/{response_id}", responses.retrieve),
        ("DELETE", "/v1/responses/{response_id}", responses.delete),
        *ollama_calls,
        ("GET", "/health", admin.health),
        ("GET", "/metrics", metrics.endpoint),
        ("GET", "/api/providers", admin.providers),
        ("GET", "/api/cache/stats", admin.cache_stats),
        ("POST", "/api/cache/clear", admin.cache_clear),
        *usage.routes(OPENROUTER_BASE),
        ("GET", "/api/limits", limit_endpoints.limits),
        *request_log.routes(),
        ("GET", "/api/discovery", DiscoveryEndpoint(discovery)),
        *(console.routes() if console is not None else ()),
        ("*", f"{OPENROUTER_BASE}/{{tail:.*}}", NoRoute(guard)),  # what /api/v1 lacks
        ("*", "/{tail:.*}", NoRoute(guard)),  # last: only what nothing else matched
    ]
    shapes = dict.fromkeys(ANTHROPIC_PATHS, ANTHROPIC)
    ollama_paths = ("/api/tags", "/api/show", "/api/version", "/api/ps")
    shapes.update((path, OLLAMA) for _, path, _ in ollama_calls)
    shapes.update(dict.fromkeys(ollama_paths, OLLAMA))
    # An OpenRouter base URL: every route under it answers errors in OpenRouter's shape.
    shapes.update(
        (path, OPENROUTER) for _, path, _ in routes if path.startswith(f"{OPENROUTER_BASE}/")
    )
    add_routes(
        app,
        routes,
        guard=guard,
        metrics=metrics,
        open_paths={"/health", *CONSOLE_OPEN_PATHS},
        error_shapes=shapes,
        admin_paths=ADMIN_PATHS | USAGE_ADMIN_PATHS | CONSOLE_ADMIN_PATHS,
    )
    app.cleanup_ctx.append(_upstream_session(transport))
    app.cleanup_ctx.append(usage.running)
    app.cleanup_ctx.append(_limits(limits, usage))
    app.cleanup_ctx.append(_lists(parts, catalog, views.unique.warm_common_queries))
    app.cleanup_ctx.append(_discovering(discovery))
    app.cleanup_ctx.append(_reloader(reloader, handle_sighup))
    return app


def ollama_routes(upstreams: Upstreams) -> tuple[Route, ...]:
    """Ollama's calls and model management, for the tools that speak only Ollama (its list
    endpoints are views: views/table.py)."""
    calls = ollama.routes(upstreams)
    return (
        *(("POST", path, handler) for path, handler in calls.items()),
        ("POST", "/api/pull", ollama.manage),
        ("POST", "/api/push", ollama.manage),
        ("POST", "/api/create", ollama.manage),
        ("POST", "/api/copy", ollama.manage),
        ("DELETE", "/api/delete", ollama.manage),
        ("POST", "/api/blobs/{digest}", ollama.manage),
    )


ANTHROPIC_PATHS = frozenset({"/v1/messages", "/v1/messages/count_tokens"})
OPENROUTER_BASE = "/api/v1"  # OpenRouter's base URL: its list (a view) and calls, its errors
# Once clients exist, these need the admin token (server.auth_token): they show or change
# every instance, whatever a client's allowlist.
ADMIN_PATHS = frozenset(
    {
        "/api/cache/clear",
        "/api/cache/stats",
        "/api/providers",
        "/metrics",
        "/api/limits",
        "/api/discovery",
    }
)
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "WS_PROXY", "WSS_PROXY")

_CleanupContext = Callable[[web.Application], AsyncIterator[None]]
_Warm = Callable[[], Coroutine[Any, Any, None]]


def _upstream_session(transport: SessionTransport) -> _CleanupContext:
    async def context(_: web.Application) -> AsyncIterator[None]:
        # Honour HTTPS_PROXY/NO_PROXY as users behind a corporate proxy expect, but only when
        # one is set: aiohttp reads the environment on every request then, which
        # bench/proxy.py measured at about 0.9 ms of the proxy's added latency.
        trust_env = any(
            os.environ.get(name) or os.environ.get(name.lower()) for name in PROXY_VARIABLES
        )
        async with transport.opened(trust_env=trust_env):
            yield

    return context


def _discovering(discovery: Discovery) -> _CleanupContext:
    async def context(_: web.Application) -> AsyncIterator[None]:
        running = asyncio.create_task(discovery.run(), name="discovery")
        yield
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)

    return context


def _closing(tracing: Tracing) -> _CleanupContext:
    async def context(_: web.Application) -> AsyncIterator[None]:
        yield
        await tracing.close()  # what is left is exported

    return context


def _limits(limits: Limits, usage: Usage) -> _CleanupContext:
    async def context(_: web.Application) -> AsyncIterator[None]:
        if usage.recorder.enabled:  # the ledger is open: today's and this month's spend
            await rebuild(limits, usage.ledger)
        yield
        if limits.shared is not None:
            await limits.shared.close()

    return context


def _lists(parts: Components, catalog: CatalogStore, warm: _Warm) -> _CleanupContext:
    async def context(_: web.Application) -> AsyncIterator[None]:
        await asyncio.to_thread(catalog.current)  # loaded before the first fetch needs it
        fleet, registry = parts.fleet, parts.registry
        if fleet is not None:
            await fleet.start()  # before the first fetch, so that it can be the fleet's one
        registry.start()
        warming = asyncio.create_task(warm())
        yield
        warming.cancel()
        await asyncio.gather(warming, return_exceptions=True)
        await registry.close()
        if fleet is not None:
            await fleet.close()

    return context


def _reloader(reloader: ConfigReloader, handle_sighup: bool) -> _CleanupContext:
    async def context(_: web.Application) -> AsyncIterator[None]:
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
