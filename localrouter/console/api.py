"""The endpoints only the console needs (the rest of its data comes from the endpoints the
CLI reads):

- `GET /api/config`: the effective config as `localrouter check` shows it (no secret), and the
  last reload's error with its file and key path;
- `GET /api/clients`: each client's name, allowlist and limits (never its token);
- `GET /api/models/about?id=`: what the config makes of one model: the aliases that point at
  it, whether it is hidden, and which clients may call it."""

from __future__ import annotations

import orjson
from aiohttp import web

from localrouter.base.errors import BadRequest
from localrouter.config.control import may_call
from localrouter.config.describe import describe
from localrouter.config.live import LiveSettings
from localrouter.config.loading import LoadedConfig
from localrouter.config.reload import ConfigReloader
from localrouter.http.bodies import JSON

ADMIN_PATHS = frozenset({"/api/config", "/api/clients", "/api/models/about"})


class ConsoleEndpoints:
    def __init__(self, live: LiveSettings, reloader: ConfigReloader) -> None:
        self._live, self._reloader = live, reloader

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
            "fallbacks": list(rules.fallbacks.get(model_id, ())),
        }
        return _json(shown)


def _json(shown: object) -> web.Response:
    return web.Response(body=orjson.dumps(shown), content_type=JSON)
