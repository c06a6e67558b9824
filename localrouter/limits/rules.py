"""Which limits apply to whom, compiled once per config: each caller's own scope (its
`limits:`, else the top-level ones) and one scope per `model_limits` glob; and, worked out
on a caller's first call to a model, the plan of the limits that call is held to."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Protocol

from localrouter.config.control import Client, Globs
from localrouter.config.limits import LimitSettings, LimitValues
from localrouter.config.settings import Settings

NO_CLIENT = ""  # the counters' name for a caller with no client (the admin, or anyone)
REQUESTS, TOKENS = "requests_per_minute", "tokens_per_minute"
USD_DAY, USD_MONTH, PARALLEL = "usd_per_day", "usd_per_month", "max_parallel"
# Each kind's position: what a call's loops index the period and amount it counts by.
KINDS = (REQUESTS, TOKENS, PARALLEL, USD_DAY, USD_MONTH)
DOLLARS = (USD_DAY, USD_MONTH)
# A float sum of prices may exceed a limit it reached by a rounding error; this much is not more.
SLACK = 1e-9
# Plans kept per model-scoped caller (one per model it calls): past this, they are made anew.
_PLANS_KEPT = 4096


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
    code: int  # the kind's position in KINDS
    ceiling: float  # the most it may count: value and SLACK
    warn_from: float  # a budget's count from which answers warn (value * warn_at; inf: never)
    reserves: bool  # held until the call settles or ends (a request is spent when made)


@dataclass(frozen=True, slots=True, eq=False)
class Plan:
    """The limits a call is held to, in order, and which are which by position: the rates
    (requests, tokens), those settled from usage (tokens, dollars) and the calls in flight."""

    limits: tuple[Limit, ...]
    codes: tuple[int, ...]  # each limit's kind, by its position in KINDS
    # Each limit's amount, from the amounts of every kind in KINDS's order (one C call).
    amounts: Callable[[tuple[float, ...]], tuple[float, ...]]
    rates: tuple[tuple[str, tuple[int, ...]], ...]  # (REQUESTS or TOKENS, positions), when set
    tokens: tuple[int, ...]
    budgets: tuple[int, ...]
    slots: tuple[int, ...]
    settles: bool  # tokens or dollars: settled from the call's usage

    @classmethod
    def of(cls, limits: tuple[Limit, ...]) -> Plan:
        def where(*kinds: str) -> tuple[int, ...]:
            return tuple(index for index, limit in enumerate(limits) if limit.kind in kinds)

        codes = tuple(limit.code for limit in limits)
        amounts: Callable[[tuple[float, ...]], tuple[float, ...]] = (
            itemgetter(*codes)
            if len(codes) > 1  # else it gives the one item, not a tuple
            else lambda by_kind: tuple(by_kind[code] for code in codes)
        )
        rates = tuple((kind, where(kind)) for kind in (REQUESTS, TOKENS) if where(kind))
        tokens, budgets = where(TOKENS), where(*DOLLARS)
        settles = bool(tokens or budgets)
        return cls(limits, codes, amounts, rates, tokens, budgets, where(PARALLEL), settles)


# A caller's plans for one model: with its dollar limits, and without them (for a call that
# costs nothing or has no known price, which dollars do not count).
Plans = tuple[Plan, Plan]


def plans_of(limits: tuple[Limit, ...]) -> Plans:
    return Plan.of(limits), Plan.of(tuple(limit for limit in limits if limit.kind not in DOLLARS))


class Named(Protocol):
    """An instance, as far as the limits care."""

    @property
    def name(self) -> str: ...


@dataclass(frozen=True, slots=True, eq=False)
class CallerLimits:
    client: str  # a client's name, or NO_CLIENT
    scopes: tuple[Scope, ...]
    refuses_unpriced: bool
    limits: tuple[Limit, ...]  # every scope's, in order
    for_every_model: Plans | None  # when every scope covers every model: its one pair
    _by_model: dict[tuple[str, str, str], Plans] = field(
        default_factory=dict, init=False, repr=False
    )

    def plans(self, asked: str, instance: Named, upstream_id: str) -> Plans:
        """The plans of a call asked for as `asked`, going to `instance`/`upstream_id` (whose
        name is only read when a scope is for some models)."""
        if self.for_every_model is not None:
            return self.for_every_model
        key = asked, instance.name, upstream_id
        found = self._by_model.get(key)
        if found is None:
            if len(self._by_model) >= _PLANS_KEPT:
                self._by_model.clear()
            found = self._by_model[key] = plans_of(
                self.applying(asked, f"{instance.name}/{upstream_id}")
            )
        return found

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
            by_client[client.name] = _caller(client.name, scopes, refuses, default.warn_at)
        anyone = _caller(
            NO_CLIENT, [_scope(NO_CLIENT, NO_CLIENT, "limits", default)], False, default.warn_at
        )
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


def _shown(value: float) -> str:
    """A limit as a header shows it: whole (30, 1000000000; never 1e+09), else as given."""
    return str(int(value)) if float(value).is_integer() else repr(value)


def _caller(client: str, scopes: list[Scope], refuses: bool, warn_at: float) -> CallerLimits | None:
    kept = tuple(scope for scope in scopes if scope.limits)
    if not kept:
        return None
    limits = tuple(
        Limit(
            scope,
            kind,
            value,
            (scope.key, kind),
            _shown(value),
            KINDS.index(kind),
            value + SLACK,
            value * warn_at if value else math.inf,
            kind != REQUESTS,
        )
        for scope in kept
        for kind, value in scope.limits.items()
    )
    every_model = all(scope.models is None for scope in kept)
    return CallerLimits(client, kept, refuses, limits, plans_of(limits) if every_model else None)
