"""Values derived from the instances' lists (rendered queries, grouped tables), kept per key
until any list under them changes: a changed list is a new object, so identity says it all."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from localrouter.cache import Served
from localrouter.registry import InstanceLists

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
DataKey = tuple[tuple[tuple[str, str], ...], tuple[Served | None, ...]]


class DerivedCache(Generic[K, V]):
    def __init__(self, capacity: int = 64) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[K, tuple[DataKey, V]] = OrderedDict()

    def keys(self) -> list[K]:
        return list(self._entries)

    def get(self, key: K, lists: InstanceLists, build: Callable[[], V]) -> V:
        data: DataKey = (lists.labels, lists.served)
        cached = self._entries.get(key)
        if cached is not None and cached[0] == data:
            self._entries.move_to_end(key)
            return cached[1]
        value = build()
        self._entries[key] = (data, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)
        return value
