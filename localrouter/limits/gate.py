"""The limits as the call path meets them: `admit` before a call (every limit that applies
checked, the call's expected use reserved, or a refusal raised in the client's protocol),
`Ticket.release` when its answer ends and `Ticket.settle` once its usage is priced."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import structlog
from multidict import istr

from localrouter.base.errors import BudgetExceeded, RateLimited, UnpricedRefused
from localrouter.config.control import Client
from localrouter.config.live import LiveSettings
from localrouter.limits.counting import (
    PARALLEL,
    REQUESTS,
    TOKENS,
    USD_DAY,
    USD_MONTH,
    Held,
    LocalCounts,
    check,
    reserve,
)
from localrouter.limits.estimate import Estimate, estimate
from localrouter.limits.periods import Period, Periods
from localrouter.limits.rules import CallerLimits, Limit, LimitRules
from localrouter.limits.shared import SharedCounts
from localrouter.lists.cache import Clock
from localrouter.lists.fleet import Fleet
from localrouter.lists.instance import Instance
from localrouter.providers.base import ModelInfo
from localrouter.usage.cost import forget_configured_prices, prices_for
from localrouter.usage.ledger import Ledger
from localrouter.usage.record import CallRecord

log = structlog.get_logger(__name__)

DOLLARS = (USD_DAY, USD_MONTH)
# istr: a plain str header name costs an istr made each time the answer's headers are written
REMAINING_USD_HEADER: str = istr("x-localrouter-budget-remaining-usd")
# The limit, remaining and reset headers of each rate, for its tightest limit.
_RATE_HEADERS: dict[str, tuple[str, str, str]] = {
    kind: (
        istr(f"x-ratelimit-limit-{name}"),
        istr(f"x-ratelimit-remaining-{name}"),
        istr(f"x-ratelimit-reset-{name}"),
    )
    for kind, name in ((REQUESTS, "requests"), (TOKENS, "tokens"))
}


class Ticket:
    """A call's reservations, until they are settled: what it holds of each limit that
    applies (in the config's order), counted here, and in the fleet's counts when `shared`;
    and which of them are which kind, by position."""

    __slots__ = ("budgets", "call_id", "headers", "held", "rates", "shared", "slots", "tokens")

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        self.held: list[Held] = []
        self.rates: list[int] = []  # requests and tokens per minute
        self.tokens: list[int] = []  # tokens per minute
        self.budgets: list[int] = []  # dollars per day and month
        self.slots: list[int] = []  # max_parallel
        self.shared: SharedCounts | None = None
        self.headers: dict[str, str] = {}  # put on the answer: x-ratelimit-*, the warning

    def release(self) -> None:
        """The answer ended: its slots of max_parallel are free."""
        for index in self.slots:
            self._settle(self.held[index], 0.0)

    def settle(self, record: CallRecord) -> None:
        """The call's reserved tokens and dollars replaced by its real ones (a call that
        failed before any use reported none, and so gives its reservation back)."""
        held = self.held
        if self.tokens:
            tokens = float(record.tokens.input_tokens + record.tokens.output_tokens)
            for index in self.tokens:
                self._settle(held[index], tokens)
        if self.budgets:
            cost = record.cost_usd or 0.0
            for index in self.budgets:
                self._settle(held[index], cost)

    def refund(self) -> None:
        """Everything given back: the call goes to another model (a fallback), which is
        admitted on its own."""
        for held in self.held:
            self._settle(held, 0.0)
        self.held, self.rates, self.tokens, self.budgets, self.slots = [], [], [], [], []

    def _settle(self, held: Held, actual: float) -> None:
        _, window, amount, _ = held
        window.settle(amount, actual)
        if self.shared is not None:
            self.shared.settle(held, actual, self.call_id)


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
        """A config (re)loaded: its limits and prices apply from the next request; the counts
        stay."""
        forget_configured_prices()  # the old config's, never asked for again
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
        limits = (
            caller.limits
            if caller.every_model
            else caller.applying(asked, f"{instance.name}/{upstream_id}")
        )
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
            _refuse_unpriced(limits, f"{instance.name}/{upstream_id}")
        now = self.clock()
        ticket = self._ticket(limits, expected, now, call_id)
        held = ticket.held
        if not held:
            return ticket
        shared = self.shared
        verdict = await shared.admit(held, call_id, now) if shared is not None else None
        own, refusing = check(held)
        used = own
        if verdict is not None:  # the fleet's counts decide, and never count less than ours:
            # a Redis restarted empty, or one that was unreachable a while, misses some spend
            fleet_refusing, used = verdict
            if fleet_refusing is not None:
                refusing = fleet_refusing
            elif refusing is not None:
                assert shared is not None
                for each in held:  # give the fleet's reservation back
                    shared.settle(each, 0.0, call_id)
                used = own
        if refusing is not None:
            raise self._refusal(ticket, used, refusing, expected, now)
        reserve(held)
        if verdict is not None:
            ticket.shared = shared
        ticket.headers = self._headers(ticket, used, now)
        return ticket

    def _ticket(
        self, limits: tuple[Limit, ...], expected: Estimate, now: float, call_id: str
    ) -> Ticket:
        """What the call is expected to use of each limit, in the window it counts in now."""
        ticket = Ticket(call_id)
        held = ticket.held
        counts, periods = self.counts, self.periods
        minute = periods.minute(now)
        for limit in limits:
            kind = limit.kind
            period: Period | None
            if kind == REQUESTS:
                amount, period = 1.0, minute
                ticket.rates.append(len(held))
            elif kind == TOKENS:
                amount, period = expected.tokens, minute
                ticket.rates.append(len(held))
                ticket.tokens.append(len(held))
            elif kind == PARALLEL:
                amount, period = 1.0, None
                ticket.slots.append(len(held))
            elif expected.cost:  # priced and not free: dollars count
                amount = expected.cost
                period = periods.day(now) if kind == USD_DAY else periods.month(now)
                ticket.budgets.append(len(held))
            else:
                continue
            held.append((limit, counts.window(limit.counter, period), amount, period))
        return ticket

    def _headers(self, ticket: Ticket, used: list[float], now: float) -> dict[str, str]:
        held = ticket.held
        headers = _rate_headers(_tightest(ticket, used, after=True), now)
        warn_at = self.rules.settings.warn_at
        remaining: float | None = None
        for index in ticket.budgets:
            limit, _, amount, period = held[index]
            value = used[index]
            if limit.value and value + amount >= warn_at * limit.value:
                left = max(limit.value - value - amount, 0.0)
                remaining = left if remaining is None else min(remaining, left)
                assert period is not None
                self._warn(limit, period, value + amount)
        if remaining is not None:
            headers[REMAINING_USD_HEADER] = f"{remaining:.6f}"
        return headers

    def _warn(self, limit: Limit, period: Period, used: float) -> None:
        once = (limit.scope.key, limit.kind, period.name)
        if once not in self._warned:
            if len(self._warned) > 10_000:
                self._warned.clear()
            self._warned.add(once)
            log.warning(
                "limits.budget_warning",
                who=limit.scope.who,
                budget=f"{limit.scope.path}.{limit.kind}",
                limit_usd=limit.value,
                used_usd=round(used, 6),
                resets=self.periods.shown(period.ends),
            )

    def _refusal(
        self, ticket: Ticket, used: list[float], index: int, expected: Estimate, now: float
    ) -> RateLimited | BudgetExceeded:
        (refusing, _, amount, period), value = ticket.held[index], used[index]
        scope, kind, limit = refusing.scope, refusing.kind, refusing.value
        where = f"{scope.path}.{kind}"
        if kind in DOLLARS:
            assert period is not None
            ends = period.ends
            this = (
                f" This call may cost up to ${amount:.4f} (about {expected.input_tokens} "
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
        if kind == PARALLEL:
            message = (
                f"Too many calls at once for {scope.who}: {value:g} in flight, and "
                f"{where} is {limit:g}. Try again when one has ended."
            )
            wait = 1.0
        else:
            assert period is not None
            wait = max(period.ends - now, 0.001)
            unit = "requests" if kind == REQUESTS else "tokens"
            this = (
                f" This call may use {amount:g} (about {expected.input_tokens} input "
                f"tokens and up to {expected.output_tokens} output: a lower max_tokens needs "
                "fewer)."
                if kind == TOKENS
                else ""
            )
            message = (
                f"Rate limit reached for {scope.who}: {where} is {limit:g}, and {value:g} "
                f"{unit} are used in this minute.{this} Try again in {_duration(wait)}."
            )
        headers = {
            "Retry-After": str(max(1, math.ceil(wait))),
            "retry-after-ms": str(math.ceil(wait * 1000)),
            **_rate_headers(_tightest(ticket, used, after=False), now),
        }
        error_type = "tokens" if kind == TOKENS else "requests"
        return RateLimited(message, error_type=error_type, headers=headers)


def _refuse_unpriced(limits: tuple[Limit, ...], resolved: str) -> None:
    for limit in limits:
        if limit.kind in DOLLARS:
            scope = limit.scope
            raise UnpricedRefused(
                f"'{resolved}' has no known price, and {scope.who} refuses calls that its "
                f"dollar budget cannot count ({scope.path}: usd_limits_unpriced: refuse). "
                "Give the model a price (providers[].pricing or model_pricing), or call a "
                "priced one.",
                param="model",
            )


# Of a rate's tightest limit: the limit, what is left of it, its period.
Tightest = tuple[Limit, float, Period | None]


def _tightest(ticket: Ticket, used: list[float], *, after: bool) -> dict[str, Tightest]:
    """Of each rate (requests, tokens), the limit with the least left (after this call's
    amount, when admitted)."""
    found: dict[str, Tightest] = {}
    held = ticket.held
    for index in ticket.rates:
        limit, _, amount, period = held[index]
        left = limit.value - used[index] - (amount if after else 0.0)
        tightest = found.get(limit.kind)
        if tightest is None or left < tightest[1]:
            found[limit.kind] = limit, left, period
    return found


def _rate_headers(tightest: dict[str, Tightest], now: float) -> dict[str, str]:
    headers = {}
    reset = ""
    for kind, (limit_name, remaining_name, reset_name) in _RATE_HEADERS.items():
        if (found := tightest.get(kind)) is not None:
            limit, left, period = found
            reset = reset or _reset(period, now)  # the rates count in the same minute
            headers[limit_name] = limit.shown
            headers[remaining_name] = str(math.floor(left)) if left >= 1 else "0"  # >= 0
            headers[reset_name] = reset
    return headers


def _reset(period: Period | None, now: float) -> str:
    left = period.ends - now if period is not None else 0.0
    reset = 0.0 if left < 0.0 else left
    return f"{reset:.3f}".rstrip("0").rstrip(".") + "s"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{max(math.ceil(seconds), 1)} s"
    minutes = math.ceil(seconds / 60)
    if minutes < 120:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    return f"{hours} h {rest} min" if hours < 48 else f"{math.ceil(hours / 24)} days"
