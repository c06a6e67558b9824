"""Provider data wins; the catalog fills the gaps and says where it came from."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

from localrouter.catalog import Catalog
from localrouter.catalog.match import Entry
from localrouter.providers.base import CatalogRef, ModelInfo
from localrouter.providers.parsing import capabilities_from_id


def enrich(
    models: list[ModelInfo], catalog: Catalog | None, provider: str | None
) -> list[ModelInfo]:
    return [enrich_one(model, catalog, provider) for model in models]


def enrich_one(model: ModelInfo, catalog: Catalog | None, provider: str | None) -> ModelInfo:
    found = catalog.match(model.id, provider) if catalog is not None else None
    via = found.matched_via if found else None
    if catalog is not None and found is None:  # the provider's own aliases are equivalent ids
        found = next(
            (hit for alias in model.aliases if (hit := catalog.match(alias, provider))), None
        )
        via = "alias"
    if found is not None and via is not None:
        model = _fill(model, found.entry, CatalogRef(found.id, via))
    if not model.capabilities:  # nothing from the provider or the catalog: guess from the id
        model = replace(model, capabilities=capabilities_from_id(model.id))
    if "embedding" in model.capabilities and "chat" not in model.capabilities:
        # Vectors, not tokens: "text->embeddings", and no output token limit (a provider's
        # output limit for an embedding model is its vector size).
        model = replace(
            model,
            output_modalities=model.output_modalities or ("embeddings",),
            max_output_tokens=None,
        )
    return model


def model_from_entry(model_id: str, entry: Entry, catalog_id: str) -> ModelInfo:
    """A catalog entry standing in for a provider that cannot be reached."""
    return _fill(ModelInfo(id=model_id), entry, CatalogRef(catalog_id, "catalog_fallback"))


def _fill(model: ModelInfo, entry: Entry, ref: CatalogRef) -> ModelInfo:
    """Each field the provider left empty takes the entry's value (entries are ModelInfo's
    plain form, so every field is covered without naming it here)."""
    taken: dict[str, Any] = {
        name: tuple(value) if isinstance(value, list) else value
        for name, value in entry.items()
        if name in _FILLABLE and not getattr(model, name)
    }
    return replace(model, **taken, catalog=ref)


_FILLABLE = frozenset(f.name for f in fields(ModelInfo)) - {"id", "catalog", "active"}
