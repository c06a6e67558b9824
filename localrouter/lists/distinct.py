"""Distinct models across instances: grouped by their catalog id when the catalog matched
them, else by their normalised upstream id, each with every instance that serves it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from localrouter.base.offload import sorted_in_steps
from localrouter.catalog.match import normalise
from localrouter.lists.entries import price_text
from localrouter.lists.registry import InstanceLists
from localrouter.providers.base import ModelInfo


@dataclass(frozen=True, slots=True)
class Offer:
    """One instance serving a distinct model."""

    instance: str
    id: str
    upstream_id: str
    prompt: str | None  # USD per token, as OpenRouter writes it
    completion: str | None
    active: bool
    cost: float | None  # prompt + completion when both are known, to sort by; not shown

    def public(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "id": self.id,
            "upstream_id": self.upstream_id,
            "pricing": {"prompt": self.prompt, "completion": self.completion},
            "active": self.active,
        }


@dataclass(slots=True)
class Group:
    """A distinct model (by catalog id, else normalised id) and every instance serving it."""

    id: str
    name: str | None
    offers: list[Offer]


def group_models(lists: InstanceLists) -> list[Group]:
    """Every distinct model with all its providers, inactive ones marked, sorted by id."""
    groups: dict[str, Group] = {}
    for (instance, _), served in zip(lists.labels, lists.served, strict=True):
        if served is None:
            continue
        for model in served.models.models:
            key = model.catalog.id if model.catalog else normalise(model.id)
            group = groups.setdefault(key, Group(key, None, []))
            group.name = group.name or model.name
            group.offers.append(_offer(instance, model))
    return [groups[key] for key in sorted_in_steps(list(groups))]


def _offer(instance: str, model: ModelInfo) -> Offer:
    prompt, completion = model.pricing.get("prompt"), model.pricing.get("completion")
    return Offer(
        instance=instance,
        id=f"{instance}/{model.id}",
        upstream_id=model.id,
        prompt=price_text(prompt) if prompt is not None else None,
        completion=price_text(completion) if completion is not None else None,
        active=model.active and not model.deprecated,
        # Half a price is no price to compare: an unknown part is not free.
        cost=None if prompt is None or completion is None else prompt + completion,
    )
