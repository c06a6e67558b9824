"""ModelCache: one instance's model list with TTL, single-flight refresh, stale-while-revalidate,
backoff, and a fallback chain so an outage never empties the list."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Protocol

import structlog

from localrouter.base.errors import UpstreamError
from localrouter.providers.base import ModelInfo

Clock = Callable[[], float]
Fetch = Callable[[], Awaitable[list[ModelInfo]]]

log = structlog.get_logger(__name__)

BACKOFF_FIRST_SECONDS = 2.0
BACKOFF_MAX_SECONDS = 60.0
FOLLOW_ROUNDS = 2  # times a daemon waits on another daemon's call before making its own


class Source(StrEnum):
    LIVE = "live"
    STALE = "stale"
    PERSISTED = "persisted"
    CATALOG = "catalog"
    STATIC = "static"


@dataclass(frozen=True, slots=True, eq=False)
class ModelList:
    """An immutable list with its provenance. Compared by identity: a new list is a new object."""

    models: tuple[ModelInfo, ...]
    source: Source
    fetched_at: float
    expires_at: float


Fallback = Callable[[], Awaitable[ModelList | None]]  # may read a file: never on the loop


class FleetList(Protocol):
    """This instance's list as the daemons of a fleet share it (shared_lists.py). Every
    method answers within a short bound, and as if there were no fleet when Redis is gone."""

    def attach(self, cache: ModelCache) -> None: ...
    def detach(self) -> None: ...
    async def newer(self, than: float) -> ModelList | None:
        """The shared list if it was fetched after `than` (a fetched_at)."""

    async def lead(self) -> bool:
        """Whether to call the upstream: True when this daemon holds the fleet's lock for the
        instance (or there is no fleet to ask), False when another daemon is calling."""

    async def follow(self, than: float) -> ModelList | str | None:
        """Wait for the daemon that leads: its list, its error, or None if it left neither."""

    async def publish(self, models: ModelList) -> None: ...
    async def failed(self, error: str) -> None: ...
    async def release(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Served:
    """What one request gets from one instance: a list and how to describe it right now."""

    models: ModelList
    source: Source


@dataclass(frozen=True, slots=True)
class CacheStatus:
    """One instance's list as /api/cache/stats, /api/providers and /metrics show it."""

    source: Source | None
    count: int
    fetched_at: float | None
    expires_at: float | None
    age_seconds: float | None
    expires_in_seconds: float | None
    ttl_seconds: float
    last_error: str | None
    refreshing: bool
    retry_in_seconds: float | None


@dataclass(slots=True)
class CacheCounters:
    hits: int = 0
    misses: int = 0
    refreshes: int = 0
    fallbacks: int = 0
    upstream_calls: int = 0
    upstream_errors: int = 0
    fleet_lists: int = 0  # lists taken from another daemon of the fleet instead of the upstream


def backoff_seconds(failures: int) -> float:
    return min(BACKOFF_FIRST_SECONDS * 2.0 ** max(failures - 1, 0), BACKOFF_MAX_SECONDS)


class ModelCache:
    def __init__(
        self,
        fetch: Fetch,
        *,
        ttl_seconds: float,
        clock: Clock = time.time,
        fallbacks: Sequence[Fallback] = (),
        fetched_source: Source = Source.LIVE,
        log_context: dict[str, Any] | None = None,
        on_new_list: Callable[[ModelList], None] | None = None,
        on_change: Callable[[], None] | None = None,
        counters: CacheCounters | None = None,
        fleet: FleetList | None = None,
    ) -> None:
        self._on_new_list = on_new_list
        self._on_change = on_change
        self._fetch = fetch
        self._ttl = ttl_seconds
        self._clock = clock
        self._fallbacks = fallbacks
        self._fetched_source = fetched_source
        self._log = log.bind(**(log_context or {}))
        self._list: ModelList | None = None
        # The two ways to serve the current list (as itself, as stale), made once per list so
        # that an unchanged answer is the identical object and a view can tell by identity.
        self._forms_of: ModelList | None = None
        self._as_itself: Served | None = None
        self._as_stale: Served | None = None
        self._fallback_list: ModelList | None = None
        self._fallback_resolved = False
        self._fallback_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._failures = 0
        self._retry_at = 0.0
        self.last_error: str | None = None
        self.counters = counters if counters is not None else CacheCounters()
        self._fleet = fleet
        self._taking: asyncio.Task[None] | None = None  # a list another daemon announced
        self._announcing: set[asyncio.Task[None]] = set()  # what this daemon tells the fleet
        if fleet is not None:
            fleet.attach(self)

    @property
    def current(self) -> ModelList | None:
        """The list this cache holds (fresh or not), or the fallback it is serving instead."""
        return self._list or (self._fallback_list if self._fallback_resolved else None)

    @property
    def ttl_seconds(self) -> float:
        return self._ttl

    def fresh(self) -> Served | None:
        """The list if it is fresh, without awaiting anything: the hot path. Counts a hit."""
        served = self.peek_fresh()
        if served is not None:
            self.counters.hits += 1
        return served

    def peek_fresh(self) -> Served | None:
        """`fresh` without counting: for a caller that may not use the answer."""
        current = self._list
        if current is not None and self._clock() < current.expires_at:
            if current is self._forms_of and self._as_itself is not None:
                return self._as_itself
            return self._served_as(current, stale=False)
        return None

    async def get(self, wait_seconds: float, *, refresh: bool = False) -> Served | None:
        """Serve the best list available, waiting at most `wait_seconds` for an upstream.

        refresh=True skips the fresh list and the backoff, still sharing one upstream call.
        """
        if not refresh and (served := self.fresh()) is not None:
            return served
        self.counters.misses += 1
        previous = self._list
        task = self._start_refresh(force=refresh)
        if previous is not None and not refresh:
            return self._describe(previous)
        if task is not None:
            await asyncio.wait({task}, timeout=wait_seconds)
        current = self._list
        if current is None:
            return await self._serve_fallback()
        return self._describe(current)

    def prefetch(self) -> None:
        """Start fetching a list nobody has asked for yet, so the first request finds it."""
        if self._list is None:
            self._start_refresh(force=False)

    def status(self) -> CacheStatus:
        now = self._clock()
        current = self._list
        served = self._describe(current) if current else None
        fallback = self._fallback_list if self._fallback_resolved and not current else None
        shown = current or fallback
        return CacheStatus(
            source=served.source if served else (fallback.source if fallback else None),
            count=len(shown.models) if shown else 0,
            fetched_at=current.fetched_at if current else None,
            expires_at=current.expires_at if current else None,
            age_seconds=round(now - current.fetched_at, 3) if current else None,
            expires_in_seconds=round(current.expires_at - now, 3) if current else None,
            ttl_seconds=self._ttl,
            last_error=self.last_error,
            refreshing=self._task is not None,
            retry_in_seconds=max(round(self._retry_at - now, 3), 0.0) if self._failures else None,
        )

    def set_ttl(self, ttl_seconds: float) -> None:
        """A changed TTL applies to the current list at once: expiry = fetched_at + new TTL."""
        self._ttl = ttl_seconds
        if self._list is not None and self._list.source is self._fetched_source:
            self._replace(replace(self._list, expires_at=self._list.fetched_at + ttl_seconds))

    def expire(self) -> None:
        """Mark the list expired but keep serving it (as stale) until a refresh replaces it."""
        now = self._clock()
        if self._list is not None and self._list.expires_at > now:
            self._replace(replace(self._list, expires_at=now))
        self._retry_at = 0.0

    def abandon(self) -> None:
        """Stop a refresh in flight without waiting for it (an evicted cache)."""
        if self._task is not None:
            self._task.cancel()

    async def close(self) -> None:
        if self._fleet is not None:
            self._fleet.detach()
        tasks = [t for t in (self._task, self._taking) if t is not None and not t.done()]
        self._task = self._taking = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, *self._announcing, return_exceptions=True)

    def fleet_list_changed(self) -> None:
        """Another daemon published a list (or the periodic check found one): take it unless
        a refresh, which reads it anyway, is under way."""
        if self._fleet is not None and self._task is None and self._taking is None:
            self._taking = asyncio.create_task(self._take_from_fleet(self._fleet))

    async def _take_from_fleet(self, fleet: FleetList) -> None:
        try:
            if (found := await fleet.newer(self._fetched_at())) is not None:
                self._install(found, from_fleet=True)
        finally:
            self._taking = None

    def _fetched_at(self) -> float:
        current = self._list
        return current.fetched_at if current is not None else float("-inf")

    def _describe(self, current: ModelList) -> Served:
        stale = current.source is Source.LIVE and self._clock() >= current.expires_at
        return self._served_as(current, stale=stale)

    def _served_as(self, models: ModelList, *, stale: bool) -> Served:
        if models is not self._forms_of or self._as_itself is None or self._as_stale is None:
            self._forms_of = models
            self._as_itself = Served(models, models.source)
            self._as_stale = Served(models, Source.STALE)
        return self._as_stale if stale else self._as_itself

    def _start_refresh(self, *, force: bool) -> asyncio.Task[None] | None:
        if self._task is not None:
            return self._task
        if not force and self._clock() < self._retry_at:
            return None
        self.counters.refreshes += 1
        self._task = asyncio.create_task(self._refresh())
        return self._task

    async def _refresh(self) -> None:
        fleet, leading = self._fleet, False
        try:
            if fleet is not None:
                if await self._took_published(fleet):
                    return
                for _ in range(FOLLOW_ROUNDS):
                    if leading := await fleet.lead():
                        # The lock may have been let go by a daemon that published a list
                        # just after the look above: that list, not another upstream call.
                        if await self._took_published(fleet):
                            return  # the lock is let go below
                        break
                    followed = await fleet.follow(self._fetched_at())
                    if isinstance(followed, ModelList):
                        self._install(followed, from_fleet=True)
                        return
                    if followed is not None:
                        self._record_failure(followed)
                        return
                # Still not leading: two leaders left nothing, so call it ourselves, unlocked.
            error = await self._fetch_and_install()
            if fleet is not None and leading:
                # Callers waiting for this refresh need not wait for the fleet to hear of it.
                announcing = asyncio.create_task(self._announce(fleet, error))
                self._announcing.add(announcing)
                announcing.add_done_callback(self._announcing.discard)
                leading = False
        finally:
            self._task = None
            if fleet is not None and leading:  # cancelled before the answer: let others try
                await asyncio.shield(fleet.release())

    async def _took_published(self, fleet: FleetList) -> bool:
        """Install a list the fleet has that is newer than ours; whether it is still fresh
        (then no call is needed)."""
        found = await fleet.newer(self._fetched_at())
        if found is None:
            return False
        self._install(found, from_fleet=True)
        return self._clock() < found.expires_at

    async def _announce(self, fleet: FleetList, error: str | None) -> None:
        """Tell the fleet what this daemon's call brought, then let go of its lock."""
        try:
            if error is None and self._list is not None:
                await fleet.publish(self._list)
            elif error is not None:
                await fleet.failed(error)
        finally:
            await fleet.release()

    async def _fetch_and_install(self) -> str | None:
        """Call the upstream; the error recorded if it failed."""
        self.counters.upstream_calls += 1
        try:
            models = await self._fetch()
        except UpstreamError as exc:
            return self._record_failure(exc.message)
        except Exception as exc:  # an adapter bug must not take the daemon down
            self._log.exception("provider.fetch_crashed")
            return self._record_failure(
                f"internal error while listing models: {type(exc).__name__}"
            )
        if not models and self._list is not None and self._list.models:
            return self._record_failure(
                "the upstream returned no models; keeping the previous list"
            )
        now = self._clock()
        self._install(ModelList(tuple(models), self._fetched_source, now, now + self._ttl))
        return None

    def _install(self, models: ModelList, *, from_fleet: bool = False) -> None:
        current = self._list
        if from_fleet:
            if current is not None and models.fetched_at <= current.fetched_at:
                return  # what we have is as new (a list announced twice, or our own)
            self.counters.fleet_lists += 1
        self._replace(models)
        if self._on_new_list is not None:
            self._on_new_list(models)
        if self._clock() < models.expires_at:
            self._failures = 0
            self._retry_at = 0.0
            self.last_error = None
        self._log.info("provider.models_refreshed", count=len(models.models), fleet=from_fleet)

    def _replace(self, models: ModelList) -> None:
        self._list = models
        if self._on_change is not None:
            self._on_change()

    def _record_failure(self, message: str) -> str:
        self.counters.upstream_errors += 1
        self._failures += 1
        delay = backoff_seconds(self._failures)
        self._retry_at = self._clock() + delay
        self.last_error = message
        self._log.warning("provider.refresh_failed", error=message, retry_in_seconds=delay)
        return message

    async def _serve_fallback(self) -> Served | None:
        async with self._fallback_lock:  # concurrent first requests read the chain once
            if not self._fallback_resolved:
                for fallback in self._fallbacks:
                    if (found := await fallback()) is not None:
                        self._fallback_list = found
                        break
                self._fallback_resolved = True
        if self._fallback_list is None:
            return None
        self.counters.fallbacks += 1
        return self._served_as(self._fallback_list, stale=False)
