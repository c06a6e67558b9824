"""The /api/* management endpoints and /health: cache statistics and clearing, provider status."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aiohttp import web

from localrouter.base.errors import BadRequest
from localrouter.base.secrets import display_url
from localrouter.config.live import LiveSettings
from localrouter.config.reload import ConfigReloader
from localrouter.http.bodies import json_response, request_json
from localrouter.lists.fleet import Fleet
from localrouter.lists.instance import Instance
from localrouter.lists.registry import Registry


def instance_status(instance: Instance) -> dict[str, Any]:
    return {
        "type": instance.settings.type,
        **asdict(instance.cache.status()),
        **asdict(instance.cache.counters),
    }


class Admin:
    """The management endpoints, for the app's registry, fleet, reloader and live config."""

    def __init__(
        self,
        registry: Registry,
        fleet: Fleet | None,
        reloader: ConfigReloader,
        live: LiveSettings,
    ) -> None:
        self._registry, self._fleet, self._reloader, self._live = registry, fleet, reloader, live

    async def cache_stats(self, request: web.Request) -> web.Response:
        registry = self._registry
        # First: reading them adds the hits served from the snapshot. Removed instances count too,
        # so totals never go back.
        everyone = registry.counters().values()
        per_instance = {
            instance.name: instance_status(instance) for instance in registry.instances()
        }
        totals = {
            counter: sum(getattr(counters, counter) for counters in everyone)
            for counter in ("hits", "misses", "refreshes", "fallbacks", "upstream_calls")
        }
        lookups = totals["hits"] + totals["misses"]
        hit_rate = round(100.0 * totals["hits"] / lookups, 2) if lookups else 0.0
        shown = {**totals, "hit_rate_percent": hit_rate, "instances": per_instance}
        if (fleet := self._fleet) is not None:
            # Every daemon's totals, summed; null while Redis cannot be reached.
            shown["fleet"] = await fleet.fleet_counters()
        return json_response(shown)

    async def cache_clear(self, request: web.Request) -> web.Response:
        """Mark lists expired (kept and served as stale until refreshed): one instance, or all."""
        body = await request_json(request, empty={})
        registry = self._registry
        name = body.get("instance") if isinstance(body, dict) else None
        if not isinstance(body, dict) or (name is not None and not isinstance(name, str)):
            raise BadRequest(
                'Send {"instance": "<name>"} or {} for all instances.', param="instance"
            )
        if name is not None:
            registry.named(name, "instance")
        cleared = registry.expire([name] if name else None)
        shown: dict[str, Any] = {"success": True, "cleared": cleared}
        if (fleet := self._fleet) is not None:
            await fleet.expire_everywhere(cleared)
            shown["fleet"] = (
                "expired on every daemon" if fleet.up else "redis unreachable: here only"
            )
        return json_response(shown)

    async def providers(self, request: web.Request) -> web.Response:
        registry = self._registry
        listing = []
        for instance in registry.instances():
            status = instance.cache.status()
            listing.append(
                {
                    "name": instance.name,
                    "type": instance.settings.type,
                    "base_url": display_url(instance.settings.resolved_base_url),
                    "status": "ok" if status.last_error is None else "error",
                    **asdict(status),
                }
            )
            if instance.keys is not None:
                listing[-1]["keys"] = instance.keys.status()
        return json_response({"providers": listing})

    async def health(self, request: web.Request) -> web.Response:
        """ok, or degraded with the reasons: a config error, a needed restart, failing instances.
        A local server the embedded default only probes for is a note when it is not running."""
        reload_state = self._reloader.state
        settings = self._live.current
        failing: dict[str, str] = {}
        notes = list(settings.notes)
        refused_keys = []
        for instance in self._registry.instances():
            if instance.keys is not None:
                refused_keys += [
                    f"instance {instance.name}: {why}" for why in instance.keys.refused()
                ]
            error = instance.cache.last_error
            if error is None:
                continue
            failing[instance.name] = error
        reasons = []
        if reload_state.error:
            reasons.append(f"config: {reload_state.error}")
        reasons += reload_state.restart_needed
        reasons += [f"instance {name}: {error}" for name, error in failing.items()]
        reasons += refused_keys
        fleet = self._fleet
        if fleet is not None and not fleet.up:
            reasons.append(
                f"fleet: redis unreachable ({fleet.problem}); serving this daemon's own lists "
                "and counting limits and budgets in this daemon alone, reconnecting"
            )
        shown_fleet = (
            {"redis": fleet.shown_url, "connected": fleet.up, "daemon": fleet.daemon}
            if fleet is not None
            else None
        )
        return json_response(
            {
                "status": "degraded" if reasons else "ok",
                "reasons": reasons,
                "config": {
                    "origin": self._live.origin,
                    "error": reload_state.error,
                    "restart_needed": reload_state.restart_needed,
                    "reloads": reload_state.reloads,
                },
                "failing_instances": failing,
                "notes": notes,
                "fleet": shown_fleet,
            }
        )
