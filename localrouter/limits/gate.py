"""The limits as the call path meets them: `admit` before a call (every limit that applies
checked, the call's expected use reserved, or a refusal raised in the client's protocol),
`Ticket.release` when its answer ends and `Ticket.settle` once its usage is priced."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import structlog
from multidict import istr

from localrouter.base.errors import BudgetExceeded, RateLimited, UnpricedRefused
from localrouter.config.control import Client
from localrouter.config.live import LiveSettings
from localrouter.limits.counting import Held, LocalCounts, Window, settle, take
from localrouter.limits.estimate import Estimate, Rates
from localrouter.limits.periods import MINUTE, STEP_BACK_KEPT, Period, Periods
from localrouter.limits.rules import (
    DOLLARS,
    PARALLEL,
    REQUESTS,
    TOKENS,
    CallerLimits,
    Limit,
    LimitRules,
    Plan,
)
from localrouter.limits.shared import SharedCounts
from localrouter.lists.cache import Clock, ModelList
from localrouter.lists.fleet import Fleet
from localrouter.lists.instance import Instance
from localrouter.providers.base import ModelInfo
from localrouter.usage.cost import forget_configured_prices, prices_for
from localrouter.usage.ledger import Ledger
from localrouter.usage.record import CallRecord

log = structlog.get_logger(__name__)

# istr: a plain str header name costs an istr made each time the answer's headers are written
REMAINING_USD_HEADER: str = istr("x-localrouter-budget-remaining-usd")


_RATE_PARTS = ("limit", "remaining", "reset")


def _rate_header_names(rate: str) -> tuple[str, str, str]:
    """The limit, remaining and reset headers of a rate, for its tightest limit."""
    limit, remaining, reset = (istr(f"x-ratelimit-{name}-{rate}") for name in _RATE_PARTS)
    return limit, remaining, reset


_RATE_HEADERS = {REQUESTS: _rate_header_names("requests"), TOKENS: _rate_header_names("tokens")}
NO_PLAN = Plan.of(())
_NO_HEADERS: dict[str, str] = {}  # never written to: a ticket admitted gets its own
_TERMS_KEPT = 4096  # terms kept (one per client and model called): past this, made anew


class Ticket:
    """A call's reservations, until they are settled: the amount it holds of each limit of
    its plan, in the window and period it counts in (by position), and in the fleet's counts
    when `shared`."""

    __slots__ = (
        "amounts",
        "call_id",
        "headers",
        "periods",
        "plan",
        "settles",
        "shared",
        "windows",
    )

    def __init__(
        self,
        call_id: str,
        plan: Plan,
        windows: list[Window],
        periods: list[Period | None],
        amounts: tuple[float, ...],
    ) -> None:
        self.call_id, self.plan, self.amounts = call_id, plan, amounts
        self.windows, self.periods = windows, periods
        self.settles = plan.settles  # whether it waits for the call's usage (tokens, dollars)
        self.shared: SharedCounts | None = None
        self.headers = _NO_HEADERS  # put on the answer: x-ratelimit-*, the warning

    def held(self) -> list[Held]:
        """Each limit with its window, amount and period (as the fleet's counts take them)."""
        return list(zip(self.plan.limits, self.windows, self.amounts, self.periods, strict=True))

    def release(self) -> None:
        """The answer ended: its slots of max_parallel are free."""
        if slots := self.plan.slots:
            self._settle_all(slots, 0.0)

    def settle(self, record: CallRecord) -> None:
        """The call's reserved tokens and dollars replaced by its real ones (a call that
        failed before any use reported none, and so gives its reservation back)."""
        plan = self.plan
        if plan.tokens:
            tokens = record.tokens
            self._settle_all(plan.tokens, float(tokens.input_tokens + tokens.output_tokens))
        if plan.budgets:
            self._settle_all(plan.budgets, record.cost_usd or 0.0)

    def refund(self) -> None:
        """Everything given back: the call goes to another model (a fallback), which is
        admitted on its own."""
        self._settle_all(range(len(self.amounts)), 0.0)
        self.plan, self.windows, self.periods, self.amounts = NO_PLAN, [], [], ()
        self.settles = False

    def _settle_all(self, indices: Sequence[int], actual: float) -> None:
        """The limits at `indices` settled at `actual` each, here and in the fleet's counts
        when it holds them."""
        settle(self.windows, self.amounts, indices, actual)
        shared = self.shared
        if shared is not None:
            held = self.held()
            for index in indices:
                shared.settle(held[index], actual, self.call_id)


class Terms:
    """A caller's calls to one model, asked for as some name and going to `instance`: the
    plans they are held to (`priced`; `unpriced`, without dollars, for a call that costs
    nothing or has no known price) and the model's rates. Worked out at the first such call
    from the config and the instance's list (`current`), and used while both are the same."""

    __slots__ = (
        "current",
        "instance",
        "priced",
        "rates",
        "refuses_unpriced",
        "resolved",
        "unpriced",
        "upstream_id",
    )

    def __init__(
        self,
        caller: CallerLimits,
        asked: str,
        instance: Instance,
        upstream_id: str,
        current: ModelList | None,
        rates: Rates,
    ) -> None:
        self.instance, self.upstream_id, self.current = instance, upstream_id, current
        self.resolved = f"{instance.name}/{upstream_id}"
        self.priced, self.unpriced = caller.plans(asked, instance, upstream_id)
        self.refuses_unpriced = caller.refuses_unpriced
        self.rates = rates


@dataclass
class Limits:
    live: LiveSettings
    clock: Clock
    ledger: Ledger | None = None
    fleet: Fleet | None = None
    counts: LocalCounts = field(default_factory=LocalCounts)
    rules: LimitRules = field(init=False)
    # The limits a client is held to (None: none, the common case): the current rules' own
    # method, asked once a call.
    of: Callable[[Client | None], CallerLimits | None] = field(
        init=False, repr=False, compare=False
    )
    periods: Periods = field(init=False)
    shared: SharedCounts | None = field(init=False)
    _warned: set[tuple[str, str, str]] = field(default_factory=set)
    # By caller and the name it asked for: the terms of its last call so.
    _terms: dict[tuple[CallerLimits, str], Terms] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.shared = SharedCounts(self.fleet) if self.fleet is not None else None
        self._apply()
        self.live.subscribe(lambda _: self._apply())

    def _apply(self) -> None:
        """A config (re)loaded: its limits and prices apply from the next request; the counts
        stay."""
        forget_configured_prices()  # the old config's, never asked for again
        self.counts.forget_plans()
        self._terms.clear()
        self.rules = LimitRules.of(self.live.current)
        self.of = self.rules.of_client
        timezone = self.rules.settings.timezone
        if getattr(self, "periods", None) is None or self.periods.timezone != timezone:
            self.periods = Periods(timezone)

    def terms(
        self, caller: CallerLimits, asked: str, instance: Instance, upstream_id: str
    ) -> Terms | None:
        """The terms of `caller`'s call to `instance`/`upstream_id` (asked for as `asked`)
        while they hold, else None (new_terms works them out)."""
        found = self._terms.get((caller, asked))
        if (
            found is None
            or found.instance is not instance
            or found.upstream_id != upstream_id
            or found.current is not instance.cache.current
        ):
            return None
        return found

    async def new_terms(
        self,
        caller: CallerLimits,
        asked: str,
        instance: Instance,
        upstream_id: str,
        listing: Awaitable[ModelInfo | None],
    ) -> Terms:
        """The terms of a call whose terms do not hold, from the model's `listing` (its
        prices and output limit)."""
        current = instance.cache.current  # before the wait: a list landing during it is new
        listed = await listing
        prices, source = prices_for(
            instance.settings, upstream_id, listed.pricing if listed else None
        )
        rates = Rates(prices, source, listed.max_output_tokens if listed else None)
        terms = Terms(caller, asked, instance, upstream_id, current, rates)
        if len(self._terms) >= _TERMS_KEPT:
            self._terms.clear()
        self._terms[caller, asked] = terms
        return terms

    def admit(
        self, terms: Terms, request_bytes: int, asked_output: int | None, call_id: str
    ) -> Ticket:
        """Reserve what a call on `terms` is expected to use against every limit that
        applies, or raise the refusal of the first that it would exceed: by this daemon's
        counts (admit_in_fleet when there is a fleet)."""
        ticket, after, minute_left = self._reserve(terms, request_bytes, asked_output, call_id)
        if after:
            ticket.headers = self._headers(ticket, after, minute_left)
        return ticket

    async def admit_in_fleet(
        self, terms: Terms, request_bytes: int, asked_output: int | None, call_id: str
    ) -> Ticket:
        """admit, by our counts and then the fleet's while Redis answers: they decide, and
        never count less than ours (a Redis restarted empty, or one that was unreachable a
        while, misses some spend). A call our counts refuse never reaches Redis."""
        shared = self.shared
        assert shared is not None
        ticket, after, minute_left = self._reserve(terms, request_bytes, asked_output, call_id)
        if not after:
            return ticket
        every = range(len(ticket.amounts))
        now = self.clock()
        try:
            verdict = await shared.admit(ticket.held(), call_id, now)
        except BaseException:  # the client left while Redis was asked: nobody will settle it
            settle(ticket.windows, ticket.amounts, every, 0.0)
            raise
        if verdict is not None:  # else Redis cannot answer: our counts decide
            refusing, counts = verdict
            if refusing is not None:
                settle(ticket.windows, ticket.amounts, every, 0.0)
                expected = terms.rates.estimate(request_bytes, asked_output)
                raise self._refusal(ticket, counts, refusing, expected, now)
            ticket.shared = shared
            after = [count + amount for count, amount in zip(counts, ticket.amounts, strict=True)]
        ticket.headers = self._headers(ticket, after, minute_left)
        return ticket

    def _reserve(
        self, terms: Terms, request_bytes: int, asked_output: int | None, call_id: str
    ) -> tuple[Ticket, list[float], float]:
        """The call's expected use taken from this daemon's counts, as a ticket, with each
        counter's count after it (empty: no limit applies) and the seconds left in the
        minute; or the refusal of the first limit it would exceed raised."""
        expected = terms.rates.estimate(request_bytes, asked_output)
        cost = expected[2]
        if cost is None and terms.refuses_unpriced:
            _refuse_unpriced(terms.priced.limits, terms.resolved)
        plan = terms.priced if cost else terms.unpriced  # free or unpriced: dollars do not count
        if not plan.limits:
            return Ticket(call_id, NO_PLAN, [], [], ()), [], 0.0
        now = self.clock()
        spans = self.periods.spans(now)
        counted = self.counts.counted(plan, spans)
        windows = counted.windows
        dollars = cost or 0.0
        amounts = plan.amounts((1.0, expected[0] + expected[1], 1.0, dollars, dollars))
        ticket = Ticket(call_id, plan, windows, counted.periods, amounts)
        refusing, after = take(plan, windows, amounts)
        if refusing is not None:
            settle(windows, amounts, range(refusing), 0.0)  # those counted before it
            raise self._refusal(ticket, [w.used for w in windows], refusing, expected, now)
        return ticket, after, spans.minute.ends - now

    def _headers(self, ticket: Ticket, after: list[float], minute_left: float) -> dict[str, str]:
        """x-ratelimit-* and, past a budget's warn_at, the warning; `after`: each counter's
        count with this call's amount in it; `minute_left`: seconds until the minute ends."""
        plan = ticket.plan
        headers = _rate_headers(plan, after, minute_left) if plan.rates else {}
        remaining: float | None = None
        limits = plan.limits
        for index in plan.budgets:
            limit, count = limits[index], after[index]
            if count >= limit.warn_from:
                left = limit.value - count
                left = 0.0 if left < 0.0 else left
                remaining = left if remaining is None or left < remaining else remaining
                period = ticket.periods[index]
                assert period is not None
                self._warn(limit, period, count)
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
        refusing, amount, value = ticket.plan.limits[index], ticket.amounts[index], used[index]
        periods = ticket.periods
        period = periods[index]
        input_tokens, output_tokens, _ = expected
        scope, kind, limit = refusing.scope, refusing.kind, refusing.value
        where = f"{scope.path}.{kind}"
        if kind in DOLLARS:
            assert period is not None
            ends = period.ends
            this = (
                f" This call may cost up to ${amount:.4f} (about {input_tokens} "
                f"input tokens and up to {output_tokens} output: a lower max_tokens "
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
                f" This call may use {amount:g} (about {input_tokens} input "
                f"tokens and up to {output_tokens} output: a lower max_tokens needs "
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
            **_rate_headers(ticket.plan, used, self.periods.spans(now).minute.ends - now),
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


def _rate_headers(plan: Plan, counts: list[float], minute_left: float) -> dict[str, str]:
    """Of each rate (requests, tokens), its tightest limit's headers: the limit, what is left
    of it by `counts`, and when the minute ends (every rate counts in it): in `minute_left`
    seconds, rounded up."""
    headers = {}
    limits = plan.limits
    reset = _SECONDS[math.ceil(minute_left)]
    for kind, indices in plan.rates:
        tightest = indices[0]
        left = limits[tightest].value - counts[tightest]
        if len(indices) > 1:
            for index in indices[1:]:
                if (other := limits[index].value - counts[index]) < left:
                    tightest, left = index, other
        limit_name, remaining_name, reset_name = _RATE_HEADERS[kind]
        headers[limit_name] = limits[tightest].shown
        headers[remaining_name] = str(int(left)) if left >= 1 else "0"  # whole, >= 0
        headers[reset_name] = reset
    return headers


# Made once, not per answer: up to a minute, and one more for a clock set back by up to
# STEP_BACK_KEPT (its minute does not end sooner).
_SECONDS = [f"{seconds}s" for seconds in range(int(MINUTE + STEP_BACK_KEPT) + 1)]


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{max(math.ceil(seconds), 1)} s"
    minutes = math.ceil(seconds / 60)
    if minutes < 120:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    return f"{hours} h {rest} min" if hours < 48 else f"{math.ceil(hours / 24)} days"
