"""Reading the ledger over HTTP, in the shapes tools already read:

- `GET /api/usage?since=&until=&group_by=&format=json|csv&scope=fleet` (the admin's): one row
  per group of day, client, model, instance, route, with the sums;
- `GET /api/v1/generation?id=` in OpenRouter's shape, plus our own fields; a client sees only
  its own requests;
- `GET /api/v1/key` in OpenRouter's shape, for the calling token."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from localrouter.base.errors import BadRequest, NotFound
from localrouter.config.control import Client
from localrouter.http.bodies import JSON
from localrouter.http.guard import CLIENT
from localrouter.lists.cache import Clock
from localrouter.usage.ledger import Ledger

DAY = 86400.0
_RELATIVE = re.compile(r"^(\d+)([hdw])$")
_UNIT_SECONDS = {"h": 3600.0, "d": DAY, "w": 7 * DAY}
# The fleet's totals, read from Redis (usage/fleet.py), when the daemon is in one.
FleetTotals = Callable[[float | None, float | None, Sequence[str]], Awaitable[list[dict[str, Any]]]]
# The caller's limit in /api/v1/key's fields (limits/report.py), when limits are built.
KeyLimits = Callable[[Client | None], Awaitable[dict[str, Any]]]


def moment(raw: str | None, now: float, name: str) -> float | None:
    """A time in a query: unix seconds, an ISO date or time (UTC unless it says), or a span
    back from now (`7d`, `12h`, `2w`); None when absent."""
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    if (relative := _RELATIVE.match(text)) is not None:
        return now - int(relative.group(1)) * _UNIT_SECONDS[relative.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(
            f"{name}: expected unix seconds, an ISO date (2026-12-01) or a span back from now "
            f"(7d, 12h, 2w), got {text[:40]!r}",
            param=name,
        ) from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


class UsageEndpoints:
    """The ledger's routes, for the app's ledger and clock (and the fleet's totals)."""

    def __init__(self, ledger: Ledger, clock: Clock, fleet_totals: FleetTotals | None) -> None:
        self._ledger, self._clock, self._fleet_totals = ledger, clock, fleet_totals
        self.key_limits: KeyLimits | None = None

    async def usage(self, request: web.Request) -> web.Response:
        query = request.query
        now = self._clock()
        since = moment(query.get("since"), now, "since")
        until = moment(query.get("until"), now, "until")
        group_by = [key.strip() for key in query.get("group_by", "").split(",") if key.strip()]
        scope = query.get("scope", "local")
        if scope not in ("local", "fleet"):
            raise BadRequest(f"scope: expected local or fleet, got {scope[:20]!r}", param="scope")
        if scope == "fleet":
            if self._fleet_totals is None:
                raise BadRequest(
                    "scope=fleet needs a fleet (fleet.redis_url in the config).", param="scope"
                )
            rows = await self._fleet_totals(since, until, group_by)
        else:
            rows = await self._ledger.usage(since, until, group_by)
        kind = query.get("format", "json")
        if kind == "csv":
            return web.Response(text=as_csv(rows), content_type="text/csv", charset="utf-8")
        if kind != "json":
            raise BadRequest(f"format: expected json or csv, got {kind[:20]!r}", param="format")
        shown = {
            "data": rows,
            "group_by": group_by,
            "since": since,
            "until": until,
            "recording": self._ledger.enabled,  # false: usage.enabled is off, nothing is kept
        }
        return web.Response(body=orjson.dumps(shown), content_type=JSON)

    async def generation(self, request: web.Request) -> web.Response:
        """OpenRouter's `GET /api/v1/generation?id=`: one request, the caller's own."""
        wanted = request.query.get("id", "").strip()
        if not wanted:
            raise BadRequest("id: the request id is required (x-localrouter-request-id).")
        row = await self._ledger.generation(wanted)
        client = request[CLIENT]
        if row is None or (client is not None and row.get("client") != client.name):
            raise NotFound(
                f"No generation {wanted[:100]!r}: not recorded (yet: records are written "
                "within a second of the answer's end), past retention, or another caller's."
            )
        return web.Response(body=orjson.dumps({"data": generation(row)}), content_type=JSON)

    async def key(self, request: web.Request) -> web.Response:
        """OpenRouter's `GET /api/v1/key` for the calling token: what it spent."""
        client = request[CLIENT]
        name = client.name if client is not None else None
        now = self._clock()
        spent = self._ledger.spent
        daily, weekly, monthly = (
            await spent(name, now - DAY),
            await spent(name, now - 7 * DAY),
            await spent(name, now - 30 * DAY),
        )
        everything = await spent(name, 0.0)
        data = {
            "label": name or "localrouter admin",
            "usage": everything["cost_usd"] or 0.0,
            "usage_daily": daily["cost_usd"] or 0.0,
            "usage_weekly": weekly["cost_usd"] or 0.0,
            "usage_monthly": monthly["cost_usd"] or 0.0,
            "limit": None,
            "limit_remaining": None,
            "limit_reset": None,
            "is_free_tier": False,
            "unpriced_requests": everything["unpriced_requests"] or 0,
        }
        if self.key_limits is not None:
            data.update(await self.key_limits(client))
        return web.Response(body=orjson.dumps({"data": data}), content_type=JSON)


def generation(row: dict[str, Any]) -> dict[str, Any]:
    """A ledger row in OpenRouter's generation shape, with our own fields after."""
    created = datetime.fromtimestamp(float(row["started_at"]), UTC)
    ttft = row.get("ttft_ms")
    duration = float(row.get("duration_ms") or 0.0)
    return {
        "id": row["id"],
        "model": row.get("model"),
        "total_cost": row.get("cost_usd"),
        "created_at": created.isoformat().replace("+00:00", "Z"),
        "tokens_prompt": row.get("input_tokens", 0),
        "tokens_completion": row.get("output_tokens", 0),
        "native_tokens_prompt": row.get("input_tokens", 0),
        "native_tokens_completion": row.get("output_tokens", 0),
        "native_tokens_cached": row.get("cache_read_tokens", 0),
        "native_tokens_reasoning": row.get("reasoning_tokens", 0),
        "latency": round(ttft if ttft is not None else duration),
        "generation_time": round(duration - (ttft or 0.0)),
        "streamed": bool(row.get("stream")),
        "cancelled": bool(row.get("cancelled")),
        "provider_name": row.get("provider_type"),
        "upstream_id": (row.get("model") or "").partition("/")[2] or None,
        "origin": row.get("route"),
        "cost_source": row.get("cost_source"),
        "usage_source": row.get("usage_source"),
        "client": row.get("client"),
        "instance": row.get("instance"),
        "attempts": row.get("attempts"),
        "status": row.get("status"),
        "requested_model": row.get("requested_model"),
        "cache_write_tokens": row.get("cache_write_tokens", 0),
        "key_position": row.get("key_position"),
        "session": row.get("session"),
    }


def as_csv(rows: list[dict[str, Any]]) -> str:
    """The rows with a header line, in the order of the first row's keys."""
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return out.getvalue()
