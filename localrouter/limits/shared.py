"""The limits' counters in a fleet's Redis, so that daemons behind one load balancer keep one
budget. A call's admission is one script (atomic: every counter checked, then every one
reserved), its settlement is batched off the request's path; every key expires. When Redis
cannot be reached, admission answers None and the daemon decides by its own counts."""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Awaitable
from typing import Any

from localrouter.limits.counting import Held
from localrouter.limits.periods import Period
from localrouter.limits.rules import PARALLEL, SLACK, Limit
from localrouter.lists.fleet import Fleet

# A slot of max_parallel that a daemon took and never gave back (it died) frees itself
# after this long.
SLOT_SECONDS = 900.0
_AFTER_PERIOD = 3600  # a counter outlives its period by this much (clocks differ)
MAX_WAITING = 100_000  # slots to give back, at most, waiting for Redis

# KEYS: the counters. ARGV: now, the call's id, then per counter: limit, amount, ttl, kind
# ("z": calls in flight, a sorted set of call ids by expiry; else a number). Returns
# {0, used...} when every counter admits the call (and reserves it), else {i, used of i}.
ADMIT = """
local now, member = tonumber(ARGV[1]), ARGV[2]
local used = {0}
for i = 1, #KEYS do
  local at = 3 + (i - 1) * 4
  local limit, amount = tonumber(ARGV[at]), tonumber(ARGV[at + 1])
  local value
  if ARGV[at + 3] == 'z' then
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
    value = redis.call('ZCARD', KEYS[i])
  else
    value = tonumber(redis.call('GET', KEYS[i]) or '0')
  end
  if value + amount > limit + tonumber(ARGV[#ARGV]) then
    return {i, tostring(value)}
  end
  used[i + 1] = tostring(value)
end
for i = 1, #KEYS do
  local at = 3 + (i - 1) * 4
  local ttl = tonumber(ARGV[at + 2])
  if ARGV[at + 3] == 'z' then
    redis.call('ZADD', KEYS[i], now + ttl, member)
  else
    redis.call('INCRBYFLOAT', KEYS[i], ARGV[at + 1])
  end
  redis.call('EXPIRE', KEYS[i], math.ceil(ttl))
end
return used
"""


class SharedCounts:
    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet
        self._prefix = f"{fleet.prefix}limit:"
        self._admit: Any = fleet.redis.register_script(ADMIT)  # typed per redis version
        # key -> (what to add, when it expires): settlements waiting to be sent
        self._adjust: dict[str, tuple[float, float]] = {}
        self._leave: list[tuple[str, str]] = []
        self._sending: asyncio.Task[None] | None = None
        self._unheard: set[asyncio.Task[Any]] = set()  # admissions their caller left

    @property
    def up(self) -> bool:
        return self._fleet.up

    def key(self, limit: Limit, period: Period | None) -> str:
        name = f":{period.name}" if period is not None else ""
        return f"{self._prefix}{limit.scope.key}:{limit.kind}{name}"

    async def admit(
        self, held: list[Held], call_id: str, now: float
    ) -> tuple[int | None, list[float]] | None:
        """(the first refusing limit's index, or None when admitted and reserved; the counts
        it found), or None when Redis cannot answer now."""
        keys, args = [], [repr(now), call_id]
        for limit, _, amount, period in held:
            keys.append(self.key(limit, period))
            if limit.kind == PARALLEL:
                args += [repr(limit.value), "1", repr(SLOT_SECONDS), "z"]
            else:
                assert period is not None
                ttl = max(period.ends - now, 1.0) + _AFTER_PERIOD
                args += [repr(limit.value), repr(amount), repr(ttl), "n"]
        args.append(repr(SLACK))
        sent: asyncio.Task[Any] | None = None

        def send() -> Awaitable[Any]:
            nonlocal sent
            sent = asyncio.ensure_future(self._admit(keys=keys, args=args))
            return asyncio.shield(sent)  # a caller that leaves does not cancel what Redis does

        try:
            found = await self._fleet.call(send)
        except BaseException:  # the caller left (its client did)
            if sent is not None:
                self._give_back_if_admitted(sent, held, call_id)
            raise
        if found is None:
            if sent is not None:  # it timed out: Redis may still run it
                self._give_back_if_admitted(sent, held, call_id)
            return None
        first, *used = (float(_text(value)) for value in found)
        if first:
            index = int(first) - 1
            counts = [0.0] * len(held)
            counts[index] = used[0]
            return index, counts
        return None, used

    def _give_back_if_admitted(
        self, sent: asyncio.Task[Any], held: list[Held], call_id: str
    ) -> None:
        """An admission whose caller stopped waiting: if Redis admits it all the same, what it
        reserved is given back (else a slot of max_parallel would be held until it expires,
        and dollars until their period ends)."""

        def heard(task: asyncio.Task[Any]) -> None:
            self._unheard.discard(task)
            if task.cancelled() or task.exception() is not None:
                return  # not sent, or its connection closed: Redis drops what it had not run
            if float(_text(task.result()[0])) == 0:
                for each in held:
                    self.settle(each, 0.0, call_id)

        self._unheard.add(sent)
        sent.add_done_callback(heard)

    def settle(self, held: Held, actual: float, call_id: str) -> None:
        """A reservation (made in Redis) replaced by what the call used, sent with others
        soon; what Redis cannot take then is dropped (its counters expire)."""
        limit, _, amount, period = held
        if limit.kind == PARALLEL:
            if len(self._leave) < MAX_WAITING:
                self._leave.append((self.key(limit, period), call_id))
        elif actual != amount and period is not None:
            key = self.key(limit, period)
            delta, _ = self._adjust.get(key, (0.0, 0.0))
            self._adjust[key] = (delta + actual - amount, period.ends + _AFTER_PERIOD)
        if self._sending is None or self._sending.done():
            self._sending = asyncio.create_task(self._send_all())

    async def _send_all(self) -> None:
        while self._adjust or self._leave:
            adjust, self._adjust = self._adjust, {}
            leave, self._leave = self._leave, []
            await self._fleet.call(functools.partial(self._send, adjust, leave))

    async def _send(
        self, adjust: dict[str, tuple[float, float]], leave: list[tuple[str, str]]
    ) -> None:
        """The adjustments (each key expiring after its period, even one that Redis lost
        and this creates again) and the slots given back."""
        async with self._fleet.redis.pipeline(transaction=False) as pipe:
            for key, (delta, expires) in adjust.items():
                pipe.incrbyfloat(key, delta)
                pipe.expireat(key, math.ceil(expires))
            for key, member in leave:
                pipe.zrem(key, member)
            await pipe.execute()

    async def close(self) -> None:
        await asyncio.gather(*self._unheard, return_exceptions=True)
        if self._sending is not None:
            await asyncio.gather(self._sending, return_exceptions=True)

    async def read(
        self, counters: list[tuple[Limit, Period | None]], now: float
    ) -> list[float] | None:
        """Each limit's count in its period now (for /api/limits), or None when Redis cannot
        answer."""

        async def read() -> list[Any]:
            async with self._fleet.redis.pipeline(transaction=False) as pipe:
                for limit, period in counters:
                    if limit.kind == PARALLEL:
                        pipe.zcount(self.key(limit, period), now, "+inf")
                    else:
                        pipe.get(self.key(limit, period))
                return list(await pipe.execute())

        found = await self._fleet.call(read)
        if found is None:
            return None
        return [float(_text(value)) if value is not None else 0.0 for value in found]


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)
