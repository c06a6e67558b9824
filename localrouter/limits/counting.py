"""What a call holds of each limit, and this daemon's own counts of them: the counts every
daemon keeps (and decides by when Redis cannot be reached), however a fleet counts."""

from __future__ import annotations

from localrouter.limits.periods import Period
from localrouter.limits.rules import Limit

REQUESTS, TOKENS = "requests_per_minute", "tokens_per_minute"
USD_DAY, USD_MONTH, PARALLEL = "usd_per_day", "usd_per_month", "max_parallel"
# A float sum of prices may exceed a limit it reached by a rounding error; this much is not more.
SLACK = 1e-9


class Window:
    """One counter in one period: what calls used, what calls in flight reserved. A counter
    whose period ends starts a new window; the old one, which calls in flight may still
    settle, is no longer counted."""

    __slots__ = ("period", "reserved", "used")

    def __init__(self, period: str) -> None:
        self.period = period  # its name ("": calls in flight, which have no period)
        self.used = 0.0  # settled and reserved together: what admission compares
        self.reserved = 0.0

    def settle(self, amount: float, actual: float) -> None:
        """A reservation of `amount` replaced by what the call used (0 when it failed before
        any use)."""
        used, reserved = self.used + actual - amount, self.reserved - amount
        # max(x, 0.0) spelt out, here and on the call path: the builtin costs several times more
        self.used = 0.0 if used < 0.0 else used
        self.reserved = 0.0 if reserved < 0.0 else reserved


# What a call holds of one limit: the window it is counted in, the amount it reserved there,
# and the period (None: calls in flight). A plain tuple: one is made per limit and call.
Held = tuple[Limit, Window, float, Period | None]


def check(held: list[Held]) -> tuple[list[float], int | None]:
    """Each counter's count before the call, and the first limit it would exceed (None:
    none)."""
    used: list[float] = []
    refusing = None
    for index, (limit, window, amount, _) in enumerate(held):
        value = window.used
        used.append(value)
        if refusing is None and not value + amount <= limit.value + SLACK:
            refusing = index
    return used, refusing


def reserve(held: list[Held]) -> None:
    for limit, window, amount, _ in held:
        window.used += amount
        if limit.kind != REQUESTS:  # a request is spent when made; the rest settle later
            window.reserved += amount


class LocalCounts:
    """Every counter of this daemon, by (scope key, kind), in its current window."""

    def __init__(self) -> None:
        self._windows: dict[tuple[str, str], Window] = {}

    def window(self, counter: tuple[str, str], period: Period | None) -> Window:
        """The counter's window in `period` (from zero when the period is new)."""
        name = period.name if period is not None else ""
        window = self._windows.get(counter)
        if window is None or window.period != name:
            window = self._windows[counter] = Window(name)
        return window

    def seed(self, counter: tuple[str, str], period: Period, spent: float) -> None:
        """Spend rebuilt from the usage ledger at start."""
        self.window(counter, period).used += spent

    def peek(self, counter: tuple[str, str], period: Period | None) -> tuple[float, float]:
        """(used, reserved) of a counter now, without starting one."""
        window = self._windows.get(counter)
        name = period.name if period is not None else ""
        if window is None or window.period != name:
            return 0.0, 0.0
        return window.used, window.reserved
