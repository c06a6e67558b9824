"""What a call holds of each limit, and this daemon's own counts of them: the counts every
daemon keeps (and decides by when Redis cannot be reached), however a fleet counts."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from localrouter.limits.periods import Period, Spans
from localrouter.limits.rules import Limit, Plan

_COUNTED_KEPT = 4096  # plans whose windows are kept


class Window:
    """One counter in one period: what calls used, what calls in flight reserved. A counter
    whose period ends starts a new window; the old one, which calls in flight may still
    settle, is no longer counted."""

    __slots__ = ("period", "reserved", "used")

    def __init__(self, period: str) -> None:
        self.period = period  # its name ("": calls in flight, which have no period)
        self.used = 0.0  # settled and reserved together: what admission compares
        self.reserved = 0.0


def settle(
    windows: list[Window], amounts: tuple[float, ...], indices: Iterable[int], actual: float
) -> None:
    """The reservations at `indices` (of `amounts`, in `windows`) each replaced by what the
    call used: `actual` (0 when it failed before any use, or was refused)."""
    for index in indices:
        window, amount = windows[index], amounts[index]
        used, reserved = window.used + actual - amount, window.reserved - amount
        # max(x, 0.0) spelt out, here and on the call path: the builtin costs several times more
        window.used = 0.0 if used < 0.0 else used
        window.reserved = 0.0 if reserved < 0.0 else reserved


# What a call holds of one limit: the window it is counted in, the amount it reserved there,
# and the period (None: calls in flight); as the fleet's counts are handed it.
Held = tuple[Limit, Window, float, Period | None]


@dataclass(frozen=True, slots=True, eq=False)
class Counted:
    """Where a plan's limits count in one minute, day and month (`spans`): each one's window
    and period (None: calls in flight), by position."""

    spans: Spans
    windows: list[Window]
    periods: list[Period | None]


def take(
    plan: Plan, windows: list[Window], amounts: tuple[float, ...]
) -> tuple[int | None, list[float]]:
    """The call's amounts counted in every window up to the first limit they would exceed:
    its position (None: counted in every one; else the caller settles those before it at 0),
    and each counter's count after them."""
    after: list[float] = []
    for window, limit, amount in zip(windows, plan.limits, amounts, strict=True):
        used = window.used + amount
        if used > limit.ceiling:
            return len(after), after
        window.used = used
        after.append(used)
        if limit.reserves:  # a request is spent when made; the rest settle later
            window.reserved += amount
    return None, after


class LocalCounts:
    """Every counter of this daemon, by (scope key, kind), in its current window."""

    def __init__(self) -> None:
        self._windows: dict[tuple[str, str], Window] = {}
        self._counted: dict[Plan, Counted] = {}

    def counted(self, plan: Plan, spans: Spans) -> Counted:
        """Where `plan`'s limits count in `spans`: worked out once for each plan and spans (a
        period's window is only replaced when a new period starts)."""
        found = self._counted.get(plan)
        if found is None or found.spans is not spans:
            if found is not None or len(self._counted) >= _COUNTED_KEPT:
                self._counted.clear()  # a new period: every plan's windows are new
            minute, day, month = spans
            by_kind = (minute, minute, None, day, month)  # in rules.KINDS's order
            periods = [by_kind[code] for code in plan.codes]
            windows = [
                self.window(limit.counter, period)
                for limit, period in zip(plan.limits, periods, strict=True)
            ]
            found = self._counted[plan] = Counted(spans, windows, periods)
        return found

    def forget_plans(self) -> None:
        """A config (re)loaded: its plans are new."""
        self._counted.clear()

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
