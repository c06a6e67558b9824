"""The embedded model catalog: load it, match upstream ids to it, fill in what providers omit."""

from __future__ import annotations

import gzip
from importlib import resources
from pathlib import Path
from typing import Any

import structlog

from localrouter.catalog.build import FORMAT
from localrouter.catalog.match import OPENROUTER_VENDORS, Match, Scope, find
from localrouter.jsonload import loads_in_steps

log = structlog.get_logger(__name__)

EMBEDDED = "catalog.json.gz"
UPDATED = "catalog.json.gz"  # the same name in the user cache dir, written by `catalog update`


class Catalog:
    def __init__(self, document: dict[str, Any], origin: str) -> None:
        self.origin = origin
        self.sources: dict[str, str] = document.get("sources", {})
        self.openrouter = Scope(None, document["openrouter"])
        self._provider_entries: dict[str, dict[str, Any]] = document["providers"]
        self._scopes: dict[str, Scope] = {}

    @property
    def size(self) -> int:
        return len(self.openrouter.entries) + sum(map(len, self._provider_entries.values()))

    def has_provider(self, provider: str) -> bool:
        return provider == "openrouter" or provider in self._provider_entries

    def scope(self, provider: str | None) -> Scope | None:
        if provider is None:
            return None
        if provider == "openrouter":
            return self.openrouter
        if provider not in self._scopes and provider in self._provider_entries:
            self._scopes[provider] = Scope(provider, self._provider_entries[provider])
        return self._scopes.get(provider)

    def match(self, model_id: str, provider: str | None) -> Match | None:
        vendor = OPENROUTER_VENDORS.get(provider) if provider else None
        return find(model_id, self.scope(provider), self.openrouter, vendor)


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
