"""The limits as the call path meets them: `admit` before a call (every limit that applies
checked, the call's expected use reserved, or a refusal raised in the client's protocol),
`Ticket.release` when its answer ends and `Ticket.settle` once its usage is priced."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import structlog

from localrouter.base.errors import BudgetExceeded, RateLimited, UnpricedRefused
from localrouter.config.control import Client
from localrouter.config.live import LiveSettings
from localrouter.limits.counting import (
    PARALLEL,
    REQUESTS,
    TOKENS,
    USD_DAY,
    USD_MONTH,
    LocalCounts,
    Need,
)
from localrouter.limits.estimate import Estimate, estimate
from localrouter.limits.periods import Period, Periods
from localrouter.limits.rules import CallerLimits, LimitRules, Scope
from localrouter.limits.shared import SharedCounts
from localrouter.lists.cache import Clock
from localrouter.lists.fleet import Fleet
from localrouter.lists.instance import Instance
from localrouter.providers.base import ModelInfo
from localrouter.usage.cost import prices_for
from localrouter.usage.ledger import Ledger
from localrouter.usage.record import CallRecord

log = structlog.get_logger(__name__)

DOLLARS = (USD_DAY, USD_MONTH)
REMAINING_USD_HEADER = "x-localrouter-budget-remaining-usd"


class Ticket:
    """An admitted call's reservations, until they are settled."""

    __slots__ = ("_limits", "call_id", "headers", "needs", "shared")

    def __init__(
        self,
        limits: Limits,
        needs: list[Need],
        call_id: str,
        shared: bool,
        headers: dict[str, str],
    ) -> None:
        self._limits, self.needs, self.call_id, self.shared = limits, needs, call_id, shared
        self.headers = headers  # put on the answer: x-ratelimit-*, the budget's warning

    def release(self) -> None:
        """The answer ended: its slots of max_parallel are free."""
        for need in self.needs:
            if need.kind == PARALLEL:
                self._limits.settle(self, need, 0.0)

    def settle(self, record: CallRecord) -> None:
        """The call's reserved tokens and dollars replaced by its real ones (a call that
        failed before any use reported none, and so gives its reservation back)."""
        tokens = record.tokens.input_tokens + record.tokens.output_tokens
        cost = record.cost_usd or 0.0
        for need in self.needs:
            if need.kind == TOKENS:
                self._limits.settle(self, need, float(tokens))
            elif need.kind in DOLLARS:
                self._limits.settle(self, need, cost)

    def refund(self) -> None:
        """Everything given back: the call goes to another model (a fallback), which is
        admitted on its own."""
        for need in self.needs:
            self._limits.settle(self, need, 0.0)
        self.needs = []


@dataclass
class Limits:
    live: LiveSettings
    clock: Clock
    ledger: Ledger | None = None
    fleet: Fleet | None = None
    counts: LocalCounts = field(default_factory=LocalCounts)
    rules: LimitRules = field(init=False)
    periods: Periods = field(init=False)
    shared: SharedCounts | None = field(init=False)
    _warned: set[tuple[str, str, str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.shared = SharedCounts(self.fleet) if self.fleet is not None else None
        self._apply()
        self.live.subscribe(lambda _: self._apply())

    def _apply(self) -> None:
        """A config (re)loaded: its limits apply from the next request; the counts stay."""
        self.rules = LimitRules.of(self.live.current)
        timezone = self.rules.settings.timezone
        if getattr(self, "periods", None) is None or self.periods.timezone != timezone:
            self.periods = Periods(timezone)

    def of(self, client: Client | None) -> CallerLimits | None:
        """The limits `client` is held to (None: none, the common case)."""
        return self.rules.of_client(client)

    async def admit(
        self,
        caller: CallerLimits,
        asked: str,
        instance: Instance,
        upstream_id: str,
        listed: ModelInfo | None,
        request_bytes: int,
        asked_output: int | None,
        call_id: str,
    ) -> Ticket:
        """Reserve what the call to `instance`/`upstream_id` (asked for as `asked`) is
        expected to use against every limit of `caller` that applies, or raise the refusal
        of the first that it would exceed."""
        resolved = f"{instance.name}/{upstream_id}"
        scopes = caller.applying(asked, resolved)
        prices, source = prices_for(
            instance.settings, upstream_id, listed.pricing if listed else None
        )
        expected = estimate(
            request_bytes,
            asked_output,
            listed.max_output_tokens if listed else None,
            prices,
            source,
        )
        if expected.cost is None and caller.refuses_unpriced:
            _refuse_unpriced(scopes, resolved)
        now = self.clock()
        needs = self._needs(scopes, expected, now)
        if not needs:
            return Ticket(self, needs, call_id, False, {})
        shared = self.shared
        verdict = await shared.admit(needs, call_id, now) if shared is not None else None
        counts = self.counts
        own = counts.used(needs)
        refusing = counts.first_refusing(needs, own)
        used = own
        if verdict is not None:  # the fleet's counts decide, and never count less than ours:
            # a Redis restarted empty, or one that was unreachable a while, misses some spend
            fleet_refusing, used = verdict
            if fleet_refusing is not None:
                refusing = fleet_refusing
            elif refusing is not None:
                assert shared is not None
                for need in needs:  # give the fleet's reservation back
                    shared.settle(need, 0.0, call_id)
                used = own
        if refusing is not None:
            raise self._refusal(needs, used, refusing, expected, now)
        counts.reserve(needs)
        return Ticket(self, needs, call_id, verdict is not None, self._headers(needs, used, now))

    def settle(self, ticket: Ticket, need: Need, actual: float) -> None:
        self.counts.settle(need, actual)
        if ticket.shared and self.shared is not None:
            self.shared.settle(need, actual, ticket.call_id)

    def _needs(self, scopes: list[Scope], expected: Estimate, now: float) -> list[Need]:
        needs = []
        periods = self.periods
        for scope in scopes:
            for kind, limit in scope.limits.items():
                if kind == REQUESTS:
                    needs.append(Need(scope, kind, limit, 1.0, periods.minute(now)))
                elif kind == TOKENS:
                    needs.append(Need(scope, kind, limit, expected.tokens, periods.minute(now)))
                elif kind == PARALLEL:
                    needs.append(Need(scope, kind, limit, 1.0, None))
                elif expected.cost:  # priced and not free: dollars count
                    period = periods.day(now) if kind == USD_DAY else periods.month(now)
                    needs.append(Need(scope, kind, limit, expected.cost, period))
        return needs

    def _headers(self, needs: list[Need], used: list[float], now: float) -> dict[str, str]:
        headers: dict[str, str] = {}
        for kind, name in ((REQUESTS, "requests"), (TOKENS, "tokens")):
            tightest = _tightest(needs, used, kind, after=True)
            if tightest is not None:
                need, left = tightest
                headers.update(_rate_headers(name, need, left, now))
        warn_at = self.rules.settings.warn_at
        remaining: float | None = None
        for need, value in zip(needs, used, strict=True):
            if need.kind in DOLLARS and need.limit and value + need.amount >= warn_at * need.limit:
                left = max(need.limit - value - need.amount, 0.0)
                remaining = left if remaining is None else min(remaining, left)
                self._warn(need, value + need.amount)
        if remaining is not None:
            headers[REMAINING_USD_HEADER] = f"{remaining:.6f}"
        return headers

    def _warn(self, need: Need, used: float) -> None:
        assert need.period is not None
        once = (need.scope.key, need.kind, need.period.name)
        if once not in self._warned:
            if len(self._warned) > 10_000:
                self._warned.clear()
            self._warned.add(once)
            log.warning(
                "limits.budget_warning",
                who=need.scope.who,
                budget=f"{need.scope.path}.{need.kind}",
                limit_usd=need.limit,
                used_usd=round(used, 6),
                resets=self.periods.shown(need.period.ends),
            )

    def _refusal(
        self, needs: list[Need], used: list[float], index: int, expected: Estimate, now: float
    ) -> RateLimited | BudgetExceeded:
        need, value = needs[index], used[index]
        scope, limit = need.scope, need.limit
        where = f"{scope.path}.{need.kind}"
        if need.kind in DOLLARS:
            assert need.period is not None
            ends = need.period.ends
            this = (
                f" This call may cost up to ${need.amount:.4f} (about {expected.input_tokens} "
                f"input tokens and up to {expected.output_tokens} output: a lower max_tokens "
                "reserves less)."
                if value < limit
                else ""
            )
            return BudgetExceeded(
                f"Budget exceeded for {scope.who}: {where} is ${limit:g}, and "
                f"${value:.4f} is spent or reserved by calls in flight.{this} It resets at "
                f"{self.periods.shown(ends)} (in {_duration(ends - now)}). Calls to models "
                "with no known price are not counted.",
                status=self.rules.settings.budget_status,
            )
        if need.kind == PARALLEL:
            message = (
                f"Too many calls at once for {scope.who}: {value:g} in flight, and "
                f"{where} is {limit:g}. Try again when one has ended."
            )
            wait = 1.0
        else:
            assert need.period is not None
            wait = max(need.period.ends - now, 0.001)
            unit = "requests" if need.kind == REQUESTS else "tokens"
            this = (
                f" This call may use {need.amount:g} (about {expected.input_tokens} input "
                f"tokens and up to {expected.output_tokens} output: a lower max_tokens needs "
                "fewer)."
                if need.kind == TOKENS
                else ""
            )
            message = (
                f"Rate limit reached for {scope.who}: {where} is {limit:g}, and {value:g} "
                f"{unit} are used in this minute.{this} Try again in {_duration(wait)}."
            )
        headers = {
            "Retry-After": str(max(1, math.ceil(wait))),
            "retry-after-ms": str(math.ceil(wait * 1000)),
        }
        for kind, name in ((REQUESTS, "requests"), (TOKENS, "tokens")):
            tightest = _tightest(needs, used, kind, after=False)
            if tightest is not None:
                headers.update(_rate_headers(name, *tightest, now))
        error_type = "tokens" if need.kind == TOKENS else "requests"
        return RateLimited(message, error_type=error_type, headers=headers)


def _refuse_unpriced(scopes: list[Scope], resolved: str) -> None:
    for scope in scopes:
        if USD_DAY in scope.limits or USD_MONTH in scope.limits:
            raise UnpricedRefused(
                f"'{resolved}' has no known price, and {scope.who} refuses calls that its "
                f"dollar budget cannot count ({scope.path}: usd_limits_unpriced: refuse). "
                "Give the model a price (providers[].pricing or model_pricing), or call a "
                "priced one.",
                param="model",
            )


def _tightest(
    needs: list[Need], used: list[float], kind: str, *, after: bool
) -> tuple[Need, float] | None:
    """The need of `kind` with the least left (after this call's amount, when admitted)."""
    found: tuple[Need, float] | None = None
    for need, value in zip(needs, used, strict=True):
        if need.kind == kind:
            left = need.limit - value - (need.amount if after else 0.0)
            if found is None or left < found[1]:
                found = need, left
    return found


def _rate_headers(name: str, need: Need, left: float, now: float) -> dict[str, str]:
    period: Period | None = need.period
    reset = max(period.ends - now, 0.0) if period is not None else 0.0
    return {
        f"x-ratelimit-limit-{name}": f"{need.limit:g}",
        f"x-ratelimit-remaining-{name}": f"{max(math.floor(left), 0)}",
        f"x-ratelimit-reset-{name}": f"{reset:.3f}".rstrip("0").rstrip(".") + "s",
    }


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{max(math.ceil(seconds), 1)} s"
    minutes = math.ceil(seconds / 60)
    if minutes < 120:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    return f"{hours} h {rest} min" if hours < 48 else f"{math.ceil(hours / 24)} days"
