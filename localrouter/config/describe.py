"""What `localrouter check` (and the console's Config page) shows of a config: the resolved
instances, aliases, hidden ids, fallbacks, clients with their limits, the fleet and the notes;
never a secret."""

from __future__ import annotations

from localrouter.base.secrets import display_url
from localrouter.config.loading import LoadedConfig
from localrouter.config.settings import ClientSettings, Settings


def _shown_limits(values: dict[str, float]) -> str:
    return ", ".join(f"{key} {value:g}" for key, value in values.items())


def _limits_of(client: ClientSettings) -> str:
    parts = [_shown_limits(client.limits.set)] if client.limits and client.limits.set else []
    parts += [f"on {glob}: {_shown_limits(v.set)}" for glob, v in client.model_limits.items()]
    return f"; limits {'; '.join(parts)}" if parts else ""


def describe(loaded: LoadedConfig) -> str:
    """A summary of the resolved instances, without secrets."""
    settings: Settings = loaded.settings
    server = settings.server
    lines = [
        f"config: {loaded.origin}",
        f"listen: http://{server.host}:{server.port}/v1"
        + ("  (auth token required)" if server.auth_token else ""),
        f"instances: {len(settings.enabled_providers)}",
    ]
    for provider in settings.providers:
        count = len(provider.keys)
        key = f"{count} keys (a pool)" if provider.pooled else ("key set" if count else "no key")
        state = "" if provider.enabled else "  (disabled)"
        if provider.enabled and settings.calls_itself(provider):
            state = "  (skipped: this daemon's own listener, see the note)"
        headers = f"  headers: {', '.join(sorted(provider.headers))}" if provider.headers else ""
        lines.append(
            f"  {provider.name:<16} {provider.type:<18} {display_url(provider.resolved_base_url)}  "
            f"ttl {settings.ttl_for(provider):g}s  {key}{headers}{state}"
        )
    models = settings.models
    if models.aliases:
        lines.append("aliases: " + ", ".join(f"{a} -> {t}" for a, t in models.aliases.items()))
    if models.hide:
        lines.append(f"hidden: {', '.join(models.hide)}")
    for model, choices in models.fallbacks.items():
        lines.append(f"fallbacks: {model} -> {', '.join(choices)}")
    for client in settings.clients:  # never the token
        allowed = ", ".join(client.allow) if client.allow is not None else "everything"
        lines.append(f"client {client.name}: token set, allows {allowed}{_limits_of(client)}")
    if defaults := settings.limits.set:
        lines.append(f"limits (clients without their own): {_shown_limits(defaults)}")
    if (redis_url := settings.fleet.redis_url) is not None:  # never the password
        shown = display_url(redis_url.get_secret_value())
        lines.append(f"fleet: {shown}  key prefix {settings.fleet.key_prefix!r}")
    lines += [f"note: {note}" for note in settings.notes]
    return "\n".join(lines)
