"""The least an admission by the issue's example client's limits can do, hard-coded, for
bench/limits_floor.py: put in place of the daemon's own (`install`, run by the sitecustomize
that script hands the daemon) to see what limits cost at the least in this daemon.

Three counters in a dict: requests this minute, dollars today (the call's expected cost
reserved, settled with its real one once priced) and calls in flight (given back when the
answer ends); the three x-ratelimit-*-requests headers. Every limit is bench/proxy.py's HUGE,
the prices its --limits instance's. Not there: scopes, model_limits, tokens per minute, months,
time zones, reloads, a fleet, the budget warning, refusals in each protocol's shape (this one
never refuses: the bench never reaches a limit)."""

from __future__ import annotations

import math
import time
from typing import Any

from multidict import istr

HUGE = 10**9  # bench/proxy.py's, for every limit
PROMPT, COMPLETION = 3e-6, 15e-6  # USD per token: bench/proxy.py's --limits pricing
CHARS_PER_TOKEN, DEFAULT_OUTPUT = 4, 4096
PARTS = ("limit", "remaining", "reset")
LIMIT, REMAINING, RESET = (istr(f"x-ratelimit-{part}-requests") for part in PARTS)
SHOWN = str(HUGE)
SECONDS = [f"{seconds}s" for seconds in range(61)]
COUNTS: dict[Any, float] = {}


class Reserved:
    """A call's reservation, as the recorder releases and settles it."""

    __slots__ = ("cost", "day")
    settles = True

    def __init__(self, cost: float, day: float) -> None:
        self.cost, self.day = cost, day

    def release(self) -> None:
        COUNTS["in flight"] -= 1

    def settle(self, record: Any) -> None:
        key = ("usd", self.day)
        COUNTS[key] += (record.cost_usd or 0.0) - self.cost


def admit(record: Any, asked_output: int | None) -> dict[str, str]:
    now = time.time()
    minute = ("requests", now // 60)
    requests = COUNTS.get(minute, 0) + 1
    if requests > HUGE:
        raise RuntimeError("requests_per_minute reached")
    COUNTS[minute] = requests
    input_tokens = -(-record.request_bytes // CHARS_PER_TOKEN)
    cost = input_tokens * PROMPT + (asked_output or DEFAULT_OUTPUT) * COMPLETION
    day = now // 86400
    spent = COUNTS.get(("usd", day), 0.0) + cost
    if spent > HUGE:
        raise RuntimeError("usd_per_day reached")
    COUNTS["usd", day] = spent
    in_flight = COUNTS.get("in flight", 0) + 1
    if in_flight > HUGE:
        raise RuntimeError("max_parallel reached")
    COUNTS["in flight"] = in_flight
    record.reserved(Reserved(cost, day))
    reset = SECONDS[math.ceil(60 - now % 60)]
    return {LIMIT: SHOWN, REMAINING: str(int(HUGE - requests)), RESET: reset}


def install() -> None:
    from localrouter.protocols import attempts

    async def hard_coded(self: Any, name: str, instance: Any, upstream_id: str) -> dict[str, str]:
        return admit(self.record, self.asked_output)

    attempts.Admission.__call__ = hard_coded  # type: ignore[method-assign]
