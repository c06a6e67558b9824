"""The merged list (/v1/models' body) and, when the config shapes it (aliases, hidden ids) or
a client with an allowlist asks, that caller's variant: each built and serialised once per
change (config/control.py), and what every list view renders from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from localrouter.base.errors import ModelNotFound
from localrouter.base.offload import dismantle, dumps_array_in_steps
from localrouter.base.suggest import Suggester
from localrouter.config.control import Client, ModelRules, ShapeKey, may_call, shape_key
from localrouter.config.live import LiveSettings
from localrouter.http.bodies import Body
from localrouter.lists.cache import Served
from localrouter.lists.derived import DerivedCache
from localrouter.lists.entries import Labels, merge_entries, serialisable
from localrouter.lists.registry import InstanceLists, Registry
from localrouter.lists.resolve import Resolver


@dataclass(frozen=True, slots=True)
class MergedModels:
    body: Body
    by_id: dict[str, dict[str, Any]]
    suggester: Suggester

    def dismantle(self) -> None:
        dismantle(self.by_id)
        self.suggester.dismantle()


# A list as one caller sees it: the lists it comes from, the list, and the key of its variant
# (None: the merged list as it is). A plain tuple: made on every request.
Visible = tuple[InstanceLists, MergedModels, ShapeKey | None]


class ModelsView:
    """The merged list, rebuilt only when some instance's served list or source changes; and
    its shaped variants (aliases, hidden ids, a client's allowlist), one per config and client.

    A cache keeps one Served object per list and source, so "unchanged" is an identity check
    per instance: no per-model work on the request path.
    """

    def __init__(self, registry: Registry, live: LiveSettings, resolver: Resolver) -> None:
        self._renders: DerivedCache[None, MergedModels] = DerivedCache(capacity=1)
        self._shaped: DerivedCache[ShapeKey, MergedModels] = DerivedCache(capacity=64)
        self._registry, self._live, self._resolver = registry, live, resolver
        self._clock = registry.clock
        # What each caller (a client, or None) was last served, made from these lists and
        # rules; emptied when the registry says its lists change and when a reload changes the
        # rules, so that the memory path checks only the time.
        self._served: dict[Client | None, Visible] = {}
        self._served_lists: InstanceLists | None = None
        self._served_rules: ModelRules | None = None
        self._served_until = 0.0  # when the lists it was made from expire
        registry.when_lists_change(self._forget_served)
        live.subscribe(lambda _: self._forget_served())

    def _forget_served(self) -> None:
        self._served = {}
        self._served_lists = self._served_rules = None

    def visible_now(self, client: Client | None) -> Visible | None:
        """The list as `client` sees it when it is in memory already, else None (then
        `visible` fetches and builds what is missing). The memory path of every cached list
        route (http.endpoint.AnswersFromMemory): no await, no per-model work."""
        visible = self._served.get(client)
        if visible is not None and self._clock() < self._served_until:
            return visible
        return self._visible_made_now(client)

    def _visible_made_now(self, client: Client | None) -> Visible | None:
        visible: Visible
        registry = self._registry
        lists = registry.peek_fresh_lists()
        if lists is None:
            return None
        rules = self._live.rules
        if lists is not self._served_lists or rules is not self._served_rules:
            self._served = {}
            self._served_lists, self._served_rules = lists, rules
            self._served_until = registry.fresh_until
        if client is None and not rules.shapes_lists:
            merged = self._renders.peek(None, lists)
            if merged is None:
                return None
            visible = lists, merged, None
        else:
            key = (rules, client)
            shaped = self._shaped.peek(key, lists)  # made from the merged list of these lists
            if shaped is None:
                return None
            visible = lists, shaped, key
        if len(self._served) < 256:  # bounded: one per client of the config, and None
            self._served[client] = visible
        return visible

    def count_hit(self) -> None:
        """A request answered from memory: counted as a cache hit of every instance."""
        self._registry.count_hits()

    async def merged(self, lists: InstanceLists) -> MergedModels:
        return await self._renders.get_async(
            None, lists, lambda: _merge(lists.labels, lists.served)
        )

    async def visible(self, client: Client | None) -> Visible:
        """The list as `client` sees it, fetching and building what is missing."""
        lists = await self._resolver.lists()
        merged = await self.merged(lists)
        rules = self._live.rules
        key = shape_key(rules, client)
        if key is None:
            return lists, merged, None
        found = self._shaped.peek(key, lists)
        if found is None:  # full_ids awaits an index: only when the variant must be built
            full_id = await self._resolver.full_ids()
            found = await self._shaped.get_async(
                key, lists, lambda: shape(merged, rules, client, full_id)
            )
        return lists, found, key

    async def entry(self, model_id: str, client: Client | None) -> dict[str, Any]:
        """One model's entry by id, alias or bare upstream id (resolved as a chat request is).
        A hidden model is unlisted, not unknown: it is found here; one outside the caller's
        allowlist is not, and neither are suggestions outside it."""
        merged = await self.merged(await self._resolver.lists())
        rules = self._live.rules
        target = rules.target(model_id)
        entry = merged.by_id.get(target)
        if entry is None and (found := await self._resolver.find(target)) is not None:
            instance, upstream_id = found  # a bare upstream id: resolved as a chat request does
            entry = merged.by_id.get(f"{instance.name}/{upstream_id}")
        if entry is None or (client is not None and not may_call(client, model_id, entry["id"])):
            _, shown, _ = await self.visible(client)
            raise ModelNotFound(_not_found_message(model_id, shown.suggester), param="model")
        if model_id != entry["id"] and model_id in rules.aliases:
            entry = {**entry, "id": model_id, "alias_of": entry["id"]}
        return entry


def _merge(labels: Labels, served: tuple[Served | None, ...]) -> MergedModels:
    data = merge_entries(labels, served)
    frame = {"prefix": b'{"object":"list","data":', "suffix": b"}"}
    try:
        raw = dumps_array_in_steps(data, **frame)
    except orjson.JSONEncodeError:
        data = serialisable(labels, data)
        raw = dumps_array_in_steps(data, **frame)
    body = Body.of_bytes(raw)
    by_id = {entry["id"]: entry for entry in data}
    return MergedModels(body, by_id, Suggester(by_id))


def shape(
    merged: MergedModels,
    rules: ModelRules,
    client: Client | None,
    full_id: Callable[[str], str | None],
) -> MergedModels:
    """The merged list as `client` sees it under `rules` (ModelRules.shaped)."""
    data = rules.shaped(merged.by_id, client, full_id)
    raw = dumps_array_in_steps(data, prefix=b'{"object":"list","data":', suffix=b"}")
    by_id = {entry["id"]: entry for entry in data}
    return MergedModels(Body.of_bytes(raw), by_id, Suggester(by_id))


def _not_found_message(model_id: str, suggester: Suggester) -> str:
    message = f"The model '{model_id[:200]}' does not exist in any configured provider."
    close = suggester.close(model_id, cutoff=0.6)
    if close:
        message += " Did you mean: " + ", ".join(close) + "?"
    else:
        message += " GET /v1/models lists the available ids (instance/model)."
    return message
