"""The config file: where it is looked for, how it is read, ${VAR} references expanded, the
standard key variables filled in, and every mistake reported with the file and key path."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs
import yaml
from pydantic import ValidationError

from localrouter.base.errors import ConfigError
from localrouter.base.secrets import redact
from localrouter.config.server import ServerSettings
from localrouter.config.settings import Settings
from localrouter.providers import PROVIDERS
from localrouter.providers.base import DefaultInclusion, ProviderKind

APP_NAME = "localrouter"
ENV_CONFIG = "LOCALROUTER_CONFIG"
EMBEDDED_DEFAULT = "<embedded default>"
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


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
    fleet = raw.get("fleet")
    if isinstance(fleet, dict) and _literal(url := fleet.get("redis_url")) and "@" in str(url):
        found.append("fleet.redis_url")
    providers = raw.get("providers")
    for index, entry in enumerate(providers if isinstance(providers, list) else []):
        if not isinstance(entry, dict):
            continue
        if _literal(entry.get("api_key")):
            found.append(f"providers[{index}].api_key")
        pool = entry.get("api_keys")
        for position, key in enumerate(pool if isinstance(pool, list) else []):
            if _literal(key):
                found.append(f"providers[{index}].api_keys[{position}]")
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
    if not settings.providers:
        notes.append(
            f"{origin} configures no provider instances, so nothing is listed or served: add "
            "providers (config/localrouter.example.yaml shows each key), or remove the file to "
            "run on the embedded default"
        )
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
    """Keyless cloud providers plus every provider whose standard key variable is set; local
    servers are found by discovery (discovery/), which the default runs, when they run."""
    providers: list[dict[str, Any]] = []
    for spec in PROVIDERS.values():
        key = env.get(spec.key_env) if spec.key_env else None
        wanted = spec.default_inclusion is DefaultInclusion.ALWAYS or (
            spec.default_inclusion is DefaultInclusion.WITH_KEY and key
        )
        if spec.kind is ProviderKind.LOCAL:
            continue
        if wanted:
            providers.append({"name": spec.type, "type": spec.type, "api_key": key or None})
    try:
        settings = Settings.model_validate({"providers": providers})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, EMBEDDED_DEFAULT)) from None
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
    """providers[i].api_key, or one of providers[i].api_keys."""
    if len(path) < 3 or path[0] != "providers":
        return False
    return (len(path) == 3 and path[2] == "api_key") or (len(path) == 4 and path[2] == "api_keys")


def _keys_left_out(raw: dict[str, Any]) -> list[str]:
    """Take out each api_key whose ${VAR} is unset, and say what that means for its instance:
    one whose provider needs a key is turned off, any other runs without a key."""
    notes = []
    providers = raw.get("providers")
    for index, entry in enumerate(providers if isinstance(providers, list) else []):
        if not isinstance(entry, dict):
            continue
        name = entry.get("name", f"providers[{index}]")
        pool = entry.get("api_keys")
        if isinstance(pool, list) and any(isinstance(key, _UnsetKey) for key in pool):
            unset = [key.variable for key in pool if isinstance(key, _UnsetKey)]
            entry["api_keys"] = [key for key in pool if not isinstance(key, _UnsetKey)]
            if entry["api_keys"]:
                notes.append(
                    f"instance {name!r} runs with {len(entry['api_keys'])} of its "
                    f"{len(pool)} keys: {', '.join(unset)} not set"
                )
                continue
            entry["api_key"] = _UnsetKey(unset[0])
            del entry["api_keys"]
        if not isinstance(entry.get("api_key"), _UnsetKey):
            continue
        variable = entry.pop("api_key").variable
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
    fleet = raw.get("fleet")
    if isinstance(fleet, dict):
        found.append(fleet.get("redis_url"))
    providers = raw.get("providers")
    for entry in providers if isinstance(providers, list) else []:
        if isinstance(entry, dict):
            found.append(entry.get("api_key"))
            pool = entry.get("api_keys")
            found += pool if isinstance(pool, list) else []
            headers = entry.get("headers")
            if isinstance(headers, dict):
                found += headers.values()
    return [value for value in found if isinstance(value, str) and value]


def _fill_standard_keys(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    """An entry without api_key uses its provider's standard variable (OPENAI_API_KEY, ...)."""
    providers = raw.get("providers")
    if not isinstance(providers, list):
        return
    for entry in providers:
        if not isinstance(entry, dict) or "api_key" in entry or "api_keys" in entry:
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
