"""What a call needs of each limit, and this daemon's own counts of them: the counts every
daemon keeps (and decides by when Redis cannot be reached), however a fleet counts."""

from __future__ import annotations

from typing import NamedTuple

from localrouter.limits.periods import Period
from localrouter.limits.rules import Scope

REQUESTS, TOKENS = "requests_per_minute", "tokens_per_minute"
USD_DAY, USD_MONTH, PARALLEL = "usd_per_day", "usd_per_month", "max_parallel"
# A float sum of prices may exceed a limit it reached by a rounding error; this much is not more.
SLACK = 1e-9


class Need(NamedTuple):
    """What one call asks of one limit: `amount` of `limit` in `period` (None: calls in
    flight, which have no period)."""

    scope: Scope
    kind: str
    limit: float
    amount: float
    period: Period | None

    @property
    def counter(self) -> tuple[str, str]:
        return self.scope.key, self.kind

    def fits(self, used: float) -> bool:
        return used + self.amount <= self.limit + SLACK


class Window:
    """One counter in its current period: what calls used, what calls in flight reserved."""

    __slots__ = ("period", "reserved", "used")

    def __init__(self, period: str) -> None:
        self.period = period
        self.used = 0.0  # settled and reserved together: what admission compares
        self.reserved = 0.0


class LocalCounts:
    """Every counter of this daemon, by (scope key, kind); a counter whose period ended
    starts again from zero when next used."""

    def __init__(self) -> None:
        self._windows: dict[tuple[str, str], Window] = {}

    def window(self, need: Need) -> Window:
        period = need.period.name if need.period is not None else ""
        found = self._windows.get(need.counter)
        if found is None or found.period != period:
            found = self._windows[need.counter] = Window(period)
        return found

    def used(self, needs: list[Need]) -> list[float]:
        return [self.window(need).used for need in needs]

    def first_refusing(self, needs: list[Need], used: list[float]) -> int | None:
        for index, (need, value) in enumerate(zip(needs, used, strict=True)):
            if not need.fits(value):
                return index
        return None

    def reserve(self, needs: list[Need]) -> None:
        for need in needs:
            window = self.window(need)
            window.used += need.amount
            if need.kind != REQUESTS:  # a request is spent when made; the rest settle later
                window.reserved += need.amount

    def settle(self, need: Need, actual: float) -> None:
        """A reservation replaced by what the call used (0 when it failed before any use);
        dropped when its period has ended since."""
        window = self._windows.get(need.counter)
        period = need.period.name if need.period is not None else ""
        if window is None or window.period != period:
            return
        window.used = max(window.used + actual - need.amount, 0.0)
        window.reserved = max(window.reserved - need.amount, 0.0)

    def seed(self, scope: Scope, kind: str, period: Period, spent: float) -> None:
        """Spend rebuilt from the usage ledger at start."""
        window = self.window(Need(scope, kind, 0.0, 0.0, period))
        window.used += spent

    def peek(self, scope: Scope, kind: str, period: Period | None) -> tuple[float, float]:
        """(used, reserved) of a counter now, without starting one."""
        window = self._windows.get((scope.key, kind))
        name = period.name if period is not None else ""
        if window is None or window.period != name:
            return 0.0, 0.0
        return window.used, window.reserved
