"""Typed settings: find the config file, expand ${VAR} secrets, validate, say what is wrong."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self

import platformdirs
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from localrouter.errors import ConfigError
from localrouter.providers import PROVIDERS
from localrouter.providers.base import DefaultInclusion, ProviderKind, ProviderSpec
from localrouter.secrets import redact

APP_NAME = "localrouter"
ENV_CONFIG = "LOCALROUTER_CONFIG"
EMBEDDED_DEFAULT = "<embedded default>"
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_INSTANCE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
# Key-like: a known key prefix, or a long run of letters and digits mixed.
_SECRET_SHAPE = re.compile(r"^(sk|pk|rk|key|gsk|xai|csk)[-_]|[A-Za-z0-9_-]{20,}")

# Built-in TTLs for kinds whose lists change at a different pace than a cloud provider's.
KIND_TTL_SECONDS = {ProviderKind.LOCAL: 300.0, ProviderKind.STATIC: 86400.0}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8741, ge=0, le=65535)
    auth_token: SecretStr | None = None
    models_deadline_seconds: float = Field(default=2.5, gt=0)
    cors_origins: list[str] = Field(default_factory=list)  # browser origins allowed to call
    # Host names clients may use besides loopback, server.host and (on a wildcard bind) this
    # machine's own name and addresses: e.g. the name a reverse proxy or a LAN uses.
    allowed_hosts: list[str] = Field(default_factory=list)

    @property
    def binds_beyond_loopback(self) -> bool:
        return self.host.strip("[]").lower() not in ("localhost", "127.0.0.1", "::1")

    def exposure_warning(self) -> str | None:
        """A warning when other machines can connect and nothing asks them for a token."""
        if not self.binds_beyond_loopback or self.auth_token is not None:
            return None
        return (
            f"server.host {self.host or '(all addresses)'} accepts connections from other "
            "machines and server.auth_token is not set: anyone who can reach this port can use "
            "every configured key; set server.auth_token, or bind 127.0.0.1"
        )


class ProviderSettings(_Strict):
    name: str = Field(pattern=_INSTANCE_NAME)
    type: str
    api_key: SecretStr | None = None
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

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in PROVIDERS:
            shown = f" {value!r}" if _shareable(value) else ""
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
        if spec.key_required and self.api_key is None and self.enabled:
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
    def key(self) -> str | None:
        """The API key's value, for the one place that sends it (`Auth.headers`)."""
        return self.api_key.get_secret_value() if self.api_key is not None else None

    @property
    def secret_values(self) -> tuple[str, ...]:
        """Everything that must never be shown: the key and every custom header value."""
        key = (self.api_key.get_secret_value(),) if self.api_key else ()
        return key + tuple(self.headers.values())


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


class Settings(_Strict):
    server: ServerSettings = Field(default_factory=ServerSettings)
    providers: list[ProviderSettings] = Field(default_factory=list)
    model_cache: ModelCacheSettings = Field(default_factory=ModelCacheSettings)
    # What loading decided on the user's behalf (an instance left without a key because its
    # ${VAR} is unset): shown by `check` and /health, never an error.
    _notes: tuple[str, ...] = PrivateAttr(default=())
    # Instances the embedded default probes for (a local server that may not be running):
    # their failure is information, not a degraded daemon.
    _probes: frozenset[str] = PrivateAttr(default=frozenset())

    @property
    def notes(self) -> tuple[str, ...]:
        return self._notes

    def is_probe(self, instance_name: str) -> bool:
        return instance_name in self._probes

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        # Cross-field checks name their own key path: pydantic would only say "top level".
        seen: dict[str, int] = {}
        for index, provider in enumerate(self.providers):
            if provider.name in seen:
                raise ValueError(
                    f"providers[{index}].name: duplicate instance name {provider.name!r} "
                    f"(also providers[{seen[provider.name]}]); names must be unique"
                )
            seen[provider.name] = index
        for key in self.model_cache.provider_ttl_overrides:
            if key not in seen and key not in PROVIDERS:
                raise ValueError(
                    f"model_cache.provider_ttl_overrides.{key}: {key!r} is neither an instance "
                    "name nor a provider type"
                )
        return self

    @property
    def enabled_providers(self) -> list[ProviderSettings]:
        return [provider for provider in self.providers if provider.enabled]

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
        return token + tuple(s for p in self.providers for s in p.secret_values)


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    settings: Settings
    origin: str  # the file path, or EMBEDDED_DEFAULT


def find_config_path(explicit: Path | None, env: Mapping[str, str]) -> Path | None:
    """--config, then $LOCALROUTER_CONFIG (both must exist), then the XDG file, then legacy."""
    if explicit is not None:
        return explicit
    if env.get(ENV_CONFIG):
        return Path(env[ENV_CONFIG])
    xdg_home = env.get("XDG_CONFIG_HOME")
    config_dir = Path(xdg_home) / APP_NAME if xdg_home else platformdirs.user_config_path(APP_NAME)
    home = Path(env.get("HOME") or Path.home())
    for candidate in (config_dir / "config.yaml", home / ".localrouter" / "config.yml"):
        if candidate.is_file():
            return candidate
    return None


def watch_path(explicit: Path | None, env: Mapping[str, str]) -> Path:
    """The file to watch for changes: the one in use, else where a new one would be found."""
    found = find_config_path(explicit, env)
    if found is not None:
        return found
    xdg_home = env.get("XDG_CONFIG_HOME")
    config_dir = Path(xdg_home) / APP_NAME if xdg_home else platformdirs.user_config_path(APP_NAME)
    return config_dir / "config.yaml"


def literal_secrets_exposed(path: Path) -> list[str]:
    """Key paths of secrets written literally (not as ${VAR}) in a file other users can read."""
    try:
        if path.stat().st_mode & 0o077 == 0:
            return []
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return []
    if not isinstance(raw, dict):
        return []
    found = []
    server = raw.get("server")
    if isinstance(server, dict) and _literal(server.get("auth_token")):
        found.append("server.auth_token")
    providers = raw.get("providers")
    for index, entry in enumerate(providers if isinstance(providers, list) else []):
        if isinstance(entry, dict) and _literal(entry.get("api_key")):
            found.append(f"providers[{index}].api_key")
    return found


def _literal(value: Any) -> bool:
    return isinstance(value, str) and bool(value) and not _ENV_REFERENCE.fullmatch(value.strip())


def load_config(explicit: Path | None = None, env: Mapping[str, str] | None = None) -> LoadedConfig:
    environment = os.environ if env is None else env
    path = find_config_path(explicit, environment)
    if path is None:
        return LoadedConfig(default_settings(environment), EMBEDDED_DEFAULT)
    return LoadedConfig(parse_settings(_read(path), str(path), environment), str(path))


def load_server_config(
    explicit: Path | None = None, env: Mapping[str, str] | None = None
) -> ServerSettings:
    """The `server` section of the config in use (the defaults without a file)."""
    environment = os.environ if env is None else env
    path = find_config_path(explicit, environment)
    if path is None:
        return ServerSettings()
    return parse_server_settings(_read(path), str(path), environment)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from None


def parse_settings(text: str, origin: str, env: Mapping[str, str]) -> Settings:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{origin}: not valid YAML{where}: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        found = type(raw).__name__
        raise ConfigError(f"{origin}: expected a mapping at the top level, got {found}")
    substituted: list[str] = []
    expanded = _expand_env(raw, env, origin, (), substituted)
    _fill_standard_keys(expanded, env)
    notes = _keys_left_out(expanded)
    try:
        settings = Settings.model_validate(expanded)
    except ValidationError as exc:
        hidden = [*substituted, *_literal_secrets(expanded)]
        raise ConfigError(_describe(exc, origin, hidden)) from None
    settings._notes = tuple(notes)
    return settings


def parse_server_settings(text: str, origin: str, env: Mapping[str, str]) -> ServerSettings:
    """Only the `server` section (for the commands that talk to a running daemon: they need
    its address and token, not the providers' keys)."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError:
        raw = None
    server = raw.get("server") if isinstance(raw, dict) else None
    if not isinstance(server, dict):
        return ServerSettings()
    substituted: list[str] = []
    expanded = _expand_env(server, env, origin, ("server",), substituted)
    try:
        return ServerSettings.model_validate(expanded)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, f"{origin}: server", substituted)) from None


def default_settings(env: Mapping[str, str]) -> Settings:
    """Keyless providers plus every provider whose standard key variable is set."""
    providers: list[dict[str, Any]] = []
    for spec in PROVIDERS.values():
        key = env.get(spec.key_env) if spec.key_env else None
        wanted = spec.default_inclusion is DefaultInclusion.ALWAYS or (
            spec.default_inclusion is DefaultInclusion.WITH_KEY and key
        )
        if wanted:
            providers.append({"name": spec.type, "type": spec.type, "api_key": key or None})
    try:
        settings = Settings.model_validate({"providers": providers})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, EMBEDDED_DEFAULT)) from None
    settings._probes = frozenset(p.name for p in settings.providers if p.kind is ProviderKind.LOCAL)
    return settings


def _expand_env(
    node: Any,
    env: Mapping[str, str],
    origin: str,
    path: tuple[str | int, ...],
    substituted: list[str],
) -> Any:
    """Replace ${VAR} references; every value put in is added to `substituted` (never shown)."""
    if isinstance(node, dict):
        return {
            key: _expand_env(value, env, origin, (*path, key), substituted)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [
            _expand_env(value, env, origin, (*path, index), substituted)
            for index, value in enumerate(node)
        ]
    if not isinstance(node, str):
        return node

    if _is_provider_key(path):
        unset = [name for name in _ENV_REFERENCE.findall(node) if name not in env]
        if unset:  # the instance goes without a key (see _keys_left_out)
            return _UnsetKey(unset[0])

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise ConfigError(
                f"{origin}: {_key_path(path)}: environment variable {name} is not set; "
                "export it before starting localrouter or write the value in the file"
            )
        substituted.append(env[name])
        return env[name]

    return _ENV_REFERENCE.sub(substitute, node)


@dataclass(frozen=True, slots=True)
class _UnsetKey:
    """An api_key whose ${VAR} is not set."""

    variable: str


def _is_provider_key(path: tuple[str | int, ...]) -> bool:
    return len(path) == 3 and path[0] == "providers" and path[2] == "api_key"


def _keys_left_out(raw: dict[str, Any]) -> list[str]:
    """Take out each api_key whose ${VAR} is unset, and say what that means for its instance:
    one whose provider needs a key is turned off, any other runs without a key."""
    notes = []
    providers = raw.get("providers")
    for index, entry in enumerate(providers if isinstance(providers, list) else []):
        if not isinstance(entry, dict) or not isinstance(entry.get("api_key"), _UnsetKey):
            continue
        variable = entry.pop("api_key").variable
        name = entry.get("name", f"providers[{index}]")
        spec = PROVIDERS.get(str(entry.get("type")))
        if spec is not None and spec.key_required and entry.get("enabled", True):
            entry["enabled"] = False
            notes.append(
                f"instance {name!r} is off: its api_key names {variable}, which is not set; "
                f"export {variable} and reload to turn it on"
            )
        else:
            notes.append(f"instance {name!r} runs without a key: {variable} is not set")
    return notes


def _literal_secrets(raw: dict[str, Any]) -> list[str]:
    """Secret values written in the file itself: the token, keys and header values."""
    found: list[Any] = []
    server = raw.get("server")
    if isinstance(server, dict):
        found.append(server.get("auth_token"))
    providers = raw.get("providers")
    for entry in providers if isinstance(providers, list) else []:
        if isinstance(entry, dict):
            found.append(entry.get("api_key"))
            headers = entry.get("headers")
            if isinstance(headers, dict):
                found += headers.values()
    return [value for value in found if isinstance(value, str) and value]


def _shareable(value: str) -> bool:
    """Whether a rejected value may be quoted in a message: short, and not shaped like a key."""
    return len(value) <= 32 and not _SECRET_SHAPE.search(value)


def _fill_standard_keys(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    """An entry without api_key uses its provider's standard variable (OPENAI_API_KEY, ...)."""
    providers = raw.get("providers")
    if not isinstance(providers, list):
        return
    for entry in providers:
        if not isinstance(entry, dict) or "api_key" in entry:
            continue
        spec = PROVIDERS.get(str(entry.get("type")))
        if spec is not None and spec.key_env and env.get(spec.key_env):
            entry["api_key"] = env[spec.key_env]


def _describe(error: ValidationError, origin: str, hidden: list[str] | None = None) -> str:
    lines = []
    for item in error.errors(include_url=False, include_input=False):
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key; check its spelling against config/localrouter.example.yaml"
        where = f"{_key_path(item['loc'])}: " if item["loc"] else ""
        lines.append(f"{origin}: {where}{redact(message, hidden or ())}")
    return "\n".join(lines)


def _key_path(location: tuple[str | int, ...]) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
