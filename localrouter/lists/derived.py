"""Values derived from the instances' lists (rendered queries, grouped tables, indexes), kept
per key until any list under them changes: a changed list is a new object, so identity says it
all. Building from a long list happens in a worker thread, so the loop keeps answering."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from localrouter.base.offload import INLINE_ITEMS, heavy, release
from localrouter.lists.cache import Served
from localrouter.lists.registry import InstanceLists

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
DataKey = tuple[tuple[tuple[str, str], ...], tuple[Served | None, ...]]


def model_count(served: tuple[Served | None, ...]) -> int:
    return sum(len(item.models.models) for item in served if item is not None)


async def build_off_loop(served: tuple[Served | None, ...], build: Callable[[], V]) -> V:
    """`build()`, in a worker thread when the lists it reads are long."""
    return await heavy(build, model_count(served))


class _Entry(Generic[V]):
    __slots__ = ("data", "seen", "value")

    def __init__(self, data: DataKey, value: V, seen: InstanceLists) -> None:
        self.data, self.value = data, value
        self.seen = seen  # the last lists found to match: the registry hands out the same one


class DerivedCache(Generic[K, V]):
    def __init__(self, capacity: int = 64) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()
        self._building: dict[tuple[K, DataKey], asyncio.Future[V]] = {}

    def keys(self) -> list[K]:
        return list(self._entries)

    def peek(self, key: K, lists: InstanceLists) -> V | None:
        """The value if it is current: no work, no await (the hot path)."""
        cached = self._entries.get(key)
        if cached is None:
            return None
        if cached.seen is not lists:
            if cached.data != (lists.labels, lists.served):
                return None
            cached.seen = lists
        self._entries.move_to_end(key)
        return cached.value

    def get(self, key: K, lists: InstanceLists, build: Callable[[], V]) -> V:
        found = self.peek(key, lists)
        if found is not None:
            return found
        return self._store(key, lists, (lists.labels, lists.served), build())

    async def get_async(self, key: K, lists: InstanceLists, build: Callable[[], V]) -> V:
        """`get`, building off the loop for long lists; concurrent callers share one build."""
        found = self.peek(key, lists)
        if found is not None:
            return found
        data: DataKey = (lists.labels, lists.served)
        pending = self._building.get((key, data))
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._building[(key, data)] = future
        try:
            value = await build_off_loop(lists.served, build)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: a caller that shares it re-raises it
            raise
        finally:
            del self._building[(key, data)]
        future.set_result(value)
        return self._store(key, lists, data, value)

    def _store(self, key: K, lists: InstanceLists, data: DataKey, value: V) -> V:
        replaced = self._entries.get(key)
        self._entries[key] = _Entry(data, value, lists)
        self._entries.move_to_end(key)
        dropped = [replaced] if replaced is not None else []
        while len(self._entries) > self._capacity:
            dropped.append(self._entries.popitem(last=False)[1])
        for old in dropped:  # a long list's derivations are freed off the loop
            if model_count(old.data[1]) > INLINE_ITEMS:
                release(old.value, old.data)
        return value
