"""The windows limits are counted in: the minute (fixed, from the clock's whole minutes),
and the day and month in `limits.timezone`."""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo
from typing import NamedTuple
from zoneinfo import ZoneInfo

MINUTE = 60.0
# How far back a clock may be set (an NTP step) and still count in the current windows; a
# larger step works them out anew for the earlier time, as a first start would.
STEP_BACK_KEPT = MINUTE


class Period(NamedTuple):
    """One window: its name (part of a counter's key) and when it ends (unix seconds)."""

    name: str
    ends: float


class Spans(NamedTuple):
    minute: Period
    day: Period
    month: Period


class Periods:
    """The minute, day and month that a time falls in; each is worked out once and kept until
    it ends."""

    def __init__(self, timezone: str) -> None:
        self.timezone = timezone
        self._zone: tzinfo | None = None if timezone == "local" else ZoneInfo(timezone)
        self._minute = Period("", 0.0)
        self._minute_starts = 0.0
        self._day = Period("", 0.0)
        self._day_starts = 0.0
        self._month = Period("", 0.0)
        self._month_starts = 0.0
        self._spans = Spans(self._minute, self._day, self._month)
        self._spans_start = self._spans_end = 0.0

    def spans(self, now: float) -> Spans:
        """The minute, day and month of `now`: the same tuple until one of them ends. A clock
        set back by up to STEP_BACK_KEPT (an NTP step) stays in the current ones, which keep
        their counts: going back to an earlier period would open it afresh."""
        if not self._spans_start - STEP_BACK_KEPT <= now < self._spans_end:
            minute, day, month = self.minute(now), self.day(now), self.month(now)
            self._spans = Spans(minute, day, month)
            self._spans_start = max(self._minute_starts, self._day_starts, self._month_starts)
            self._spans_end = min(minute.ends, day.ends, month.ends)
        return self._spans

    def minute(self, now: float) -> Period:
        if not self._minute_starts <= now < self._minute.ends:
            start = self._minute_starts = now // MINUTE * MINUTE
            self._minute = Period(str(int(start)), start + MINUTE)
        return self._minute

    def day(self, now: float) -> Period:
        if not self._day_starts <= now < self._day.ends:
            start = self._local(now).replace(hour=0, minute=0, second=0, microsecond=0)
            self._day_starts = start.timestamp()
            self._day = Period(start.date().isoformat(), (start + timedelta(days=1)).timestamp())
        return self._day

    def month(self, now: float) -> Period:
        if not self._month_starts <= now < self._month.ends:
            start = self._local(now).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            self._month_starts = start.timestamp()
            following = (start + timedelta(days=32)).replace(day=1)
            self._month = Period(start.strftime("%Y-%m"), following.timestamp())
        return self._month

    def day_starts(self, now: float) -> float:
        self.day(now)
        return self._day_starts

    def month_starts(self, now: float) -> float:
        self.month(now)
        return self._month_starts

    def shown(self, when: float) -> str:
        """A moment as the user's clock shows it, e.g. 2026-12-08 00:00 CET."""
        return self._local(when).astimezone(self._zone).strftime("%Y-%m-%d %H:%M %Z").strip()

    def _local(self, now: float) -> datetime:
        return datetime.fromtimestamp(now, self._zone)
