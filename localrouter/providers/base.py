"""The Provider protocol, its static description (ProviderSpec), and ModelInfo."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from yarl import URL

if TYPE_CHECKING:
    from localrouter.config import ProviderSettings
    from localrouter.providers.http import UpstreamClient


class ProviderKind(StrEnum):
    """Decides the default TTL: local servers change often, static lists rarely."""

    LOCAL = "local"
    CLOUD = "cloud"
    STATIC = "static"
    BY_URL = "by_url"  # local when the instance's base_url is on loopback, else cloud

    def resolve(self, base_url: str | None) -> ProviderKind:
        if self is not ProviderKind.BY_URL:
            return self
        return ProviderKind.LOCAL if is_loopback_url(base_url) else ProviderKind.CLOUD


class DefaultInclusion(StrEnum):
    """Whether the embedded default config (no config file) includes a provider type."""

    ALWAYS = "always"  # keyless: works for everyone
    WITH_KEY = "with_key"  # only when its standard key variable is set
    NEVER = "never"


@dataclass(frozen=True, slots=True)
class CatalogRef:
    """Which catalog entry filled in a model's metadata, and how it was found."""

    id: str
    matched_via: str


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One upstream model, with whatever metadata its provider (or the catalog) knows.

    Prices are USD per token, keyed the way OpenRouter names them (prompt, completion,
    input_cache_read, input_cache_write, ...).
    """

    id: str
    name: str | None = None
    description: str | None = None
    created: int = 0
    context_length: int | None = None
    max_output_tokens: int | None = None
    pricing: Mapping[str, float] = field(default_factory=dict)
    input_modalities: tuple[str, ...] = ()
    output_modalities: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()
    supported_parameters: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    deprecated: bool = False
    active: bool = True
    catalog: CatalogRef | None = None


class Provider(Protocol):
    """An adapter bound to one configured instance."""

    async def list_models(self, http: UpstreamClient) -> list[ModelInfo]:
        """Fetch and parse the upstream model list; raise UpstreamError on any failure."""
        ...


class ProviderFactory(Protocol):
    def __call__(self, settings: ProviderSettings, spec: ProviderSpec) -> Provider: ...


ChatBase = Callable[["ProviderSettings"], str]


def same_base(settings: ProviderSettings) -> str:
    """The chat endpoints share the base URL of the model list."""
    return settings.resolved_base_url


def suffixed_base(suffix: str) -> ChatBase:
    """The chat endpoints live under the list's base URL plus `suffix` (gemini, ollama)."""

    def base(settings: ProviderSettings) -> str:
        return settings.resolved_base_url.rstrip("/") + suffix

    return base


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """Everything static about a provider type: one row of the PROVIDERS table."""

    type: str
    factory: ProviderFactory
    kind: ProviderKind
    default_base_url: str | None = None
    key_env: str | None = None
    key_required: bool = False
    default_inclusion: DefaultInclusion = DefaultInclusion.WITH_KEY
    catalog_provider: str | None = None
    static_models: tuple[str, ...] = ()
    # Where its OpenAI-compatible chat/completions/embeddings endpoints live (Bearer auth);
    # None: the provider has no chat endpoint (image and video providers).
    chat_base: ChatBase | None = same_base


def is_loopback_url(url: str | None) -> bool:
    host = URL(url).host if url else None
    if host is None:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
