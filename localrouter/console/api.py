"""The endpoints only the console needs (the rest of its data comes from the endpoints the
CLI reads):

- `GET /api/config`: the effective config as `localrouter check` shows it (no secret), and the
  last reload's error with its file and key path;
- `GET /api/clients`: each client's name, allowlist and limits (never its token);
- `GET /api/models/about?id=`: what the config makes of one model: the aliases that point at
  it, whether it is hidden, which clients may call it (`clients_configured`: whether there
  are any), its fallbacks; and `catalog`: the catalog entry the model's instance matches it
  to (`id`, `matched_via`, and `fields`, the entry's values as ModelInfo names them, prices
  in USD per token), or null. The Models page tells where each field came from with it: a
  value equal to the catalog's is shown as the catalog's (a provider stating the same value
  cannot be told apart: the provider's own list is not kept). The catalog is the one `catalog`
  gives (app.py may hand it the daemon's CatalogStore.current), else the embedded one, read
  off the event loop the first time it is asked for."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from localrouter.base.errors import BadRequest
from localrouter.catalog import Catalog
from localrouter.config.control import may_call
from localrouter.config.describe import describe
from localrouter.config.live import LiveSettings
from localrouter.config.loading import LoadedConfig
from localrouter.config.reload import ConfigReloader
from localrouter.http.bodies import JSON

ADMIN_PATHS = frozenset({"/api/config", "/api/clients", "/api/models/about"})


class ConsoleEndpoints:
    def __init__(
        self, live: LiveSettings, reloader: ConfigReloader, catalog: Callable[[], Catalog]
    ) -> None:
        self._live, self._reloader = live, reloader
        self._catalog = catalog  # the daemon's (loaded when the app starts)

    async def config(self, _: web.Request) -> web.Response:
        live, state = self._live, self._reloader.state
        shown = {
            "origin": live.origin,
            "text": describe(LoadedConfig(live.current, live.origin)),
            "error": state.error,
            "restart_needed": state.restart_needed,
            "reloads": state.reloads,
        }
        return _json(shown)

    async def clients(self, _: web.Request) -> web.Response:
        settings = self._live.current
        shown = [
            {
                "name": client.name,
                "allow": client.allow,
                "limits": (client.limits or settings.limits).set,
                "own_limits": client.limits is not None,
                "model_limits": {glob: v.set for glob, v in client.model_limits.items()},
            }
            for client in settings.clients
        ]
        return _json({"data": shown, "default_limits": settings.limits.set})

    async def about(self, request: web.Request) -> web.Response:
        model_id = request.query.get("id", "").strip()
        if not model_id:
            raise BadRequest("id: the model's id is required.", param="id")
        rules = self._live.rules
        bare = model_id.partition("/")[2]
        aliases = sorted(
            alias for alias, target in rules.aliases.items() if target in (model_id, bare)
        )
        shown = {
            "id": model_id,
            "aliases": aliases,
            "hidden": rules.hidden(model_id),
            "clients": sorted(
                client.name
                for client in rules.clients.values()
                if may_call(client, model_id, model_id)
            ),
            "clients_configured": bool(rules.clients),
            "fallbacks": list(rules.fallbacks.get(model_id, ())),
            "catalog": self._catalog_entry(model_id),
        }
        return _json(shown)

    def _catalog_entry(self, model_id: str) -> dict[str, Any] | None:
        """The catalog's entry for `instance/upstream-id`, as the instance's enrichment
        finds it (its catalog provider: the config's, else its type's)."""
        instance, _, upstream_id = model_id.partition("/")
        if not upstream_id:
            return None
        provider = next((p for p in self._live.current.providers if p.name == instance), None)
        scope = provider.catalog_scope if provider is not None else None
        found = self._catalog().match(upstream_id, scope)
        if found is None:
            return None
        return {"id": found.id, "matched_via": found.matched_via, "fields": found.entry}


def _json(shown: object) -> web.Response:
    return web.Response(body=orjson.dumps(shown), content_type=JSON)
