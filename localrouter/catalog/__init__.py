"""The embedded model catalog: load it, match upstream ids to it, fill in what providers omit.

One model, up to three sources, in this order of precedence: the provider's own data, then the
provider-scoped entry (models.dev), then OpenRouter's, then LiteLLM's cost map. A matched entry
keeps every field it has and takes each field it lacks (a models.dev entry's missing
description or supported_parameters, say) from the next source's entry for the same model;
LiteLLM fills what both others lack, and alone matches the legacy, audio, embedding and
moderation ids they do not know. For a models.dev entry that is the OpenRouter entry found as an
upstream id would be (under the provider's OpenRouter vendor, then normalised); for an
OpenRouter entry, its publisher's models.dev entry (openai's for `openai/...`). Neither source
overrides a value the other has, and an embedding model takes nothing that describes chat
output (max_output_tokens, output modalities, supported parameters).
"""

from __future__ import annotations

import gzip
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

import structlog

from localrouter.base.jsonload import loads_in_steps
from localrouter.catalog.build import FORMAT
from localrouter.catalog.match import OPENROUTER_VENDORS, Entry, Match, Scope, find

log = structlog.get_logger(__name__)

EMBEDDED = "catalog.json.gz"
UPDATED = "catalog.json.gz"  # the same name in the user cache dir, written by `catalog update`


class Catalog:
    def __init__(self, document: dict[str, Any], origin: str) -> None:
        self.origin = origin
        self.openrouter = Scope(None, document["openrouter"])
        self._provider_entries: dict[str, dict[str, Any]] = document["providers"]
        # LiteLLM's cost map by our provider; a catalog `catalog update` wrote before this
        # source existed has none.
        self._litellm_entries: dict[str, dict[str, Any]] = document.get("litellm", {})
        self._scopes: dict[str, Scope] = {}
        self._litellm_scopes: dict[str, Scope] = {}
        self._merged: dict[tuple[bool, str], Entry] = {}

    @property
    def size(self) -> int:
        return (
            len(self.openrouter.entries)
            + sum(map(len, self._provider_entries.values()))
            + sum(map(len, self._litellm_entries.values()))
        )

    def litellm_scope(self, provider: str | None) -> Scope | None:
        if provider is None or provider not in self._litellm_entries:
            return None
        if provider not in self._litellm_scopes:
            entries = self._litellm_entries[provider]
            self._litellm_scopes[provider] = Scope(f"litellm/{provider}", entries)
        return self._litellm_scopes[provider]

    def scope(self, provider: str | None) -> Scope | None:
        if provider is None:
            return None
        if provider == "openrouter":
            return self.openrouter
        if provider not in self._scopes and provider in self._provider_entries:
            self._scopes[provider] = Scope(provider, self._provider_entries[provider])
        return self._scopes.get(provider)

    def match(self, model_id: str, provider: str | None) -> Match | None:
        """The entry for an upstream id, with what the other source knows of it merged in."""
        vendor = OPENROUTER_VENDORS.get(provider) if provider else None
        found = find(model_id, self.scope(provider), self.openrouter, vendor)
        litellm = self._litellm_match(model_id, provider)
        if found is None:
            return litellm
        slot = (found.matched_via in _OPENROUTER_MATCHES, found.id)
        if (merged := self._merged.get(slot)) is None:
            merged = fill_gaps(found.entry, self._other_source(found))
            merged = self._merged[slot] = fill_gaps(merged, litellm.entry if litellm else None)
        return replace(found, entry=merged)

    def _litellm_match(self, model_id: str, provider: str | None) -> Match | None:
        """LiteLLM's entry for the id, in the provider's scope: as it is, then normalised."""
        scope = self.litellm_scope(provider)
        if scope is None:
            return None
        if (key := scope.exact(model_id)) is not None:
            return Match(scope.catalog_id(key), "litellm_id", scope.entries[key])
        if (key := scope.normalised(model_id)) is not None:
            return Match(scope.catalog_id(key), "normalized_litellm_id", scope.entries[key])
        # An OpenAI fine-tune (ft:BASE:org:name:id) is priced and limited as LiteLLM's ft:BASE.
        fine_tune = ":".join(model_id.split(":")[:2]) if model_id.startswith("ft:") else None
        if fine_tune and (key := scope.exact(fine_tune)) is not None:
            return Match(scope.catalog_id(key), "litellm_fine_tune", scope.entries[key])
        return None

    def _other_source(self, found: Match) -> Entry | None:
        first, _, rest = found.id.partition("/")
        if found.matched_via in _OPENROUTER_MATCHES:  # first: the vendor, e.g. "mistralai"
            scope = self.scope(_PUBLISHERS.get(first))
            key = (scope.exact(rest) or scope.normalised(rest)) if scope else None
            return scope.entries[key] if scope and key else None
        partner = find(rest, None, self.openrouter, OPENROUTER_VENDORS.get(first))
        return partner.entry if partner else None


_OPENROUTER_MATCHES = frozenset({"openrouter_id", "normalized_openrouter_id"})
_PUBLISHERS = {vendor: provider for provider, vendor in OPENROUTER_VENDORS.items()}
# What a chat model's entry says that does not describe an embedding model of the same name.
_NOT_FOR_EMBEDDINGS = frozenset({"max_output_tokens", "output_modalities", "supported_parameters"})


def fill_gaps(entry: Entry, other: Entry | None) -> Entry:
    """`entry`, with the fields it lacks taken from `other` (see the module docstring)."""
    if not other:
        return entry
    embedding = "embedding" in entry.get("capabilities", ())
    taken = {
        key: value
        for key, value in other.items()
        if key not in entry and not (embedding and key in _NOT_FOR_EMBEDDINGS)
    }
    return {**entry, **taken} if taken else entry


def parse_catalog(data: bytes, origin: str) -> Catalog:
    """Decoded a member at a time: it is read in a thread while the daemon serves, and one
    orjson call over the 2 MB held the GIL 20 to 70 ms."""
    document = loads_in_steps(
        gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data, objects_to=1
    )
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError("not a localrouter catalog of a format this version reads")
    return Catalog(document, origin)


def load_catalog(cache_dir: Path | None = None) -> Catalog:
    """The catalog `catalog update` wrote, if it is readable; else the embedded one."""
    if cache_dir is not None:
        updated = cache_dir / UPDATED
        try:
            return parse_catalog(updated.read_bytes(), str(updated))
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError) as exc:
            log.warning("catalog.update_unreadable", path=str(updated), error=str(exc))
    embedded = resources.files(__package__).joinpath(EMBEDDED)
    return parse_catalog(embedded.read_bytes(), "embedded")


class CatalogStore:
    """The catalog in use: the embedded one, or the one `catalog update` wrote, picked up
    without a restart (the file's mtime is checked when a list is enriched, not per request)."""

    def __init__(self, cache_dir: Path | None) -> None:
        self._cache_dir = cache_dir
        self._stamp: float | None = None
        self._catalog: Catalog | None = None

    def current(self) -> Catalog:
        stamp = self._updated_stamp()
        if self._catalog is None or stamp != self._stamp:
            self._catalog = load_catalog(self._cache_dir)
            self._stamp = stamp
        return self._catalog

    def _updated_stamp(self) -> float | None:
        if self._cache_dir is None:
            return None
        try:
            return (self._cache_dir / UPDATED).stat().st_mtime
        except OSError:
            return None
