"""Matching an upstream model id to a catalog entry: deterministic, and never a guess across
model families or sizes.

Order (the first that finds an entry wins):
1. provider_id: the id as it is, in the instance's catalog provider (models.dev scope).
2. openrouter_id: the id as it is among OpenRouter's `vendor/model` ids; a bare id is tried
   under the catalog provider's OpenRouter vendor (anthropic -> anthropic/..., mistral ->
   mistralai/..., ...).
3. normalized_provider_id, then normalized_openrouter_id: both sides normalised (see
   `normalise`).
4. base_name: an ollama-style `name:tag` (`llama3.2:3b`) by its base name, only where that base
   name identifies exactly one entry.

Ties (several entries with one normalised form) go to the entry whose id already is that form
(exactly, then ignoring case), then the shortest id, then the alphabetically first: never to
dict order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

Entry = dict[str, Any]

_DATE_SUFFIX = re.compile(r"-(?:\d{8}|\d{4}-\d{2}-\d{2})$")
_NAMED_TAG = re.compile(r":[a-z][a-z0-9_.-]*$")  # :free, :beta, :extended, :latest
_VERSION_DOT = re.compile(r"(?<=\d)\.(?=\d)")
_OLLAMA_TAG = re.compile(r"^(?P<base>[^:/]+):(?P<tag>[a-z0-9_.-]+)$")

# The OpenRouter vendor that publishes a catalog provider's own models.
OPENROUTER_VENDORS = {
    "openai": "openai",
    "anthropic": "anthropic",
    "mistral": "mistralai",
    "google": "google",
    "xai": "x-ai",
    "cohere": "cohere",
    "perplexity": "perplexity",
    "deepseek": "deepseek",
}


# Hugging Face organisations (used by hosts such as Together and DeepInfra) whose OpenRouter
# vendor slug is spelled differently; the same publisher either way.
VENDOR_SPELLINGS = {
    "zai-org": "z-ai",
    "deepseek-ai": "deepseek",
    "minimaxai": "minimax",
    "xiaomimimo": "xiaomi",
}


def normalise(model_id: str) -> str:
    """Lowercase; no `models/` prefix, `:tag`, date suffix or `-latest`; `3.5` reads `3-5`;
    a publisher's other spelling (`zai-org/`) reads as OpenRouter's (`z-ai/`)."""
    form = model_id.strip().lower().removeprefix("models/")
    form = _NAMED_TAG.sub("", form)
    form = _DATE_SUFFIX.sub("", form)
    form = form.removesuffix("-latest")
    vendor, slash, name = form.partition("/")
    if slash and vendor in VENDOR_SPELLINGS:
        form = f"{VENDOR_SPELLINGS[vendor]}/{name}"
    return _VERSION_DOT.sub("-", form)


@dataclass(frozen=True, slots=True)
class Match:
    id: str  # the catalog id: OpenRouter's `vendor/model`, or `provider/model` for models.dev
    matched_via: str
    entry: Entry


class Scope:
    """One set of entries (a models.dev provider, or OpenRouter) with its normalised index."""

    def __init__(self, prefix: str | None, entries: dict[str, Entry]) -> None:
        self.prefix = prefix  # None: the keys are already catalog ids (OpenRouter)
        self.entries = entries
        candidates: dict[str, list[str]] = {}
        for key in entries:
            candidates.setdefault(normalise(key), []).append(key)
        self._normalised = {
            form: sorted(keys, key=lambda k: (k != form, k.lower() != form, len(k), k))
            for form, keys in candidates.items()
        }

    def catalog_id(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def exact(self, key: str) -> str | None:
        return key if key in self.entries else None

    def normalised(self, key: str) -> str | None:
        found = self._normalised.get(normalise(key))
        return found[0] if found else None

    def unique(self, key: str) -> str | None:
        found = self._normalised.get(normalise(key))
        return found[0] if found and len(found) == 1 else None


def find(
    model_id: str, provider: Scope | None, openrouter: Scope, vendor: str | None
) -> Match | None:
    router_id = model_id if "/" in model_id or vendor is None else f"{vendor}/{model_id}"
    attempts: list[tuple[Scope | None, str, str, str]] = [
        (provider, "exact", model_id, "provider_id"),
        (openrouter, "exact", router_id, "openrouter_id"),
        (provider, "normalised", model_id, "normalized_provider_id"),
    ]
    if "/" in model_id or vendor is not None:  # a bare id with no known vendor: no guess
        attempts.append((openrouter, "normalised", router_id, "normalized_openrouter_id"))
    if tagged := _OLLAMA_TAG.match(model_id.lower()):
        attempts.append((provider, "unique", tagged["base"], "base_name"))
    for scope, how, key, via in attempts:
        if scope is None:
            continue
        found = getattr(scope, how)(key)
        if found is not None:
            return Match(scope.catalog_id(found), via, scope.entries[found])
    return None
