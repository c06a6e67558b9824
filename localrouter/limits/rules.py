"""Which limits apply to whom, compiled once per config: each caller's own scope (its
`limits:`, else the top-level ones) and one scope per `model_limits` glob."""

from __future__ import annotations

from dataclasses import dataclass

from localrouter.config.control import Client, Globs
from localrouter.config.limits import LimitSettings, LimitValues
from localrouter.config.settings import Settings

NO_CLIENT = ""  # the counters' name for a caller with no client (the admin, or anyone)


@dataclass(frozen=True, slots=True, eq=False)
class Scope:
    """Limits counted together: `key` names their counters (so they survive a reload),
    `who` and `path` say in messages whose they are and where they are configured."""

    key: str
    who: str
    path: str
    limits: dict[str, float]  # the set ones, by config key
    models: Globs | None  # None: every model

    def covers(self, asked: str, resolved: str) -> bool:
        return self.models is None or self.models(asked) or self.models(resolved)


@dataclass(frozen=True, slots=True, eq=False)
class Limit:
    """One limit of a scope, counted in the counter `counter`: (scope key, kind)."""

    scope: Scope
    kind: str  # its config key
    value: float
    counter: tuple[str, str]
    shown: str  # as answers' headers show it


@dataclass(frozen=True, slots=True, eq=False)
class CallerLimits:
    client: str  # a client's name, or NO_CLIENT
    scopes: tuple[Scope, ...]
    refuses_unpriced: bool
    limits: tuple[Limit, ...]  # every scope's, in order
    every_model: bool  # whether every scope covers every model

    def applying(self, asked: str, resolved: str) -> tuple[Limit, ...]:
        """The limits of the scopes that cover a call asked for as `asked`, going to
        `resolved`."""
        return tuple(limit for limit in self.limits if limit.scope.covers(asked, resolved))


@dataclass(frozen=True, slots=True, eq=False)
class LimitRules:
    settings: LimitSettings
    by_client: dict[str, CallerLimits | None]
    no_client: CallerLimits | None

    @classmethod
    def of(cls, settings: Settings) -> LimitRules:
        default = settings.limits
        by_client: dict[str, CallerLimits | None] = {}
        for index, client in enumerate(settings.clients):
            own = client.limits
            path = f"clients[{index}].limits" if own is not None else "limits"
            scopes = [_scope(client.name, client.name, path, own or default)]
            scopes += [
                _scope(
                    f"{client.name}\x1f{glob}",
                    client.name,
                    f"clients[{index}].model_limits.{glob}",
                    values,
                    glob,
                )
                for glob, values in client.model_limits.items()
            ]
            said = own.usd_limits_unpriced if own is not None else None
            refuses = (said or default.usd_limits_unpriced) == "refuse"
            by_client[client.name] = _caller(client.name, scopes, refuses)
        anyone = _caller(NO_CLIENT, [_scope(NO_CLIENT, NO_CLIENT, "limits", default)], False)
        return cls(default, by_client, anyone)

    @property
    def any(self) -> bool:
        return self.no_client is not None or any(self.by_client.values())

    def of_client(self, client: Client | None) -> CallerLimits | None:
        return self.no_client if client is None else self.by_client.get(client.name)

    def callers(self) -> list[CallerLimits]:
        found = [caller for caller in self.by_client.values() if caller is not None]
        return [*found, self.no_client] if self.no_client is not None else found


def shown_client(name: str) -> str:
    return f"client {name!r}" if name else "callers with no client token"


def _scope(key: str, client: str, path: str, values: LimitValues, glob: str | None = None) -> Scope:
    who = shown_client(client) + (f" on {glob}" if glob is not None else "")
    return Scope(key, who, path, values.set, Globs([glob]) if glob is not None else None)


def _caller(client: str, scopes: list[Scope], refuses: bool) -> CallerLimits | None:
    kept = tuple(scope for scope in scopes if scope.limits)
    if not kept:
        return None
    limits = tuple(
        Limit(scope, kind, value, (scope.key, kind), f"{value:g}")
        for scope in kept
        for kind, value in scope.limits.items()
    )
    every_model = all(scope.models is None for scope in kept)
    return CallerLimits(client, kept, refuses, limits, every_model)
