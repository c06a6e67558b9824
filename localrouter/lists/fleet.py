"""Daemons sharing one Redis (`fleet.redis_url`): this daemon's link to it.

What travels through Redis, all under `fleet.key_prefix`:
- `list:<instance>:<identity>`: an instance's last list, its fetched_at and any fleet-wide clear
  (shared_lists.py); `lock:...` makes one daemon of the fleet call the upstream, `failed:...`
  tells the others what that call met;
- `key:<hash>`: a pool key's rest or refusal (key_pool.py), so one daemon's 429 rests it for all;
- `daemon:<id>`: each daemon's counters, for fleet totals in /api/cache/stats;
- channel `events`: news of each of these, so nobody polls (a periodic check is the backstop).

Redis is never on a request's path to a cached answer, and it may go at any time: every call
here is bounded by OP_SECONDS, a failure marks the fleet down (/health says so), and while it is
down each call answers at once as if there were no fleet. A loop reconnects with backoff,
re-subscribes and catches up.

Anything under the prefix may have been written by someone else: what is not ours (unreadable,
out of range, or a value of another Redis type, which Redis refuses with WRONGTYPE) is ignored
with a warning, and the fleet stays up. Those warnings are rate-limited (ForeignWarnings): who
can write to the Redis must not be able to flood the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import asdict
from typing import Any, TypeVar

import orjson
import structlog

from localrouter.base.jsonload import loads_or_none
from localrouter.base.secrets import display_url, redact
from localrouter.config.fleet import FleetSettings
from localrouter.config.settings import ProviderSettings
from localrouter.lists.cache import CacheCounters, Clock
from localrouter.lists.shared import SharedList
from localrouter.upstream.key_pool import REFUSED, KeyPool, KeyState

log = structlog.get_logger(__name__)

T = TypeVar("T")

OP_SECONDS = 0.5  # the longest any Redis call may hold anything up
CHECK_SECONDS = 5.0  # the backstop: catch up this often even when no event came
REPORT_SECONDS = 1.0  # how fresh the fleet totals in /api/cache/stats are
FIRST_RETRY_SECONDS = 0.25
MAX_RETRY_SECONDS = 5.0
COUNTERS_KEEP_SECONDS = 5 * REPORT_SECONDS  # a daemon that stopped reporting leaves the totals
EVENT_KINDS = frozenset({"list", "expire", "failed", "key"})
FOREIGN_WARNINGS = 5  # warnings about foreign data logged per interval; the rest are counted
FOREIGN_INTERVAL_SECONDS = 60.0


class ForeignWarnings:
    """At most FOREIGN_WARNINGS warnings about foreign data per FOREIGN_INTERVAL_SECONDS; the
    ones held back are counted, and the count logged (`fleet.foreign_data_suppressed`, by
    event) once the interval is over."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._interval_ends = float("-inf")
        self._shown = 0
        self._held_back: dict[str, int] = {}

    def warn(self, event: str, **fields: Any) -> None:
        self.flush()
        if self._shown < FOREIGN_WARNINGS:
            self._shown += 1
            log.warning(event, **fields)
        else:
            self._held_back[event] = self._held_back.get(event, 0) + 1

    def flush(self) -> None:
        """Start a new interval if this one is over, logging what it held back."""
        now = self._clock()
        # A clock set back must not hold warnings back for longer than an interval.
        if now < self._interval_ends <= now + FOREIGN_INTERVAL_SECONDS:
            return
        if self._held_back:
            log.warning(
                "fleet.foreign_data_suppressed",
                count=sum(self._held_back.values()),
                events=self._held_back,
                seconds=FOREIGN_INTERVAL_SECONDS,
            )
            self._held_back = {}
        self._shown = 0
        self._interval_ends = now + FOREIGN_INTERVAL_SECONDS


class Fleet:
    def __init__(self, settings: FleetSettings, clock: Clock) -> None:
        import redis.asyncio as redis  # the optional extra; config checked it is there
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import RedisError, ResponseError

        assert settings.redis_url is not None
        url = settings.redis_url.get_secret_value()
        self.shown_url = display_url(url)
        self._secrets = settings.secret_values
        self.failures: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)
        self._error_reply: type[BaseException] = ResponseError
        self.redis = redis.Redis.from_url(
            url,
            socket_timeout=OP_SECONDS,
            socket_connect_timeout=OP_SECONDS,
            retry=Retry(NoBackoff(), 0),  # we retry, in our own loop, with backoff
        )
        self.prefix = settings.key_prefix
        self.channel = f"{self.prefix}events"
        self.daemon = secrets.token_hex(8)
        self.clock = clock
        self.foreign = ForeignWarnings(clock)
        # Where this daemon's counters come from, once there is a registry to count.
        self.counters: Callable[[], Mapping[str, CacheCounters]] = dict
        self.up = False
        self.problem: str | None = "not connected yet"
        self._lists: dict[str, SharedList] = {}
        # Each shared pool's key names by position (a pool a reload dropped leaves by itself).
        self._key_names: weakref.WeakKeyDictionary[KeyPool, tuple[str, ...]] = (
            weakref.WeakKeyDictionary()
        )
        self._lost = asyncio.Event()
        self._running: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[Any]] = set()

    # -- life --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect (waiting at most OP_SECONDS: a daemon starts without Redis too), then keep
        connected in the background."""
        connected = asyncio.Event()
        self._running = asyncio.create_task(self._stay_connected(connected))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(connected.wait(), 2 * OP_SECONDS)

    async def close(self) -> None:
        if self._running is not None:
            self._running.cancel()
            await asyncio.gather(self._running, return_exceptions=True)
        await asyncio.gather(*self._sending, return_exceptions=True)
        await self.redis.aclose()

    async def _stay_connected(self, connected: asyncio.Event) -> None:
        delay = FIRST_RETRY_SECONDS
        while True:
            # Any: redis-py's typing of PubSub differs across the versions we accept (aclose is
            # untyped before 8.2), and a type-check must not depend on which one resolved.
            pubsub: Any = self.redis.pubsub()
            try:
                async with asyncio.timeout(OP_SECONDS):
                    await pubsub.subscribe(self.channel)
                    await self.redis.ping()
                self._lost.clear()
                if not self.up:
                    log.info("fleet.connected", redis=self.shown_url, daemon=self.daemon)
                self.up, self.problem, delay = True, None, FIRST_RETRY_SECONDS
                connected.set()
                await self._catch_up()
                await self._listen(pubsub)
            except self.failures as exc:
                self.call_failed(exc)
            except Exception as exc:  # a bug here must not end sharing for good
                log.exception("fleet.loop_crashed")
                self.lost(exc)
            finally:
                await asyncio.shield(_quietly(pubsub.aclose()))
            connected.set()  # tried: start() goes on either way
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_SECONDS)

    async def _listen(self, pubsub: Any) -> None:
        next_check = self.clock() + CHECK_SECONDS
        next_report = self.clock() + REPORT_SECONDS
        while not self._lost.is_set():
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
            if message is not None:
                self._on_event(message.get("data"))
            self.foreign.flush()
            now = self.clock()
            if now >= next_check:
                next_check = now + CHECK_SECONDS
                await self._catch_up()
            elif now >= next_report:
                next_report = now + REPORT_SECONDS
                await self._report_counters()

    def lost(self, exc: BaseException) -> None:
        """Redis failed a call: go on without it until the loop reconnects."""
        why = redact(str(exc) or type(exc).__name__, self._secrets)
        if self.up or self.problem != why:
            log.warning("fleet.redis_unreachable", redis=self.shown_url, error=why)
        self.up, self.problem = False, why
        self._lost.set()

    def call_failed(self, exc: BaseException, key: str | None = None) -> None:
        """A Redis call failed: over a value of another type under `key` (foreign data, the
        fleet stays up), or because Redis is gone (lost)."""
        said = ""
        if isinstance(exc, self._error_reply):  # Redis answered with an error
            said = str(exc).rpartition("caused error: ")[2]  # a pipeline's names its command
        if said.startswith("WRONGTYPE"):
            error = redact(said, self._secrets)
            self.foreign.warn("fleet.foreign_type_ignored", key=key, error=error)
        else:
            self.lost(exc)

    async def call(self, op: Callable[[], Awaitable[T]], key: str | None = None) -> T | None:
        """`op` on Redis (about `key`, if one) within OP_SECONDS; None if it failed (see
        `call_failed`), and at once while the fleet is down."""
        if not self.up:
            return None
        try:
            async with asyncio.timeout(OP_SECONDS):
                return await op()
        except self.failures as exc:
            self.call_failed(exc, key)
            return None

    def send_soon(self, op: Callable[[], Awaitable[Any]]) -> None:
        """`call(op)` in the background, for news a request need not wait for."""
        task = asyncio.create_task(self.call(op))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    def event(self, kind: str, target: str, **detail: Any) -> bytes:
        return orjson.dumps({"by": self.daemon, "kind": kind, "target": target, **detail})

    # -- what is shared ----------------------------------------------------------------------

    def shared_list(self, provider: ProviderSettings) -> SharedList:
        shared = SharedList(self, provider.name, identity(provider))
        self._lists[shared.key] = shared
        return shared

    def forget(self, shared: SharedList) -> None:
        if self._lists.get(shared.key) is shared:
            del self._lists[shared.key]

    async def expire_everywhere(self, names: Iterable[str] | None) -> None:
        """A cache clear on every daemon: the lists stay, served as stale until refreshed."""
        chosen = [s for s in self._lists.values() if names is None or s.instance in names]
        await asyncio.gather(*(shared.expire_everywhere() for shared in chosen))

    def share_pool(self, pool: KeyPool, provider: ProviderSettings) -> None:
        """Rests and refusals of this pool's keys reach every daemon that uses the same key
        with the same provider URL."""
        names = tuple(_key_name(provider.resolved_base_url, key) for key in provider.keys)
        self._key_names[pool] = names

        def changed(index: int, state: KeyState) -> None:
            key = f"{self.prefix}key:{names[index]}"
            until = state.resting_until
            keep_ms = max(int((until - self.clock()) * 1000), 1)
            if state.refused_with is not None:
                keep_ms = 3_600_000  # a refusal holds an hour, or until a daemon restarts
            value = orjson.dumps({"until": until, "refused": state.refused_with})
            news = self.event("key", names[index], until=until, refused=state.refused_with)

            async def send() -> None:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.set(key, value, px=keep_ms)
                    pipe.publish(self.channel, news)
                    await pipe.execute()

            self.send_soon(send)

        pool.on_change = changed
        self.send_soon(lambda: self._catch_up_keys([pool]))

    async def fleet_counters(self) -> dict[str, Any] | None:
        """Every daemon's counters, summed (this one's written first); None without Redis."""
        await self.call(self._report_counters)

        async def read() -> list[Any]:
            keys = [k async for k in self.redis.scan_iter(match=f"{self.prefix}daemon:*")]
            return list(await self.redis.mget(keys)) if keys else []

        reports = await self.call(read)
        if reports is None:
            return None
        totals: dict[str, Any] = {"daemons": 0}
        for raw in reports:
            report = loads_or_none(raw)
            if not isinstance(report, dict):
                self.foreign.warn("fleet.foreign_report_ignored", prefix=self.prefix)
                continue
            totals["daemons"] += 1
            for counters in report.values():
                if isinstance(counters, dict):
                    for name, value in counters.items():
                        if isinstance(value, int) and name in CacheCounters.__annotations__:
                            totals[name] = totals.get(name, 0) + value
        return totals

    # -- catching up, and hearing from the others -------------------------------------------

    async def _catch_up(self) -> None:
        for shared in list(self._lists.values()):
            await shared.check()
        await self._catch_up_keys(list(self._key_names))
        await self._report_counters()

    async def _report_counters(self) -> None:
        report = {name: asdict(counters) for name, counters in self.counters().items()}
        await self.redis.set(
            f"{self.prefix}daemon:{self.daemon}",
            orjson.dumps(report),
            px=int(COUNTERS_KEEP_SECONDS * 1000),
        )

    async def _catch_up_keys(self, pools: list[KeyPool]) -> None:
        names = [name for pool in pools for name in self._key_names.get(pool, ())]
        if not names:
            return
        values = await self.redis.mget([f"{self.prefix}key:{name}" for name in names])
        for name, raw in zip(names, values, strict=True):
            if raw is not None:
                self._apply_key(name, loads_or_none(raw))

    def _on_event(self, raw: object) -> None:
        event = loads_or_none(raw)
        if (
            not isinstance(event, dict)
            or event.get("kind") not in EVENT_KINDS
            or not isinstance(event.get("target"), str)
        ):
            self.foreign.warn("fleet.foreign_event_ignored", channel=self.channel)
            return
        if event.get("by") == self.daemon:
            return
        target = event["target"]
        if event["kind"] == "key":
            self._apply_key(target, event)
        elif (shared := self._lists.get(target)) is not None:
            shared.heard(event["kind"])

    def _apply_key(self, name: str, state: object) -> None:
        """A key's rest or refusal as another daemon decided it (the pool caps the rest)."""
        if not isinstance(state, dict):
            self.foreign.warn("fleet.foreign_key_state_ignored", key=name)
            return
        until, refused = state.get("until"), state.get("refused")
        if not isinstance(until, (int, float)) or not (refused is None or refused in REFUSED):
            self.foreign.warn("fleet.foreign_key_state_ignored", key=name)
            return
        for pool, names in list(self._key_names.items()):
            for index, mine in enumerate(names):
                if mine == name:
                    pool.told(index, float(until), refused)


def identity(provider: ProviderSettings) -> str:
    """What two daemons must agree on to share an instance's list: all of its settings (name,
    type, URL, headers, options) and its keys, hashed."""
    shown = provider.model_dump(mode="json", exclude={"api_key", "api_keys"})
    document = orjson.dumps([shown, provider.keys], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(document).hexdigest()[:32]


def _key_name(base_url: str, key: str) -> str:
    return hashlib.sha256(f"{base_url}\0{key}".encode()).hexdigest()[:32]


async def _quietly(closing: Awaitable[Any]) -> None:
    try:
        await asyncio.wait_for(closing, OP_SECONDS)
    except Exception:  # a connection already gone cannot be closed any better
        return
