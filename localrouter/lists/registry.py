"""The configured instances and their caches.

A new config is applied under a plain lock, so two applies (or an apply and the close) never
interleave. Readers take no lock: an apply publishes each new set of instances as one immutable
tuple, which a reader picks up in a single step, and a request keeps using the instances it
picked up even if a reload replaces them meanwhile. (A read/write lock was here; only its writer
side was ever taken, since awaiting a reader side would cost every /v1/models request an
event-loop turn.)
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import structlog

from localrouter.base.errors import BadRequest
from localrouter.base.offload import heavy
from localrouter.catalog import CatalogStore
from localrouter.catalog.enrich import enrich, model_from_entry
from localrouter.config.settings import ProviderSettings, Settings
from localrouter.lists.cache import (
    CacheCounters,
    Clock,
    Fallback,
    ModelCache,
    ModelList,
    Served,
    Source,
)
from localrouter.lists.instance import Instance
from localrouter.lists.persist import ListStore
from localrouter.providers.base import (
    ModelInfo,
    ProviderKind,
)
from localrouter.providers.parsing import sane_models
from localrouter.upstream.client import Transport, UpstreamClient
from localrouter.upstream.key_pool import KeyPool, first_that_works

if TYPE_CHECKING:
    from localrouter.lists.fleet import Fleet

log = structlog.get_logger(__name__)

MAX_KEYED_TWINS = 32


class InstanceLists(NamedTuple):  # a NamedTuple: built on every request, cheaply
    """One request's view of the instances: each one's served list, or None if it has none."""

    instances: tuple[Instance, ...]
    labels: tuple[tuple[str, str], ...]  # (instance name, provider type), for views
    served: tuple[Served | None, ...]


class Registry:
    def __init__(
        self,
        settings: Settings,
        transport: Transport,
        *,
        clock: Clock = time.time,
        catalog: CatalogStore | None = None,
        lists_dir: Path | None = None,
        fleet: Fleet | None = None,
    ) -> None:
        self._transport = transport
        self.fleet = fleet
        self._lists_dir = lists_dir
        self._clock = clock
        self._catalog = catalog
        self._lock = asyncio.Lock()  # one config switch (or the close) at a time
        self._settings = settings
        # Per instance name, for the life of the process: an instance rebuilt by a reload
        # keeps counting where it was, so counters never go backwards.
        self._counters: dict[str, CacheCounters] = {}
        self._twins: OrderedDict[tuple[str, str], Instance] = OrderedDict()
        # Every instance's fresh list, taken once and served until one expires or changes
        # (each cache calls `_lists_changed`): the hot path is one clock read.
        self._fresh: InstanceLists | None = None
        self._fresh_until = 0.0
        self._when_dropped: list[Callable[[], None]] = []  # told when `_fresh` is dropped
        self._hit_counters: tuple[CacheCounters, ...] = ()
        # Requests served from the snapshot since the counters were last read: a hit for every
        # instance, added to their counters when they are read (one addition per request, not
        # one per instance). The hot path (ModelsView.visible_now) adds to it directly.
        self.unspread_hits = 0
        self._publish({})  # the configured instances come with `start`

    def start(self) -> None:
        """Build the configured instances and start fetching their lists: once the app runs,
        after the fleet link is up (a pool or list shared with the fleet talks to it at once,
        and the first fetch can then be the fleet's one)."""
        settings = self._settings
        self._publish({p.name: self._build(p, settings) for p in settings.enabled_providers})
        for instance in self._ordered:
            instance.cache.prefetch()

    def counters(self) -> Mapping[str, CacheCounters]:
        """Every instance's counters, including instances a reload has removed (read them
        here: hits served from the snapshot are added to them now)."""
        self._spread_hits()
        return self._counters

    def instances(self, names: Sequence[str] | None = None) -> tuple[Instance, ...]:
        """The current instances in config order (only `names`, if given)."""
        if names is None:
            return self._ordered
        by_name = self._by_name
        return tuple(by_name[name] for name in names if name in by_name)

    def instance(self, name: str) -> Instance | None:
        return self._by_name.get(name)

    def named(self, name: str, param: str) -> Instance:
        """The instance `name`, or a 400 (about the request's `param`) naming the known ones."""
        found = self._by_name.get(name)
        if found is None:
            known = ", ".join(self._by_name) or "none configured"
            raise BadRequest(
                f"{param}: no instance named {name!r}; known instances: {known}", param=param
            )
        return found

    def _publish(self, instances: dict[str, Instance]) -> None:
        self._by_name = instances
        self._resolved: dict[str, tuple[Instance, str]] = {}
        self._ordered = tuple(instances.values())
        self._labels = _labels(self._ordered)
        self._spread_hits()  # to the instances that served them
        self._hit_counters = tuple(instance.cache.counters for instance in self._ordered)
        self._lists_changed()

    def _lists_changed(self) -> None:
        self._fresh = None
        for listener in self._when_dropped:
            listener()

    def when_lists_change(self, listener: Callable[[], None]) -> None:
        """Call `listener` whenever the lists `peek_fresh_lists` hands out may change: for
        what keeps an answer made from them until then, or until `fresh_until`."""
        self._when_dropped.append(listener)

    @property
    def fresh_until(self) -> float:
        """When the lists `peek_fresh_lists` last handed out expire (by the clock)."""
        return self._fresh_until

    @property
    def clock(self) -> Clock:
        return self._clock

    def with_caller_keys(
        self, instances: tuple[Instance, ...], keys: Mapping[str, str]
    ) -> tuple[Instance, ...]:
        """Each instance whose provider type has a caller key, swapped for its keyed twin.

        A twin is cached under a hash of the key, so a list fetched with one caller's key is
        never served to a caller with another; twins are never persisted.
        """
        return tuple(
            self._twin(instance, keys[instance.settings.type])
            if instance.settings.type in keys
            else instance
            for instance in instances
        )

    def _twin(self, instance: Instance, key: str) -> Instance:
        slot = (instance.name, hashlib.sha256(key.encode()).hexdigest())
        twin = self._twins.get(slot)
        if twin is None or twin.base is not instance:
            keyed = instance.settings.with_key(key)
            twin = self._build(keyed, self._settings, base=instance)
            self._twins[slot] = twin
            while len(self._twins) > MAX_KEYED_TWINS:
                _, evicted = self._twins.popitem(last=False)
                evicted.cache.abandon()
        self._twins.move_to_end(slot)
        return twin

    def peek_fresh_lists(self) -> InstanceLists | None:
        """Every instance's list if all are fresh, without counting a hit or awaiting (the
        memory path of cached list routes): the same object until a list changes or expires,
        so that what is derived from it can be found by identity."""
        fresh = self._fresh
        if fresh is None or self._clock() >= self._fresh_until:
            return self._take_fresh()
        return fresh

    def count_hits(self) -> None:
        """A request served from the snapshot (see `unspread_hits`)."""
        self.unspread_hits += 1

    def _spread_hits(self) -> None:
        hits, self.unspread_hits = self.unspread_hits, 0
        if hits:
            for counters in self._hit_counters:
                counters.hits += hits

    def _take_fresh(self) -> InstanceLists | None:
        served: list[Served] = []
        for instance in self._ordered:
            if (fresh := instance.cache.peek_fresh()) is None:
                return None
            served.append(fresh)
        lists = InstanceLists(self._ordered, self._labels, tuple(served))
        self._fresh_until = min((item.models.expires_at for item in served), default=math.inf)
        self._fresh = lists
        return lists

    async def lists(
        self,
        wait_seconds: float,
        *,
        instances: tuple[Instance, ...] | None = None,
        refresh: bool = False,
    ) -> InstanceLists:
        """Every instance's list, fetched concurrently, none waited on past `wait_seconds`."""
        if instances is None:
            instances, labels = self._ordered, self._labels
        else:
            labels = _labels(instances)
        served: list[Served | None] = (
            [None] * len(instances) if refresh else [i.cache.fresh() for i in instances]
        )
        pending = [index for index, item in enumerate(served) if item is None]
        if len(pending) == 1:  # common enough to skip gather's task per instance
            served[pending[0]] = await instances[pending[0]].cache.get(
                wait_seconds, refresh=refresh
            )
        elif pending:
            results = await asyncio.gather(
                *(instances[i].cache.get(wait_seconds, refresh=refresh) for i in pending)
            )
            for index, result in zip(pending, results, strict=True):
                served[index] = result
        return InstanceLists(instances, labels, tuple(served))

    def expire(self, names: Sequence[str] | None = None) -> list[str]:
        """Mark lists expired (they stay, served as stale, until a refresh replaces them)."""
        chosen = self.instances(names)
        for instance in chosen:
            instance.cache.expire()
        for (name, _), twin in self._twins.items():
            if names is None or name in names:
                twin.cache.expire()
        return [instance.name for instance in chosen]

    def resolve(self, model_id: str) -> tuple[Instance, str] | None:
        """`instance/upstream-id` -> the instance and the upstream id (remembered until the
        instances change: clients call the same few ids again and again)."""
        found = self._resolved.get(model_id)
        if found is None:
            name, slash, upstream_id = model_id.partition("/")
            instance = self._by_name.get(name) if slash and upstream_id else None
            if instance is None:
                return None
            found = instance, upstream_id
            if len(self._resolved) < 4096:  # bounded: callers choose the ids
                self._resolved[model_id] = found
        return found

    async def apply(self, settings: Settings) -> None:
        """Switch to a new config: unchanged instances keep their lists (with the new TTL),
        changed ones start empty, removed ones disappear."""
        async with self._lock:
            old = self._by_name
            new: dict[str, Instance] = {}
            for provider in settings.enabled_providers:
                kept = old.get(provider.name)
                if kept is not None and kept.settings == provider:
                    kept.cache.set_ttl(settings.ttl_for(provider))
                    new[provider.name] = kept
                else:
                    new[provider.name] = self._build(provider, settings)
            dropped = [instance for name, instance in old.items() if new.get(name) is not instance]
            dropped += self._twins.values()
            self._twins.clear()
            self._publish(new)
            self._settings = settings
            await asyncio.gather(*(instance.cache.close() for instance in dropped))

    async def close(self) -> None:
        """Stop refreshing and let every pending list write land."""
        async with self._lock:
            everything = (*self._ordered, *self._twins.values())
            await asyncio.gather(*(instance.cache.close() for instance in everything))
            await asyncio.gather(*(i.store.flush() for i in everything if i.store is not None))

    def _build(
        self, provider: ProviderSettings, settings: Settings, base: Instance | None = None
    ) -> Instance:
        spec = provider.spec
        http = UpstreamClient(
            self._transport,
            timeout_seconds=provider.timeout_seconds,
            max_bytes=provider.max_response_bytes,
            secrets=provider.secret_values,
            instance=provider.name,
        )
        adapter = spec.factory(provider, spec)
        catalog_provider = provider.catalog_scope
        pool = KeyPool(provider.name, len(provider.keys), self._clock) if provider.pooled else None
        # An adapter per key of a pool: each keeps the headers of its own key.
        keyed = tuple(spec.factory(provider.with_key(k), spec) for k in provider.keys if pool)

        async def fetch() -> list[ModelInfo]:
            if pool is None:
                models = await adapter.list_models(http)
            else:
                models = await first_that_works(pool, lambda key: keyed[key].list_models(http))
            catalog = self._catalog.current() if self._catalog else None

            def finish() -> list[ModelInfo]:
                return enrich(sane_models(models, provider.name), catalog, catalog_provider)

            return await heavy(finish, len(models))  # enriching 100,000 models takes seconds

        fallbacks: list[Fallback] = []
        store = None
        if self._lists_dir is not None and settings.model_cache.persist and base is None:
            store = ListStore(
                self._lists_dir, provider.name, provider.type, provider.resolved_base_url
            )
            fallbacks.append(store.load)
        if settings.model_cache.use_catalog_fallback and catalog_provider and self._catalog:
            fallbacks.append(partial(self._catalog_fallback, catalog_provider))
        if spec.static_models:
            fallbacks.append(self._static_fallback(spec.static_models))
        shared = self.fleet is not None and base is None  # a caller's key is never shared
        if shared and pool is not None:
            assert self.fleet is not None
            self.fleet.share_pool(pool, provider)
        cache = ModelCache(
            fetch,
            ttl_seconds=settings.ttl_for(provider),
            clock=self._clock,
            fallbacks=fallbacks,
            fetched_source=Source.STATIC if provider.kind is ProviderKind.STATIC else Source.LIVE,
            log_context={"instance": provider.name, "caller_key": base is not None},
            on_new_list=store.save_soon if store else None,
            on_change=self._lists_changed if base is None else None,
            counters=self._counters.setdefault(provider.name, CacheCounters())
            if base is None
            else None,
            fleet=self.fleet.shared_list(provider) if self.fleet and shared else None,
        )
        return Instance(provider, adapter, http, cache, base=base, store=store, keys=pool)

    async def _catalog_fallback(self, catalog_provider: str) -> ModelList | None:
        """The catalog's models for this provider, when its upstream cannot be reached."""
        assert self._catalog is not None
        scope = self._catalog.current().scope(catalog_provider)
        if scope is None or not scope.entries:
            return None

        def build() -> tuple[ModelInfo, ...]:
            return tuple(
                model_from_entry(key, entry, scope.catalog_id(key))
                for key, entry in scope.entries.items()
            )

        models = await heavy(build, len(scope.entries))
        now = self._clock()
        return ModelList(models, Source.CATALOG, now, now)

    def _static_fallback(self, model_ids: tuple[str, ...]) -> Fallback:
        async def static() -> ModelList:
            now = self._clock()
            models = tuple(ModelInfo(id=model_id) for model_id in model_ids)
            return ModelList(models, Source.STATIC, now, now)

        return static


def _labels(instances: tuple[Instance, ...]) -> tuple[tuple[str, str], ...]:
    return tuple((instance.name, instance.settings.type) for instance in instances)
