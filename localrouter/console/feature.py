"""The console as app.py builds it: its pages, its assets and its endpoints."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp.typedefs import Handler

from localrouter.catalog import Catalog
from localrouter.config.live import LiveSettings
from localrouter.config.reload import ConfigReloader
from localrouter.console.api import ADMIN_PATHS, ConsoleEndpoints
from localrouter.console.assets import ConsoleAssets

PAGE_PATHS = ("/ui", "/ui/{page:.*}")
ASSET_PATH = "/ui/assets/{version}/{name:.+}"
# The pages and assets load without a token: they hold no data (the script asks for one).
OPEN_PATHS = frozenset({*PAGE_PATHS, ASSET_PATH})


class Console:
    def __init__(
        self, live: LiveSettings, reloader: ConfigReloader, catalog: Callable[[], Catalog]
    ) -> None:
        self.assets = ConsoleAssets()
        self.endpoints = ConsoleEndpoints(live, reloader, catalog)

    def routes(self) -> list[tuple[str, str, Handler]]:
        endpoints = self.endpoints
        return [
            ("GET", ASSET_PATH, self.assets.asset),
            *(("GET", path, self.assets.page) for path in PAGE_PATHS),
            ("GET", "/api/config", endpoints.config),
            ("GET", "/api/clients", endpoints.clients),
            ("GET", "/api/models/about", endpoints.about),
        ]


__all__ = ["ADMIN_PATHS", "OPEN_PATHS", "Console"]
