"""GET /v1/models and /v1/models/{id}: merge, sort and serialise once per change; and, when
the config shapes the list (aliases, hidden ids) or a client with an allowlist asks, that
variant, serialised once per change too (model_rules.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
import structlog
from aiohttp import hdrs, web
from multidict import istr

from localrouter.base.errors import ModelNotFound
from localrouter.base.offload import dismantle, dumps_array_in_steps, sorted_in_steps
from localrouter.base.suggest import Suggester
from localrouter.config.control import Client, ModelRules, ShapeKey, shape_key
from localrouter.config.live import LiveSettings
from localrouter.http.bodies import JSON, Body, accepts_gzip, cached_response, matches
from localrouter.lists.cache import Clock, Served, Source
from localrouter.lists.derived import DerivedCache
from localrouter.lists.registry import InstanceLists, Registry
from localrouter.lists.resolve import find, full_ids
from localrouter.providers.base import ModelInfo
from localrouter.state import (
    ANTHROPIC_MODELS,
    CLIENT,
    MODELS_VIEW,
    REGISTRY,
    SETTINGS,
)
from localrouter.views.anthropic import (
    AnthropicModels,
    anthropic_models,
    one_response,
    page_response,
)
from localrouter.views.ollama import our_id, show, shown_name

log = structlog.get_logger(__name__)

ANTHROPIC_VERSION = istr("anthropic-version")  # sent by Claude Code and the anthropic SDK

Labels = tuple[tuple[str, str], ...]  # (instance name, provider type) per instance


@dataclass(frozen=True, slots=True)
class MergedModels:
    body: Body
    by_id: dict[str, dict[str, Any]]
    suggester: Suggester

    def dismantle(self) -> None:
        dismantle(self.by_id)
        self.suggester.dismantle()


class ModelsView:
    """The merged list, rebuilt only when some instance's served list or source changes; and
    its shaped variants (aliases, hidden ids, a client's allowlist), one per config and client.

    A cache keeps one Served object per list and source, so "unchanged" is an identity check
    per instance: no per-model work on the request path.
    """

    def __init__(self) -> None:
        self._renders: DerivedCache[None, MergedModels] = DerivedCache(capacity=1)
        self.shaped: DerivedCache[ShapeKey, MergedModels] = DerivedCache(capacity=64)
        self._registry: Registry | None = None
        self._live: LiveSettings | None = None
        self._clock: Clock = time.time
        # What each caller (a client, or None) was last served, made from these lists and
        # rules; emptied when the registry says its lists change and when a reload changes the
        # rules, so that the hot path checks only the time.
        self._served: dict[Client | None, Visible] = {}
        self._served_lists: InstanceLists | None = None
        self._served_rules: ModelRules | None = None
        self._served_until = 0.0  # when the lists it was made from expire

    def serve_from(self, registry: Registry, live: LiveSettings) -> None:
        """Where `visible_now` finds the lists and the rules (the app's, once started)."""
        self._registry, self._live, self._clock = registry, live, registry.clock
        registry.when_lists_change(self._forget_served)
        live.subscribe(lambda _: self._forget_served())

    def _forget_served(self) -> None:
        self._served = {}
        self._served_lists = self._served_rules = None

    def visible_now(self, client: Client | None, *, count: bool = True) -> Visible | None:
        """The list as `client` sees it when it is there already, else None (then
        `visible_list` fetches and builds what is missing). The hot path of every cached
        view: no await, no per-model work. Counts a hit when it answers, unless told not to
        (then `count_hit` once the caller serves it)."""
        visible, registry = self._served.get(client), self._registry
        if visible is not None and registry is not None and self._clock() < self._served_until:
            if count:
                registry.unspread_hits += 1  # count_hits, inline
            return visible
        return self._visible_made_now(client, count)

    def list_now(self, request: web.Request, client: Client | None) -> web.Response | None:
        """GET /v1/models answered from memory when the caller's list is there already
        (routing.AnswerNow): `visible_now` and `cached_response` inline, one call in all, as
        this is the busiest route (under callgrind 1.5k fewer instructions a request than
        calling both)."""
        headers = request.headers
        if ANTHROPIC_VERSION in headers:  # Claude Code and the anthropic SDK: their own shape
            return None
        visible, registry = self._served.get(client), self._registry
        if visible is not None and registry is not None and self._clock() < self._served_until:
            registry.unspread_hits += 1  # count_hits, inline
        elif (visible := self._visible_made_now(client, True)) is None:
            return None
        body = visible[1].body
        if_none_match = headers.get(hdrs.IF_NONE_MATCH)
        if if_none_match and matches(if_none_match, body.etag):
            return web.Response(status=304, headers=body.validator_headers)
        if accepts_gzip(headers.get(hdrs.ACCEPT_ENCODING, "")):
            return web.Response(body=body.gzipped, headers=body.gzip_headers)
        return web.Response(body=body.raw, headers=body.raw_headers)

    def count_hit(self) -> None:
        if self._registry is not None:
            self._registry.count_hits()

    def _visible_made_now(self, client: Client | None, count: bool) -> Visible | None:
        visible: Visible
        registry, live = self._registry, self._live
        if registry is None or live is None:
            return None
        lists = registry.peek_fresh_lists()
        if lists is None:
            return None
        rules = live.rules
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
            shaped = self.shaped.peek(key, lists)  # made from the merged list of the same lists
            if shaped is None:
                return None
            visible = lists, shaped, key
        if len(self._served) < 256:  # bounded: one per client of the config, and None
            self._served[client] = visible
        if count:
            registry.count_hits()
        return visible

    def current(self, lists: InstanceLists) -> MergedModels | None:
        """The rendered list if nothing changed, without an await: found by the identity of
        the registry's snapshot (DerivedCache.peek), no per-model work."""
        return self._renders.peek(None, lists)

    async def merged(self, lists: InstanceLists) -> MergedModels:
        return self.current(lists) or await self._renders.get_async(
            None, lists, lambda: _merge(lists.labels, lists.served)
        )


def merge_entries(labels: Labels, served: tuple[Served | None, ...]) -> list[dict[str, Any]]:
    """Every instance's models as /v1/models entries, sorted by id, first instance wins a tie."""
    by_id: dict[str, dict[str, Any]] = {}
    for (name, provider_type), answer in zip(labels, served, strict=True):
        if answer is None:
            continue
        for model in answer.models.models:
            entry = model_entry(name, provider_type, model, answer.source)
            by_id.setdefault(entry["id"], entry)
    return [by_id[model_id] for model_id in sorted_in_steps(list(by_id))]


def _merge(labels: Labels, served: tuple[Served | None, ...]) -> MergedModels:
    data = merge_entries(labels, served)
    frame = {"prefix": b'{"object":"list","data":', "suffix": b"}"}
    try:
        raw = dumps_array_in_steps(data, **frame)
    except orjson.JSONEncodeError:
        data = _serialisable(labels, data)
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


def _serialisable(labels: Labels, data: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries of the instances whose entries serialise: one instance's bad value must not
    take down the others' listing (the parsers keep values in range; this is the backstop)."""
    failing = set()
    for name, _ in labels:
        try:
            orjson.dumps([entry for entry in data if entry["owned_by"] == name])
        except orjson.JSONEncodeError as exc:
            failing.add(name)
            log.error("models.instance_unserialisable", instance=name, error=str(exc))
    return [entry for entry in data if entry["owned_by"] not in failing]


def model_entry(
    instance: str, provider_type: str, model: ModelInfo, source: Source
) -> dict[str, Any]:
    """One model as /v1/models shows it: the OpenAI fields, then OpenRouter-style extras."""
    entry: dict[str, Any] = {
        "id": f"{instance}/{model.id}",
        "object": "model",
        "created": model.created,
        "owned_by": instance,
        "name": model.name or model.id,
        "description": model.description or "",
    }
    if model.context_length:
        entry["context_length"] = model.context_length
    if model.max_output_tokens:
        entry["max_output_tokens"] = model.max_output_tokens
        entry["top_provider"] = {"max_completion_tokens": model.max_output_tokens}
    if model.pricing:
        entry["pricing"] = {kind: price_text(usd) for kind, usd in model.pricing.items()}
    if model.input_modalities or model.output_modalities:
        entry["architecture"] = {
            "modality": "+".join(model.input_modalities) + "->" + "+".join(model.output_modalities),
            "input_modalities": list(model.input_modalities),
            "output_modalities": list(model.output_modalities),
        }
    if model.capabilities:
        entry["capabilities"] = list(model.capabilities)
    if model.supported_parameters:
        entry["supported_parameters"] = list(model.supported_parameters)
    if model.aliases:
        entry["aliases"] = list(model.aliases)
    if model.deprecated:
        entry["deprecated"] = True
    if not model.active:
        entry["active"] = False
    if model.catalog is not None:
        entry["catalog"] = {"id": model.catalog.id, "matched_via": model.catalog.matched_via}
    entry["provider"] = provider_type
    entry["upstream_id"] = model.id
    entry["source"] = source.value
    return entry


def price_text(usd_per_token: float) -> str:
    """USD per token as OpenRouter writes it: a plain decimal string, never exponent notation."""
    return format(Decimal(repr(usd_per_token)).normalize(), "f")


async def _merged(app: web.Application) -> tuple[InstanceLists, MergedModels]:
    registry = app[REGISTRY]
    lists = registry.fresh_lists() or await registry.lists(app[SETTINGS].models_deadline_seconds)
    view = app[MODELS_VIEW]
    return lists, view.current(lists) or await view.merged(lists)


# A list as one caller sees it: the lists it comes from, the list, and the key of its variant
# (None: the merged list as it is). A plain tuple: made on every request.
Visible = tuple[InstanceLists, MergedModels, ShapeKey | None]


async def visible(request: web.Request) -> Visible:
    """The list as the caller sees it: at once when it is there (ModelsView.visible_now)."""
    client = request[CLIENT]
    return request.app[MODELS_VIEW].visible_now(client) or await visible_list(request, client)


async def visible_list(request: web.Request, client: Client | None) -> Visible:
    """The list as `client` sees it, fetching and building what is missing."""
    app = request.app
    registry, view, live = app[REGISTRY], app[MODELS_VIEW], app[SETTINGS]
    lists = registry.fresh_lists() or await registry.lists(live.models_deadline_seconds)
    merged = view.current(lists) or await view.merged(lists)
    rules = live.rules
    key = shape_key(rules, client)
    if key is None:
        return lists, merged, None
    shaped = view.shaped
    found = shaped.peek(key, lists)
    if found is None:
        full_id = await full_ids(app)
        found = await shaped.get_async(key, lists, lambda: shape(merged, rules, client, full_id))
    return lists, found, key


async def _in_anthropic_shape(
    request: web.Request, lists: InstanceLists, merged: MergedModels, key: ShapeKey | None
) -> AnthropicModels:
    cache = request.app[ANTHROPIC_MODELS]
    return cache.peek(key, lists) or await cache.get_async(
        key, lists, lambda: anthropic_models(merged)
    )


class ListModels:
    """GET /v1/models, for the app whose `view` it is (bound at start: no lookup a request)."""

    def __init__(self, view: ModelsView) -> None:
        self._view = view
        self.now = view.list_now  # the answer when the caller's list is there already

    async def __call__(self, request: web.Request) -> web.Response:
        client = request[CLIENT]
        lists, shown, key = self._view.visible_now(client) or await visible_list(request, client)
        if ANTHROPIC_VERSION in request.headers:  # Claude Code and the anthropic SDK
            return page_response(request, await _in_anthropic_shape(request, lists, shown, key))
        return cached_response(request, shown.body)


async def retrieve_model(request: web.Request) -> web.Response:
    entry = await visible_entry(request, request.match_info["model_id"])
    if ANTHROPIC_VERSION in request.headers:
        return one_response(entry)
    return web.Response(body=orjson.dumps(entry), content_type=JSON)


async def ollama_show(request: web.Request) -> web.Response:
    """POST /api/show: one model, as Ollama describes it."""
    name = await shown_name(request)
    entry = await visible_entry(request, await our_id(request.app, name))
    return web.Response(body=orjson.dumps(show(entry, name)), content_type=JSON)


async def visible_entry(request: web.Request, model_id: str) -> dict[str, Any]:
    """One model's entry by id, alias or bare upstream id (resolved as a chat request is). A
    hidden model is unlisted, not unknown: it is found here; one outside the caller's
    allowlist is not."""
    app = request.app
    _, merged = await _merged(app)
    rules, client = app[SETTINGS].rules, request[CLIENT]
    target = rules.target(model_id)
    entry = merged.by_id.get(target)
    if entry is None and (found := await find(app, target)) is not None:
        instance, upstream_id = found  # a bare upstream id: resolved as a chat request does
        entry = merged.by_id.get(f"{instance.name}/{upstream_id}")
    if entry is None or (client is not None and not client.allows(model_id, entry["id"])):
        _, shown, _ = await visible(request)
        raise ModelNotFound(_not_found_message(model_id, shown.suggester), param="model")
    if model_id != entry["id"] and model_id in rules.aliases:
        entry = {**entry, "id": model_id, "alias_of": entry["id"]}
    return entry


def _not_found_message(model_id: str, suggester: Suggester) -> str:
    message = f"The model '{model_id[:200]}' does not exist in any configured provider."
    close = suggester.close(model_id, cutoff=0.6)
    if close:
        message += " Did you mean: " + ", ".join(close) + "?"
    else:
        message += " GET /v1/models lists the available ids (instance/model)."
    return message
