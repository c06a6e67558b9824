"""What the limits stand at, for `/api/limits` (every caller), `/api/v1/key` (the caller's
own, in OpenRouter's shape) and `localrouter limits`; and the budgets rebuilt from the usage
ledger when the daemon starts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from localrouter.config.control import Client
from localrouter.http.bodies import JSON
from localrouter.limits.gate import Limits
from localrouter.limits.periods import Period
from localrouter.limits.rules import REQUESTS, TOKENS, USD_DAY, USD_MONTH, CallerLimits, Limit
from localrouter.usage.ledger import Ledger

_RESETS = {USD_DAY: "daily", USD_MONTH: "monthly"}


async def rebuild(limits: Limits, ledger: Ledger) -> None:
    """Today's and this month's spend of every budget, from the ledger (this daemon's own
    requests; a fleet's counts live in Redis)."""
    now = limits.clock()
    periods = limits.periods
    day, month = periods.day(now), periods.month(now)
    rows = await ledger.spent_by_model(periods.month_starts(now), periods.day_starts(now))
    for caller in limits.rules.callers():
        for scope in caller.scopes:
            for client, asked, model, this_month, today in rows:
                if (client or "") != caller.client or not scope.covers(asked or "", model or ""):
                    continue
                if USD_MONTH in scope.limits and this_month:
                    limits.counts.seed((scope.key, USD_MONTH), month, this_month)
                if USD_DAY in scope.limits and today:
                    limits.counts.seed((scope.key, USD_DAY), day, today)


async def standing(limits: Limits, caller: CallerLimits) -> list[dict[str, Any]]:
    """One row per limit of `caller`: its value, what is used (and reserved by calls in
    flight, in this daemon), what remains, when it resets, and where it is configured."""
    now = limits.clock()
    periods = limits.periods
    minute, day, month = periods.spans(now)  # as admission counts in them
    counters: list[tuple[Limit, Period | None]] = []
    for limit in caller.limits:
        if limit.kind in (REQUESTS, TOKENS):
            period: Period | None = minute
        elif limit.kind in _RESETS:
            period = day if limit.kind == USD_DAY else month
        else:
            period = None
        counters.append((limit, period))
    shared = limits.shared
    fleet = await shared.read(counters, now) if shared is not None else None
    rows = []
    for index, (limit, period) in enumerate(counters):
        used, reserved = limits.counts.peek(limit.counter, period)
        if fleet is not None:
            used = fleet[index]
        ends = period.ends if period is not None else None
        dollars = limit.kind in _RESETS
        scope = limit.scope
        rows.append(
            {
                "client": caller.client or None,
                "models": scope.models.patterns[0] if scope.models else "*",
                "limit": limit.kind,
                "value": limit.value,
                "used": round(used, 6) if dollars else used,
                "reserved": round(reserved, 6) if dollars else reserved,
                "remaining": round(max(limit.value - used, 0.0), 6),
                "resets_at": _iso(ends) if ends is not None else None,
                "resets": periods.shown(ends) if ends is not None else None,
                "configured": f"{scope.path}.{limit.kind}",
                "counted": "fleet" if fleet is not None else "daemon",
                "unpriced_counted": False if dollars else None,
            }
        )
    return rows


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).isoformat().replace("+00:00", "Z")


class LimitEndpoints:
    def __init__(self, limits: Limits) -> None:
        self._limits = limits

    async def limits(self, _: web.Request) -> web.Response:
        """GET /api/limits (the admin's): every caller's limits as they stand."""
        limits = self._limits
        rows = [row for caller in limits.rules.callers() for row in await standing(limits, caller)]
        shown = {
            "data": rows,
            "timezone": limits.periods.timezone,
            "warn_at": limits.rules.settings.warn_at,
            "counted": _counted(limits),
        }
        return web.Response(body=orjson.dumps(shown), content_type=JSON)

    async def of_key(self, client: Client | None) -> dict[str, Any]:
        """`limit`, `limit_remaining` and `limit_reset` of /api/v1/key (OpenRouter's: USD): the
        caller's own dollar budget with the least left; our `limits` row by row besides."""
        caller = self._limits.of(client)
        rows = await standing(self._limits, caller) if caller is not None else []
        budgets = [row for row in rows if row["limit"] in _RESETS and row["models"] == "*"]
        tightest = min(budgets, key=lambda row: row["remaining"], default=None)
        return {
            "limit": tightest["value"] if tightest else None,
            "limit_remaining": tightest["remaining"] if tightest else None,
            "limit_reset": _RESETS[tightest["limit"]] if tightest else None,
            "limit_counts_unpriced": False if tightest else None,
            "limits": rows,
        }


def _counted(limits: Limits) -> str:
    shared = limits.shared
    if shared is None:
        return "daemon"
    return "fleet" if shared.up else "daemon (redis unreachable)"
