"""Whole-answer deadlines of the calls in flight, kept by one timer set for the earliest.

A timer per call (asyncio.timeout, or loop.call_later) costs a handle to make, a heap entry and
a cancellation on every proxied request, and the cancelled handles stay queued until they would
have fired. Here a call is a dict entry: `start` notes when its task must be cancelled, `end`
forgets it and says whether that happened. The timer fires at the earliest deadline, cancels
every task whose time has come, and is set again for the next one.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

Task = asyncio.Task[Any]


class Deadlines:
    __slots__ = ("_at", "_due", "_expired", "_timer")

    def __init__(self) -> None:
        self._due: dict[Task, float] = {}
        self._expired: set[Task] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._at = math.inf  # when the timer fires

    def __len__(self) -> int:
        return len(self._due)

    def start(self, task: Task, seconds: float) -> None:
        """Cancel `task` once `seconds` pass, unless `end` comes first."""
        loop = task.get_loop()
        due = loop.time() + seconds
        self._due[task] = due
        if due < self._at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_at(due, self._sweep, loop)
            self._at = due

    def end(self, task: Task) -> bool:
        """Stop watching `task`; whether its deadline passed and it was cancelled for it."""
        del self._due[task]
        if self._expired and task in self._expired:
            self._expired.discard(task)
            return True
        return False

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer, self._at = None, math.inf
        now = loop.time()
        for task, due in list(self._due.items()):
            if due <= now and task not in self._expired:
                self._expired.add(task)
                task.cancel()
        waiting = [due for task, due in self._due.items() if task not in self._expired]
        if waiting:
            self._at = min(waiting)
            self._timer = loop.call_at(self._at, self._sweep, loop)
