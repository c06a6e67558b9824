"""GET /v1/models and /v1/models/{id}: merge, sort and serialise once per change."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web

from localrouter.cache import Served, Source
from localrouter.errors import ModelNotFound
from localrouter.providers.base import ModelInfo
from localrouter.responses import JSON, Body, cached_response
from localrouter.state import MODELS_VIEW, REGISTRY

Labels = tuple[tuple[str, str], ...]  # (instance name, provider type) per instance


@dataclass(frozen=True, slots=True)
class MergedModels:
    body: Body
    by_id: dict[str, dict[str, Any]]


class ModelsView:
    """The merged list, rebuilt only when some instance's served list or source changes.

    A cache keeps one Served object per list and source, so "unchanged" is an identity check
    per instance: no per-model work on the request path.
    """

    def __init__(self) -> None:
        self._labels: Labels = ()
        self._served: tuple[Served | None, ...] = ()
        self._merged: MergedModels | None = None

    def merged(self, labels: Labels, served: tuple[Served | None, ...]) -> MergedModels:
        # Tuple equality checks identity first, item by item: no Served.__eq__ on the hot path.
        if self._merged is None or served != self._served or labels != self._labels:
            self._merged = _merge(labels, served)
            self._labels, self._served = labels, served
        return self._merged


def merge_entries(labels: Labels, served: tuple[Served | None, ...]) -> list[dict[str, Any]]:
    """Every instance's models as /v1/models entries, sorted by id, first instance wins a tie."""
    by_id: dict[str, dict[str, Any]] = {}
    for (name, provider_type), answer in zip(labels, served, strict=True):
        if answer is None:
            continue
        for model in answer.models.models:
            entry = model_entry(name, provider_type, model, answer.source)
            by_id.setdefault(entry["id"], entry)
    return [by_id[model_id] for model_id in sorted(by_id)]


def _merge(labels: Labels, served: tuple[Served | None, ...]) -> MergedModels:
    data = merge_entries(labels, served)
    by_id = {entry["id"]: entry for entry in data}
    return MergedModels(Body.of({"object": "list", "data": data}), by_id)


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


async def _merged(request: web.Request) -> MergedModels:
    app = request.app
    registry = app[REGISTRY]
    lists = registry.fresh_lists() or await registry.lists(
        registry.settings.server.models_deadline_seconds
    )
    return app[MODELS_VIEW].merged(lists.labels, lists.served)


async def list_models(request: web.Request) -> web.Response:
    merged = await _merged(request)
    return cached_response(request, merged.body)


async def retrieve_model(request: web.Request) -> web.Response:
    model_id = request.match_info["model_id"]
    merged = await _merged(request)
    entry = merged.by_id.get(model_id)
    if entry is None:
        raise ModelNotFound(_not_found_message(model_id, merged.by_id), param="model")
    return web.Response(body=orjson.dumps(entry), content_type=JSON)


def _not_found_message(model_id: str, known: dict[str, Any]) -> str:
    message = f"The model '{model_id}' does not exist in any configured provider."
    close = difflib.get_close_matches(model_id, list(known), n=3, cutoff=0.6)
    if close:
        message += " Did you mean: " + ", ".join(close) + "?"
    else:
        message += " GET /v1/models lists the available ids (instance/model)."
    return message
