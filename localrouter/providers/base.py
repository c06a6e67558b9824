"""The Provider protocol, its static description (ProviderSpec), and ModelInfo."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from yarl import URL

if TYPE_CHECKING:
    from localrouter.config.settings import ProviderSettings
    from localrouter.upstream.client import UpstreamClient


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

    @property
    def takes_reasoning_effort(self) -> bool:
        parameters = self.supported_parameters
        return (
            "reasoning" in self.capabilities
            or "reasoning" in parameters
            or "reasoning_effort" in parameters
        )

    def plain(self) -> dict[str, Any]:
        """The fields that differ from their defaults, as JSON-ready values (persisted lists
        and catalog entries are this)."""
        found: dict[str, Any] = {}
        for name, default in _DEFAULTS.items():
            value = getattr(self, name)
            if value != default and value not in (None, (), {}, ""):
                found[name] = dataclasses.asdict(value) if name == "catalog" else value
        return found


def _defaults() -> dict[str, Any]:
    bare = ModelInfo(id="")
    return {f.name: getattr(bare, f.name) for f in dataclasses.fields(ModelInfo)}


_DEFAULTS = _defaults()


class Provider(Protocol):
    """An adapter bound to one configured instance."""

    async def list_models(self, http: UpstreamClient) -> list[ModelInfo]:
        """Fetch and parse the upstream model list; raise UpstreamError on any failure."""
        ...


class ProviderFactory(Protocol):
    def __call__(self, settings: ProviderSettings, spec: ProviderSpec) -> Provider: ...


BaseFor = Callable[["ProviderSettings"], str]


def same_base(settings: ProviderSettings) -> str:
    """The endpoints share the base URL of the model list."""
    return settings.resolved_base_url


def suffixed_base(suffix: str) -> BaseFor:
    """The endpoints live under the list's base URL plus `suffix` (gemini, ollama)."""

    def base(settings: ProviderSettings) -> str:
        return settings.resolved_base_url.rstrip("/") + suffix

    return base


class Wire(StrEnum):
    """A wire protocol an instance may speak to its clients' requests."""

    CHAT = "chat"  # OpenAI chat/completions, completions and embeddings
    MESSAGES = "messages"  # Anthropic Messages
    RESPONSES = "responses"  # OpenAI Responses
    OLLAMA = "ollama"  # Ollama's /api/chat, /api/generate, /api/embed


@dataclass(frozen=True, slots=True)
class Auth:
    """How a provider's key travels: the header, the word before the key, and headers every
    request carries (a default the client or the instance's `headers:` may override)."""

    header: str = "Authorization"
    scheme: str | None = "Bearer"
    fixed: tuple[tuple[str, str], ...] = ()

    def headers(self, key: str | None, custom: Mapping[str, str]) -> dict[str, str]:
        headers = {**dict(self.fixed), **custom}
        if key is not None:
            headers[self.header] = f"{self.scheme} {key}" if self.scheme else key
        return headers


BEARER = Auth()


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where an instance serves one wire protocol, and how it wants the key."""

    base: BaseFor = same_base
    auth: Auth = BEARER


def _chat_only() -> Mapping[Wire, Endpoint]:
    return MappingProxyType({Wire.CHAT: Endpoint()})


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """Everything static about a provider type: one row of the PROVIDERS table. Adding a
    provider, with whatever auth scheme, touches its own module and this row, nothing else."""

    type: str
    factory: ProviderFactory
    kind: ProviderKind
    default_base_url: str | None = None
    key_env: str | None = None
    key_required: bool = False
    default_inclusion: DefaultInclusion = DefaultInclusion.WITH_KEY
    catalog_provider: str | None = None
    static_models: tuple[str, ...] = ()
    # How the model list is fetched: the key's header and scheme.
    auth: Auth = BEARER
    # The wire protocols it speaks natively, each at its own base and auth; empty for image
    # and video providers, which have no chat endpoint.
    wires: Mapping[Wire, Endpoint] = field(default_factory=_chat_only)
    # Whether a Chat Completions stream may be asked for its usage (stream_options), which a
    # strict server refuses; an instance's `stream_usage` overrides it.
    stream_usage: bool = True
    # Whether it takes OpenAI's `prompt_cache_key` (strict servers refuse unknown fields); an
    # instance's `prompt_cache_key` overrides it.
    prompt_cache_key: bool = False
    # Whether a translated Messages request keeps Anthropic's cache_control markers on its
    # chat content parts (OpenRouter honours them); an instance's `cache_markers` overrides.
    cache_markers: bool = False

    def list_headers(self, settings: ProviderSettings) -> dict[str, str]:
        """The headers a model-list request of this instance carries."""
        return self.auth.headers(settings.key, settings.headers)

    def endpoint(self, wire: Wire) -> Endpoint | None:
        return self.wires.get(wire)


# Where an Anthropic-compatible server (`messages: native` on any instance) takes Messages.
ANTHROPIC_VERSION = "2023-06-01"
ANTHROPIC_AUTH = Auth(
    header="x-api-key", scheme=None, fixed=(("anthropic-version", ANTHROPIC_VERSION),)
)
ANTHROPIC_MESSAGES = Endpoint(auth=ANTHROPIC_AUTH)


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
