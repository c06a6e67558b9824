"""The merged list's entries: every instance's models as /v1/models lists them (the OpenAI
fields, then OpenRouter-style extras), sorted by id, the first instance winning a tie. Every
list shape is rendered from these."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import structlog

from localrouter.base.offload import sorted_in_steps
from localrouter.lists.cache import Served, Source
from localrouter.providers.base import ModelInfo

log = structlog.get_logger(__name__)

Labels = tuple[tuple[str, str], ...]  # (instance name, provider type) per instance


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


def serialisable(labels: Labels, data: list[dict[str, Any]]) -> list[dict[str, Any]]:
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


def capabilities_of(entry: dict[str, Any]) -> tuple[str, ...]:
    """What a model can do, the one rule every view follows: what the entry lists, and for a
    model nothing lists anything of, chat. A chat model the catalog does not know (no
    `catalog` reference) is taken to call tools: most do, clients offer only models that do
    (GitHub Copilot's Ollama mode requires it), and a call that cannot use them fails
    upstream, visibly. One the catalog knows calls tools only when the catalog says so."""
    listed = tuple(entry.get("capabilities") or ("chat",))
    if "chat" in listed and "tools" not in listed and "catalog" not in entry:
        return (*listed, "tools")
    return listed
