"""Typed settings: what each config key means, its default and its checks (config_file.py
finds, reads and expands the file these validate)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)

from localrouter.base.secrets import display_url
from localrouter.config.console import ConsoleSettings
from localrouter.config.discovery import DiscoverySettings
from localrouter.config.fleet import FleetSettings
from localrouter.config.limits import LimitSettings, LimitValues, limit_notes
from localrouter.config.request_log import RequestLogSettings
from localrouter.config.server import WILDCARD_HOSTS, ServerSettings, is_loopback
from localrouter.config.telemetry import TelemetrySettings
from localrouter.config.usage import PriceSettings, UsageSettings
from localrouter.providers import PROVIDERS
from localrouter.providers.base import ProviderKind, ProviderSpec

_INSTANCE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
# Key-like: a known key prefix, or a long run of letters and digits mixed.
_SECRET_SHAPE = re.compile(r"^(sk|pk|rk|key|gsk|xai|csk)[-_]|[A-Za-z0-9_-]{20,}")

# Built-in TTLs for kinds whose lists change at a different pace than a cloud provider's.
KIND_TTL_SECONDS = {ProviderKind.LOCAL: 300.0, ProviderKind.STATIC: 86400.0}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProviderSettings(_Strict):
    name: str = Field(pattern=_INSTANCE_NAME)
    type: str
    api_key: SecretStr | None = None
    api_keys: list[SecretStr] | None = None  # a pool, taken in turn (key_pool.py)
    base_url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: float = Field(default=10.0, gt=0)
    chat_timeout_seconds: float = Field(default=600.0, gt=0)  # longest silence mid-answer
    max_response_bytes: int = Field(default=32 * 1024 * 1024, gt=0)
    max_pages: int = Field(default=50, gt=0)
    enabled: bool = True
    catalog_provider: str | None = None
    categories: list[str] | None = None  # fal only: which model categories to list
    # How /v1/messages reaches this instance: "native" (it speaks Anthropic's Messages API at
    # {base_url}/messages, with x-api-key), "translated" (to Chat Completions); default by type.
    messages: Literal["native", "translated"] | None = None
    # How /v1/responses reaches this instance: "native" (it speaks OpenAI's Responses API at
    # {base_url}/responses), "translated" (to Chat Completions); default by type.
    responses: Literal["native", "translated"] | None = None
    # Prices (USD per million tokens) for every model of the instance, and per model (globs
    # over its upstream ids, the first that matches wins); they win over the catalog's.
    pricing: PriceSettings | None = None
    model_pricing: dict[str, PriceSettings] = Field(default_factory=dict)
    # Whether a stream is asked for its usage (stream_options.include_usage) when the client
    # did not ask; default by type (LM Studio refuses the option).
    stream_usage: bool | None = None
    # Whether a session id reaches it as `prompt_cache_key` (default by type: openai only).
    prompt_cache_key: bool | None = None
    # Whether translated Messages keep their cache_control markers (default: openrouter).
    cache_markers: bool | None = None

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in PROVIDERS:
            shown = f" {value!r}" if shareable(value) else ""
            raise ValueError(
                f"unknown provider type{shown}; expected one of: {', '.join(sorted(PROVIDERS))}"
            )
        return value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            # The value is not shown: a `${OPENAI_API_KEY}` typo here would print the key.
            raise ValueError("expected an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _complete(self) -> Self:
        spec = self.spec
        if self.base_url is None and spec.default_base_url is None:
            raise ValueError(f"provider type {self.type!r} has no default URL; set base_url")
        if self.api_keys is not None:
            if self.api_key is not None:
                raise ValueError(
                    f"provider {self.name!r} has both api_key and api_keys; keep one "
                    "(api_keys: [one, two] holds every key)"
                )
            if not self.api_keys:
                raise ValueError(f"provider {self.name!r}: api_keys is empty; list its keys")
        if spec.key_required and not self.keys and self.enabled:
            variable = spec.key_env or "the provider's key variable"
            raise ValueError(
                f"provider {self.name!r} needs an API key: set {variable} "
                f"or add api_key to provider {self.name!r}"
            )
        return self

    @property
    def spec(self) -> ProviderSpec:
        return PROVIDERS[self.type]

    @property
    def resolved_base_url(self) -> str:
        url = self.base_url or self.spec.default_base_url
        assert url is not None  # guaranteed by _complete
        return url

    @property
    def kind(self) -> ProviderKind:
        return self.spec.kind.resolve(self.resolved_base_url)

    @property
    def catalog_scope(self) -> str | None:
        """The catalog provider its models are matched in (the config's, else its type's)."""
        return self.catalog_provider or self.spec.catalog_provider

    @property
    def keeps_cache_markers(self) -> bool:
        if self.cache_markers is not None:
            return self.cache_markers
        return self.spec.cache_markers

    @property
    def takes_prompt_cache_key(self) -> bool:
        if self.prompt_cache_key is not None:
            return self.prompt_cache_key
        return self.spec.prompt_cache_key

    @property
    def asks_stream_usage(self) -> bool:
        """Whether a stream the client did not ask usage of is asked for it anyway."""
        return self.stream_usage if self.stream_usage is not None else self.spec.stream_usage

    @property
    def keys(self) -> tuple[str, ...]:
        """Every API key's value (a pool's, or the one api_key), for the places that send
        them (`Auth.headers`)."""
        if self.api_keys is not None:
            return tuple(key.get_secret_value() for key in self.api_keys)
        return (self.api_key.get_secret_value(),) if self.api_key is not None else ()

    @property
    def key(self) -> str | None:
        """The first (for most instances, the only) API key's value."""
        keys = self.keys
        return keys[0] if keys else None

    @property
    def pooled(self) -> bool:
        """Whether the keys are a pool (api_keys): taken in turn, rested and refused."""
        return self.api_keys is not None

    def with_key(self, key: str) -> ProviderSettings:
        """The same instance with only `key`."""
        return self.model_copy(update={"api_key": SecretStr(key), "api_keys": None})

    @property
    def secret_values(self) -> tuple[str, ...]:
        """Everything that must never be shown: the keys and every custom header value."""
        return self.keys + tuple(self.headers.values())


class ModelCacheSettings(_Strict):
    default_ttl_seconds: float = Field(default=3600.0, gt=0)
    provider_ttl_overrides: dict[str, float] = Field(default_factory=dict)
    use_catalog_fallback: bool = True
    persist: bool = True

    @field_validator("provider_ttl_overrides")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        for key, ttl in value.items():
            if ttl <= 0:
                raise ValueError(f"TTL for {key!r} must be greater than 0, got {ttl}")
        return value


MAX_ALIAS_DEPTH = 4  # an alias may name an alias, this many steps deep at most


def _globs(value: list[str] | None) -> list[str] | None:
    for glob in value or ():
        if not glob.strip():
            raise ValueError("an empty pattern; write an id, an alias or a glob such as 'groq/*'")
    return value


class ModelsSettings(_Strict):
    """How the merged list is shaped: extra names, entries left out, second choices."""

    aliases: dict[str, str] = Field(default_factory=dict)  # alias -> an id or another alias
    hide: list[str] = Field(default_factory=list)  # globs over ids: not listed, still callable
    fallbacks: dict[str, list[str]] = Field(default_factory=dict)

    _check_hide = field_validator("hide")(_globs)

    @field_validator("aliases")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        for alias, target in value.items():
            if not alias.strip() or alias != alias.strip():
                raise ValueError(f"alias {alias!r}: a name without surrounding spaces")
            if not target.strip():
                raise ValueError(f"{alias}: empty target; write an id such as 'groq/llama-3.3'")
        return value

    @field_validator("fallbacks")
    @classmethod
    def _choices(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for model, choices in value.items():
            if not choices or any(not choice.strip() for choice in choices):
                raise ValueError(f"{model}: a list of ids or aliases to try, none empty")
            if model in choices:
                raise ValueError(f"{model}: lists itself as its own fallback")
            if len(set(choices)) != len(choices):
                raise ValueError(f"{model}: names the same fallback twice")
        return value


class ClientSettings(_Strict):
    """A tool with its own token, seeing and calling only what `allow` admits."""

    name: str = Field(pattern=_INSTANCE_NAME)
    token: SecretStr
    allow: list[str] | None = None  # globs over ids and aliases; None: everything
    limits: LimitValues | None = None  # None: the top-level `limits:`
    model_limits: dict[str, LimitValues] = Field(default_factory=dict)  # globs over ids, aliases

    _check_allow = field_validator("allow")(_globs)

    @field_validator("model_limits")
    @classmethod
    def _model_globs(cls, value: dict[str, LimitValues]) -> dict[str, LimitValues]:
        _globs(list(value))
        return value

    @field_validator("token")
    @classmethod
    def _not_empty(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value().strip()) < 8:
            raise ValueError("a token of at least 8 characters (not shown)")
        return value


class Settings(_Strict):
    server: ServerSettings = Field(default_factory=ServerSettings)
    providers: list[ProviderSettings] = Field(default_factory=list)
    model_cache: ModelCacheSettings = Field(default_factory=ModelCacheSettings)
    models: ModelsSettings = Field(default_factory=ModelsSettings)
    clients: list[ClientSettings] = Field(default_factory=list)
    fleet: FleetSettings = Field(default_factory=FleetSettings)
    usage: UsageSettings = Field(default_factory=UsageSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    request_log: RequestLogSettings = Field(default_factory=RequestLogSettings)
    discovery: DiscoverySettings = Field(default_factory=DiscoverySettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    # What loading decided on the user's behalf (an instance left without a key because its
    # ${VAR} is unset): shown by `check` and /health, never an error.
    _notes: tuple[str, ...] = PrivateAttr(default=())

    @property
    def notes(self) -> tuple[str, ...]:
        """What loading decided on the user's behalf, and the instances skipped because they
        point at this daemon itself."""
        return (
            self._notes
            + tuple(
                f"instance {p.name!r} is skipped: its base_url {display_url(p.resolved_base_url)} "
                "is this daemon's own listener (server.port or server.ollama_port), so it would "
                "list and call itself. Point it at the real server, or move that listener."
                for p in self.providers
                if p.enabled and self.calls_itself(p)
            )
            + self.limit_notes
        )

    @property
    def limit_notes(self) -> tuple[str, ...]:
        """What each dollar limit does with calls to models of no known price."""
        return limit_notes(
            self.limits, [(client.limits, client.model_limits) for client in self.clients]
        )

    def calls_itself(self, provider: ProviderSettings) -> bool:
        """Whether the instance's base URL reaches one of this daemon's own listeners: its
        port is ours and its host is the address we bind (on loopback or every address, any
        loopback name reaches us)."""
        server = self.server
        try:
            url = urlsplit(provider.resolved_base_url)
            port = url.port or (443 if url.scheme == "https" else 80)
        except ValueError:
            return False
        if port not in (server.port, server.ollama_port):
            return False
        host = (url.hostname or "").lower()
        bound = server.host.strip("[]").lower()
        ours = bound in WILDCARD_HOSTS or is_loopback(bound)
        return host == bound or (ours and is_loopback(host))

    def with_server(self, overrides: Mapping[str, Any]) -> Settings:
        """These settings with `server` fields set from the command line (`serve --host`,
        `--port`), which win over the file at start and at every reload."""
        if not overrides:
            return self
        return self.model_copy(update={"server": self.server.model_copy(update=dict(overrides))})

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        # Cross-field checks name their own key path: pydantic would only say "top level".
        if (twice := _duplicate([provider.name for provider in self.providers])) is not None:
            index, earlier, name = twice
            raise ValueError(
                f"providers[{index}].name: duplicate instance name {name!r} "
                f"(also providers[{earlier}]); names must be unique"
            )
        seen = {provider.name for provider in self.providers}
        for key in self.model_cache.provider_ttl_overrides:
            if key not in seen and key not in PROVIDERS:
                raise ValueError(
                    f"model_cache.provider_ttl_overrides.{key}: {key!r} is neither an instance "
                    "name nor a provider type"
                )
        self._check_aliases(seen)
        self._check_clients()
        return self

    def _check_aliases(self, instances: set[str]) -> None:
        aliases = self.models.aliases
        for alias in aliases:
            namespace, slash, _ = alias.partition("/")
            if slash and namespace in instances:
                raise ValueError(
                    f"models.aliases.{alias}: would hide instance {namespace!r}'s model of that "
                    "name; choose a name that does not start with an instance name and '/'"
                )
            chain = [alias]
            while chain[-1] in aliases:
                target = aliases[chain[-1]]
                if target in chain:
                    loop = " -> ".join([*chain[chain.index(target) :], target])
                    raise ValueError(f"models.aliases.{alias}: the aliases loop: {loop}")
                chain.append(target)
                if len(chain) > MAX_ALIAS_DEPTH + 1:
                    raise ValueError(
                        f"models.aliases.{alias}: more than {MAX_ALIAS_DEPTH} aliases deep "
                        f"({' -> '.join(chain)}); point it nearer its model"
                    )

    def _check_clients(self) -> None:
        server = self.server
        if server.ollama_port is not None and server.ollama_port == server.port:
            raise ValueError(f"server.ollama_port: {server.port} is server.port already")
        if (named := server.ollama_client) is not None:
            if server.ollama_port is None:
                raise ValueError(
                    "server.ollama_client: set server.ollama_port too (the listener whose "
                    "tokenless requests act as that client)"
                )
            if named not in {client.name for client in self.clients}:
                raise ValueError(f"server.ollama_client: no client named {named!r} in clients")
        if (twice := _duplicate([client.name for client in self.clients])) is not None:
            index, earlier, name = twice
            raise ValueError(
                f"clients[{index}].name: duplicate client name {name!r} (also clients[{earlier}])"
            )
        tokens: dict[str, int] = {}
        admin = self.server.auth_token.get_secret_value() if self.server.auth_token else None
        for index, client in enumerate(self.clients):
            token = client.token.get_secret_value()
            if token in tokens or token == admin:
                other = f"clients[{tokens[token]}]" if token in tokens else "server.auth_token"
                raise ValueError(
                    f"clients[{index}].token: the same token as {other}; each client needs "
                    "its own (not shown)"
                )
            tokens[token] = index

    @property
    def enabled_providers(self) -> list[ProviderSettings]:
        """The instances to serve: enabled, and not this daemon itself (see `notes`)."""
        return [p for p in self.providers if p.enabled and not self.calls_itself(p)]

    def ttl_for(self, provider: ProviderSettings) -> float:
        """Instance-name override, then provider-type override, then the kind's default."""
        overrides = self.model_cache.provider_ttl_overrides
        if provider.name in overrides:
            return overrides[provider.name]
        if provider.type in overrides:
            return overrides[provider.type]
        return KIND_TTL_SECONDS.get(provider.kind, self.model_cache.default_ttl_seconds)

    @property
    def secret_values(self) -> tuple[str, ...]:
        token = (self.server.auth_token.get_secret_value(),) if self.server.auth_token else ()
        clients = tuple(client.token.get_secret_value() for client in self.clients)
        providers = tuple(s for p in self.providers for s in p.secret_values)
        telemetry = self.telemetry.secret_values
        return token + clients + providers + self.fleet.secret_values + telemetry


def _duplicate(names: list[str]) -> tuple[int, int, str] | None:
    """The first name given twice: its index, the earlier index, the name."""
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        if name in seen:
            return index, seen[name], name
        seen[name] = index
    return None


def shareable(value: str) -> bool:
    """Whether a rejected value may be quoted in a message: short, and not shaped like a key."""
    return len(value) <= 32 and not _SECRET_SHAPE.search(value)
