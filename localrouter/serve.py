"""Running the daemon: logging, the aiohttp runner, and a clean exit."""

from __future__ import annotations

from pathlib import Path

import structlog
from aiohttp import web

from localrouter.app import create_app
from localrouter.config import Settings
from localrouter.log import configure_logging
from localrouter.state import REDACTOR

log = structlog.get_logger(__name__)


def run(
    settings: Settings,
    *,
    config_origin: str,
    config_path: Path | None = None,
    log_level: str = "info",
    cache_dir: Path | None = None,
) -> int:
    app = create_app(
        settings,
        config_origin=config_origin,
        config_path=config_path,
        cache_dir=cache_dir,
        handle_sighup=True,
    )
    configure_logging(log_level, redactor=app[REDACTOR])
    host, port = settings.server.host, settings.server.port
    log.info(
        "server.starting",
        url=f"http://{host}:{port}/v1",
        config=config_origin,
        instances=[p.name for p in settings.enabled_providers],
    )
    # handler_cancellation: a client that leaves cancels its request, and so the upstream call.
    web.run_app(app, host=host, port=port, access_log=None, print=None, handler_cancellation=True)
    return 0
