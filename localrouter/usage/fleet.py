"""Usage across a fleet: each daemon keeps its own ledger and adds the daily totals each
write adds to Redis (one hash a UTC day, a field per group and sum), so that any daemon can
read the fleet's totals (`/api/usage?scope=fleet`). What Redis cannot take now waits, merged,
for the next write; Redis down never fails a call."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

from localrouter.base.errors import BadRequest
from localrouter.lists.cache import Clock
from localrouter.lists.fleet import Fleet
from localrouter.usage.ledger_file import Deltas, Group
from localrouter.usage.schema import GROUP_KEYS, SUMS, day_of, totals

DAY = 86400
KEPT_DAYS = 400  # as the daily table keeps them
_SEPARATOR = "\x1f"
MAX_WAITING_GROUPS = 10_000  # what waits for Redis, at most (then the oldest news is dropped)


class FleetUsage:
    def __init__(self, fleet: Fleet, clock: Clock) -> None:
        self._fleet, self._clock = fleet, clock
        self._waiting: dict[tuple[str, ...], dict[str, float]] = {}

    def _key(self, day: str) -> str:
        return f"{self._fleet.prefix}usage:{day}"

    def add(self, deltas: Deltas) -> None:
        """The ledger's on_rollup hook: this write's sums by group, sent in the background."""
        for group, sums in deltas:
            waiting = self._waiting.setdefault(group, dict.fromkeys(SUMS, 0.0))
            for name, value in sums.items():
                waiting[name] = waiting.get(name, 0.0) + value
        while len(self._waiting) > MAX_WAITING_GROUPS:
            del self._waiting[next(iter(self._waiting))]
        self._fleet.send_soon(self._send)

    async def _send(self) -> None:
        sending, self._waiting = self._waiting, {}
        if not sending:
            return
        redis = self._fleet.redis
        try:
            async with redis.pipeline(transaction=False) as pipe:
                for (day, *rest), sums in sending.items():
                    key = self._key(day)
                    for name, value in sums.items():
                        if value:
                            pipe.hincrbyfloat(key, _SEPARATOR.join((name, *rest)), value)
                    pipe.expire(key, KEPT_DAYS * DAY)
                await pipe.execute()
        except BaseException:
            for group, sums in sending.items():  # kept for the next write
                waiting = self._waiting.setdefault(group, dict.fromkeys(SUMS, 0.0))
                for name, value in sums.items():
                    waiting[name] = waiting.get(name, 0.0) + value
            raise

    async def totals(
        self, since: float | None, until: float | None, group_by: Sequence[str]
    ) -> list[Group]:
        """The fleet's sums, one row per group, as Ledger.usage gives this daemon's."""
        keys = list(dict.fromkeys(group_by))
        if unknown := [key for key in keys if key not in GROUP_KEYS]:
            raise BadRequest(
                f"group_by: unknown {', '.join(unknown)}; use any of {', '.join(GROUP_KEYS)}",
                param="group_by",
            )
        last = self._clock() if until is None else until
        first = last - KEPT_DAYS * DAY if since is None else since
        days = _days(first, last)
        redis = self._fleet.redis

        async def read() -> list[Any]:
            async with redis.pipeline(transaction=False) as pipe:
                for day in days:
                    pipe.hgetall(self._key(day))
                return list(await pipe.execute())

        found = await self._fleet.call(read)
        if found is None:
            raise BadRequest("scope=fleet: Redis cannot be reached now; try scope=local.")
        grouped: dict[tuple[str, ...], list[float]] = {}
        for day, fields in zip(days, found, strict=True):
            for raw, value in (fields or {}).items():
                name, *rest = _text(raw).split(_SEPARATOR)
                if name not in SUMS or len(rest) != len(GROUP_KEYS) - 1:
                    continue  # foreign data: not ours to count
                group = dict(zip(GROUP_KEYS, (day, *rest), strict=True))
                wanted = tuple(group[key] for key in keys)
                sums = grouped.setdefault(wanted, [0.0] * len(SUMS))
                sums[SUMS.index(name)] += float(_text(value))
        if not grouped and not keys:
            grouped[()] = [0.0] * len(SUMS)
        rows: list[Group] = []
        for wanted in sorted(grouped):
            row: Group = {key: (value or None) for key, value in zip(keys, wanted, strict=True)}
            if "day" in keys:
                row["day"] = wanted[keys.index("day")]
            sums = [_whole(name, value) for name, value in zip(SUMS, grouped[wanted], strict=True)]
            row.update(totals(tuple(sums)))
            rows.append(row)
        return rows


def _days(first: float, last: float) -> list[str]:
    """Every UTC date from the one of `first` to the one of `last`."""
    start, end = date.fromisoformat(day_of(first)), date.fromisoformat(day_of(last))
    return [(start + timedelta(days=n)).isoformat() for n in range((end - start).days + 1)]


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _whole(name: str, value: float) -> float:
    return value if name == "cost_usd" else round(value)
