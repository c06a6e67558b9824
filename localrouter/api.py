"""The /api/* management endpoints: cache statistics and provider status."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aiohttp import web

from localrouter.registry import Instance
from localrouter.responses import json_response
from localrouter.state import REGISTRY


def instance_status(instance: Instance) -> dict[str, Any]:
    return {
        "type": instance.settings.type,
        **instance.cache.status(),
        **asdict(instance.cache.counters),
    }


async def cache_stats(request: web.Request) -> web.Response:
    instances = request.app[REGISTRY].instances()
    per_instance = {instance.name: instance_status(instance) for instance in instances}
    totals = {
        counter: sum(status[counter] for status in per_instance.values())
        for counter in ("hits", "misses", "refreshes", "fallbacks", "upstream_calls")
    }
    lookups = totals["hits"] + totals["misses"]
    hit_rate = round(100.0 * totals["hits"] / lookups, 2) if lookups else 0.0
    return json_response({**totals, "hit_rate_percent": hit_rate, "instances": per_instance})
