"""Running the daemon: bind, tell systemd, serve until SIGTERM/SIGINT, then stop gracefully."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from localrouter.app import COMPONENTS, create_app
from localrouter.base.errors import ConfigError
from localrouter.base.log import configure_logging
from localrouter.base.offload import collect_young_less_often
from localrouter.config.settings import Settings
from localrouter.systemd import Notifier

log = structlog.get_logger(__name__)

GIL_SWITCH_SECONDS = 0.0005
LISTEN_BACKLOG = 128  # aiohttp's own default
# How long requests in flight may take to finish once a stop is asked for.
SHUTDOWN_GRACE_SECONDS = 15.0


def run(
    settings: Settings,
    *,
    config_origin: str,
    config_path: Path | None = None,
    server_overrides: Mapping[str, Any] | None = None,
    log_level: str = "info",
    cache_dir: Path | None = None,
    state_dir: Path | None = None,
) -> int:
    try:
        loop_name, loop_factory = event_loop(os.environ.get(EVENT_LOOP_VARIABLE, ""))
    except ConfigError as exc:
        print(f"localrouter: {exc}", file=sys.stderr)
        return 2
    app = create_app(
        settings,
        config_origin=config_origin,
        config_path=config_path,
        server_overrides=server_overrides,
        cache_dir=cache_dir,
        state_dir=state_dir,
        handle_sighup=True,
    )
    configure_logging(log_level, redactor=app[COMPONENTS].redactor)
    # While a worker thread parses or renders a long list, the loop thread waits for the GIL
    # after every system call, up to the switch interval each time (5 ms by default): a body
    # read in 460 chunks stalled the loop 300 ms (bench/loop_stall.py). A shorter interval
    # bounds each wait; with no worker busy it costs nothing.
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    log.info("server.event_loop", loop=loop_name)
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(serve(app, settings, Notifier(), config_origin=config_origin))


# Which event loop to serve on: "uvloop", "asyncio", or unset for uvloop where it is installed.
EVENT_LOOP_VARIABLE = "LOCALROUTER_EVENT_LOOP"
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def event_loop(asked: str) -> tuple[str, LoopFactory | None]:
    """The loop's name and factory (None: asyncio's default). uvloop is a dependency wherever
    it builds; where it is absent the standard loop serves, and says so in its name."""
    if asked not in ("", "uvloop", "asyncio"):
        raise ConfigError(
            f"{EVENT_LOOP_VARIABLE}={asked!r}: use 'uvloop' or 'asyncio' (or unset it)."
        )
    if asked == "asyncio":
        return "asyncio", None
    try:
        import uvloop
    except ImportError:
        if asked == "uvloop":
            raise ConfigError(
                f"{EVENT_LOOP_VARIABLE}=uvloop, but uvloop is not installed: pip install uvloop"
            ) from None
        return "asyncio (uvloop is not installed)", None
    return "uvloop", uvloop.new_event_loop


def bind(settings: Settings) -> list[socket.socket]:
    """Listening sockets for the main port, and the Ollama one when server.ollama_port is set
    (same app, same guard: /api/* for Ollama's clients and /v1/* for Copilot, which calls
    both there): every address the host names, as asyncio's own server binds them. Bound
    before the app starts, so that a busy port stops the daemon before it fetches anything."""
    server = settings.server
    ports = [server.port] if server.ollama_port is None else [server.port, server.ollama_port]
    sockets: list[socket.socket] = []
    try:
        for port in ports:
            found = socket.getaddrinfo(
                server.host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
            for family, kind, proto, _, address in dict.fromkeys(found):
                sock = socket.socket(family, kind, proto)
                sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:  # each family its own socket, as asyncio does
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                sock.listen(LISTEN_BACKLOG)
                sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


async def listen(runner: web.AppRunner, sockets: list[socket.socket]) -> None:
    """Serve the (started) app on sockets `bind` made."""
    for sock in sockets:
        await web.SockSite(runner, sock).start()


async def serve(
    app: web.Application, settings: Settings, notifier: Notifier, *, config_origin: str
) -> int:
    host, port = settings.server.host, settings.server.port
    # handler_cancellation: a client that leaves cancels its request, and so the upstream call.
    runner = web.AppRunner(
        app,
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=SHUTDOWN_GRACE_SECONDS,
        handle_signals=False,
    )
    try:
        sockets = bind(settings)
    except OSError as exc:
        log.error(
            "server.bind_failed",
            address=f"{host}:{port}",
            ollama_port=settings.server.ollama_port,
            error=exc.strerror,
            hint="is another localrouter (or Ollama, on server.ollama_port) running? choose "
            "another with --port, server.port or server.ollama_port",
        )
        return 1
    await runner.setup()
    await listen(runner, sockets)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # What start-up made (modules, config, routes: some 80,000 objects) lives as long as the
    # daemon. Unfrozen, every full collection walks it, holding the GIL: 70-90 ms, every few
    # hundred requests under load, a fifth of the CPU time of proxied requests (measured with
    # bench/bridges.py). Frozen, the collector walks only what requests leave behind.
    gc.freeze()
    collect_young_less_often()
    url = f"http://{host}:{port}/v1"
    instances = [p.name for p in settings.enabled_providers]
    log.info("server.listening", url=url, config=config_origin, instances=instances)
    if warning := settings.server.exposure_warning():
        log.warning("server.exposed", warning=warning)
    for note in settings.notes:
        log.warning("config.note", note=note)
    notifier.ready(f"Serving {len(instances)} provider instances on {url}")
    watchdog = asyncio.create_task(notifier.keep_watchdog_fed())
    await stop.wait()
    log.info("server.stopping", grace_seconds=SHUTDOWN_GRACE_SECONDS)
    notifier.stopping()
    watchdog.cancel()
    await asyncio.gather(watchdog, return_exceptions=True)
    await runner.cleanup()  # stops listening, lets requests finish, writes pending lists
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(signum)
    log.info("server.stopped")
    return 0
