"""One instance's model list as the daemons of a fleet share it through Redis (fleet.py).

Under `list:<instance>:<identity>` a hash holds the list (`models`, a JSON document), when it
was fetched (`fetched_at`), which daemon fetched it (`by`) and when a cache clear expired it
fleet-wide (`cleared_at`). The identity hashes all of the instance's settings and keys, so
daemons configured differently never share; lists fetched with a caller's key are never here.
Every Redis call names its key to the fleet, which ignores a value of another type under it
with a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import orjson

from localrouter.base.jsonload import INLINE_BYTES, loads_in_steps, loads_or_none
from localrouter.base.offload import heavy
from localrouter.lists.cache import ModelCache, ModelList, Source
from localrouter.lists.codec import models_document, read_model
from localrouter.providers.base import ModelInfo
from localrouter.providers.parsing import sane_models

if TYPE_CHECKING:
    from localrouter.lists.fleet import Fleet

KEEP_SECONDS = 7 * 86400.0  # an unrefreshed list leaves Redis after a week past its expiry
MIN_LOCK_SECONDS = 30.0  # how long a leader may take before another daemon may call
MAX_LOCK_SECONDS = 120.0  # a lock set to outlast this (or never to expire) is not ours
POLL_SECONDS = 0.25  # a follower looks again this often if no event wakes it
FAILURE_KEEP_SECONDS = 10.0


class SharedList:
    def __init__(self, fleet: Fleet, instance: str, identity: str) -> None:
        self.fleet = fleet
        self.instance = instance
        prefix = fleet.prefix
        self.key = f"{prefix}list:{instance}:{identity}"
        self._lock_key = f"{prefix}lock:{instance}:{identity}"
        self._failed_key = f"{prefix}failed:{instance}:{identity}"
        self._token = f"{fleet.daemon}:{id(self)}".encode()
        self._cache: ModelCache | None = None
        self._news = asyncio.Event()  # set when an event about this list arrives

    def attach(self, cache: ModelCache) -> None:
        self._cache = cache

    def detach(self) -> None:
        self.fleet.forget(self)

    @property
    def _lock_ms(self) -> int:
        ttl = self._cache.ttl_seconds if self._cache is not None else MIN_LOCK_SECONDS
        return int(max(MIN_LOCK_SECONDS, min(ttl, MAX_LOCK_SECONDS)) * 1000)

    # -- the FleetList protocol (cache.py) ---------------------------------------------------

    async def newer(self, than: float) -> ModelList | None:
        head = await self.fleet.call(
            lambda: self.fleet.redis.hmget(self.key, ["fetched_at", "cleared_at"]), self.key
        )
        if head is None or head[0] is None:
            return None
        fetched_at, cleared_at = _number(head[0]), _number(head[1]) if head[1] else None
        if fetched_at is None:
            self._foreign("fetched_at is not a number")
            return None
        if fetched_at <= than:
            return None
        raw = await self.fleet.call(lambda: self.fleet.redis.hget(self.key, "models"), self.key)
        if not isinstance(raw, bytes):
            return None
        models = await self._decode(raw)
        if models is None:
            return None
        ttl = self._cache.ttl_seconds if self._cache is not None else 0.0
        expires_at = fetched_at + ttl
        if cleared_at is not None and cleared_at >= fetched_at:
            expires_at = min(expires_at, cleared_at)
        return ModelList(models, Source.LIVE, fetched_at, expires_at)

    async def lead(self) -> bool:
        redis = self.fleet.redis
        taken = await self.fleet.call(
            lambda: redis.set(self._lock_key, self._token, nx=True, px=self._lock_ms),
            self._lock_key,
        )
        if taken is None and not self.fleet.up:
            return True  # no fleet to agree with: this daemon calls, as it would alone
        return bool(taken)

    async def follow(self, than: float) -> ModelList | str | None:
        started = self.fleet.clock()
        give_up = started + self._lock_ms / 1000
        self._news.clear()
        while self.fleet.up and self.fleet.clock() < give_up:
            if (found := await self.newer(than)) is not None:
                return found
            if not await self._lock_held():
                if (found := await self.newer(than)) is not None:  # landed as the lock went
                    return found
                return await self._failure_since(started)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._news.wait(), POLL_SECONDS)
            self._news.clear()
        return None

    async def publish(self, models: ModelList) -> None:
        fleet = self.fleet
        head = {"by": fleet.daemon}
        document = await heavy(lambda: models_document(head, models.models), len(models.models))
        keep_ms = int((max(models.expires_at - fleet.clock(), 0.0) + KEEP_SECONDS) * 1000)
        news = fleet.event("list", self.key, fetched_at=models.fetched_at)

        async def send() -> None:
            async with fleet.redis.pipeline(transaction=True) as pipe:
                pipe.hset(
                    self.key,
                    mapping={
                        "fetched_at": repr(models.fetched_at),
                        "by": fleet.daemon,
                        "models": bytes(document),
                    },
                )
                pipe.hdel(self.key, "cleared_at")
                pipe.pexpire(self.key, keep_ms)
                pipe.publish(fleet.channel, news)
                await pipe.execute()

        await fleet.call(send, self.key)

    async def failed(self, error: str) -> None:
        fleet = self.fleet
        note = orjson.dumps({"error": error, "at": fleet.clock(), "by": fleet.daemon})
        news = fleet.event("failed", self.key)

        async def send() -> None:
            async with fleet.redis.pipeline(transaction=True) as pipe:
                pipe.set(self._failed_key, note, px=int(FAILURE_KEEP_SECONDS * 1000))
                pipe.publish(fleet.channel, news)
                await pipe.execute()

        await fleet.call(send, self._failed_key)

    async def release(self) -> None:
        # Only our own lock: if it expired and another daemon took it, that one is theirs.
        await self.fleet.call(
            lambda: self.fleet.redis.eval(RELEASE_SCRIPT, 1, self._lock_key, self._token),
            self._lock_key,
        )

    # -- fleet-wide news ----------------------------------------------------------------------

    async def expire_everywhere(self) -> None:
        fleet = self.fleet
        now = fleet.clock()

        async def send() -> None:
            async with fleet.redis.pipeline(transaction=True) as pipe:
                pipe.eval(CLEAR_SCRIPT, 1, self.key, repr(now))
                pipe.publish(fleet.channel, fleet.event("expire", self.key))
                await pipe.execute()

        await fleet.call(send, self.key)

    def heard(self, kind: str) -> None:
        """Another daemon published, failed on or expired this list."""
        self._news.set()
        if self._cache is None:
            return
        if kind == "expire":
            self._cache.expire()
        elif kind == "list":
            self._cache.fleet_list_changed()

    async def check(self) -> None:
        """The backstop for lost events: a newer list is taken, a missed clear applied."""
        cache = self._cache
        if cache is None:
            return
        cache.fleet_list_changed()
        current = cache.current
        if current is None or current.source is not Source.LIVE:
            return
        raw = await self.fleet.call(lambda: self.fleet.redis.hget(self.key, "cleared_at"), self.key)
        cleared_at = _number(raw) if raw is not None else None
        missed = cleared_at is not None and cleared_at >= current.fetched_at
        if missed and self.fleet.clock() < current.expires_at:
            cache.expire()

    # -- helpers ------------------------------------------------------------------------------

    async def _decode(self, raw: bytes) -> tuple[ModelInfo, ...] | None:
        instance = self.instance

        def decode() -> tuple[ModelInfo, ...]:
            document = loads_in_steps(raw) if len(raw) > INLINE_BYTES else orjson.loads(raw)
            if not isinstance(document, dict) or not isinstance(document.get("models"), list):
                raise TypeError("not a model list")
            return tuple(sane_models([read_model(m) for m in document["models"]], instance))

        try:
            return await heavy(decode, len(raw) // 500)
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            self._foreign(f"models: {type(exc).__name__}")
            return None

    async def _lock_held(self) -> bool:
        """Whether another daemon holds the lock. One that would outlast any of ours (never
        set to expire, or set to expire in a year) is foreign, and ignored."""
        left_ms = await self.fleet.call(
            lambda: self.fleet.redis.pttl(self._lock_key), self._lock_key
        )
        if left_ms is None or left_ms == -2:  # no fleet to ask, or no lock
            return False
        if 0 <= left_ms <= MAX_LOCK_SECONDS * 1000:
            return True
        self._foreign("its lock never expires" if left_ms < 0 else "its lock outlasts any of ours")
        return False

    async def _failure_since(self, started: float) -> str | None:
        key = self._failed_key
        raw = await self.fleet.call(lambda: self.fleet.redis.get(key), key)
        note = loads_or_none(raw)
        if not isinstance(note, dict):
            return None
        at, error = note.get("at"), note.get("error")
        if isinstance(at, (int, float)) and at >= started and isinstance(error, str):
            return error
        return None

    def _foreign(self, why: str) -> None:
        self.fleet.foreign.warn("fleet.foreign_list_ignored", key=self.key, reason=why)


def _number(raw: object) -> float | None:
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if value == value else None  # NaN is not a time


RELEASE_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
# A clear marks a list that exists; it never creates a half-empty hash.
CLEAR_SCRIPT = """
if redis.call('exists', KEYS[1]) == 0 then return 0 end
return redis.call('hset', KEYS[1], 'cleared_at', ARGV[1])
"""
