"""Several API keys for one instance (`providers[].api_keys`), taken in turn.

A key that is rate limited (429) rests for the upstream's Retry-After, or a backoff that doubles
with each 429 in a row; a key the upstream refuses (401, 403) is out until the config changes
(a changed instance is rebuilt, with a new pool). Keys are only ever named by position.

A rest decided here lasts at least MIN_REST_SECONDS, and no rest (another daemon's of the
fleet included) more than MAX_REST_SECONDS; one request tries each key at most once. So an
upstream that answers every key 429 with `Retry-After: 0` costs a request one call per key,
then the pool counts as exhausted (the model's fallbacks answer, or a 429).

A session (a coding agent's conversation, as protocols/session.py finds it) sticks to the key
that first served it while that key is usable, since each key has its own prompt cache
upstream; when its key rests or is refused, the session moves to another key, once, and
stays there. Requests of no session take the keys in turn."""

from __future__ import annotations

import email.utils
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any, TypeVar

from localrouter.base.errors import NoKeyFree, UpstreamError

T = TypeVar("T")

# A Retry-After below a second (0, negative, a date past) is read as none: the backoff applies.
# "Now" is never true right after a 429, and 1 s is the shortest wait the header can say.
MIN_REST_SECONDS = 1.0
FIRST_BACKOFF_SECONDS = MIN_REST_SECONDS
MAX_BACKOFF_SECONDS = 60.0
MAX_REST_SECONDS = 3600.0  # a longer Retry-After, or a rest heard from the fleet, is an hour
REFUSED = (401, 403)
RATE_LIMITED = 429
MAX_SESSIONS = 4096  # sessions remembered per pool, the least recent forgotten first


@dataclass(slots=True)
class KeyState:
    """One key's standing; shared with the other daemons of a fleet (fleet.py)."""

    resting_until: float = 0.0
    limited_in_a_row: int = 0
    refused_with: int | None = None  # the status that put it out


class KeyPool:
    """Round-robin over an instance's keys, skipping resting and refused ones."""

    def __init__(self, instance: str, size: int, clock: Callable[[], float]) -> None:
        self.instance = instance
        self._clock = clock
        self._keys = [KeyState() for _ in range(size)]
        self._next = 0
        self._sessions: OrderedDict[str, int] = OrderedDict()  # session -> its key
        # Told of every rest and refusal decided here (a fleet shares them); not of those told.
        self.on_change: Callable[[int, KeyState], None] | None = None

    def name(self, index: int) -> str:
        return f"{self.instance} key #{index + 1}"

    def pick(self, spent: Collection[int] = (), session: str | None = None) -> int:
        """The next usable key's index, other than the `spent` ones (those that turned the
        same request away already); the session's own key while it is usable; NoKeyFree if
        there is none."""
        if session is None:
            return self._in_turn(spent)
        sessions = self._sessions
        stuck = sessions.get(session)
        if stuck is not None and self._usable(stuck, spent):
            sessions.move_to_end(session)
            return stuck
        index = self._in_turn(spent)
        sessions[session] = index  # its first key, or the one it moves to
        sessions.move_to_end(session)
        if len(sessions) > MAX_SESSIONS:
            sessions.popitem(last=False)
        return index

    def _usable(self, index: int, spent: Collection[int]) -> bool:
        key = self._keys[index]
        return (
            key.refused_with is None and key.resting_until <= self._clock() and (index not in spent)
        )

    def _in_turn(self, spent: Collection[int]) -> int:
        keys, now, size = self._keys, self._clock(), len(self._keys)
        for step in range(size):
            index = (self._next + step) % size
            key = keys[index]
            if key.refused_with is None and key.resting_until <= now and index not in spent:
                self._next = index + 1
                return index
        waits = [key.resting_until - now for key in keys if key.refused_with is None]
        raise NoKeyFree(max(min(waits), 0.0) if waits else None)

    def any_usable(self, spent: Collection[int] = ()) -> bool:
        now = self._clock()
        return any(
            key.refused_with is None and key.resting_until <= now and index not in spent
            for index, key in enumerate(self._keys)
        )

    def answered(self, index: int, status: int, retry_after: str | None) -> bool:
        """What the upstream said to a request made with key `index`; whether it was about
        the key (rate limited, refused), so that another key may fare better."""
        key = self._keys[index]
        if status == RATE_LIMITED:
            rest = seconds_to_wait(retry_after, self._clock())
            if rest is None:
                rest = min(FIRST_BACKOFF_SECONDS * 2**key.limited_in_a_row, MAX_BACKOFF_SECONDS)
            key.limited_in_a_row += 1
            key.resting_until = self._clock() + rest
            self._changed(index)
            return True
        if status in REFUSED:
            key.refused_with = status
            self._changed(index)
            return True
        if status < 400:
            key.limited_in_a_row = 0
        return False

    def told(self, index: int, resting_until: float, refused_with: int | None) -> None:
        """Another daemon's word on key `index`: it rests until then (at most
        MAX_REST_SECONDS from now), or was refused."""
        key = self._keys[index]
        until = min(resting_until, self._clock() + MAX_REST_SECONDS)
        key.resting_until = max(key.resting_until, until)
        if refused_with is not None and key.refused_with is None:
            key.refused_with = refused_with

    def _changed(self, index: int) -> None:
        if self.on_change is not None:
            self.on_change(index, self._keys[index])

    def status(self) -> list[dict[str, Any]]:
        """Each key by position: ok, resting (and for how long) or refused (and how)."""
        now, shown = self._clock(), []
        for index, key in enumerate(self._keys):
            entry: dict[str, Any] = {"key": self.name(index), "state": "ok"}
            if key.refused_with is not None:
                entry.update(state="refused", status=key.refused_with)
            elif key.resting_until > now:
                entry.update(state="resting", seconds_left=round(key.resting_until - now, 1))
            shown.append(entry)
        return shown

    def refused(self) -> list[str]:
        """Why keys are out, one line each (for /health)."""
        return [
            f"{self.name(index)} was refused (HTTP {key.refused_with}); fix it in the config"
            for index, key in enumerate(self._keys)
            if key.refused_with is not None
        ]


def seconds_to_wait(retry_after: str | None, now: float) -> float | None:
    """A Retry-After header (seconds, or an HTTP date) as seconds from `now`, capped; None
    when absent, unreadable or under MIN_REST_SECONDS."""
    if retry_after is None:
        return None
    text = retry_after.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - now
    if not seconds >= MIN_REST_SECONDS:  # NaN too
        return None
    return min(seconds, MAX_REST_SECONDS)


async def first_that_works(pool: KeyPool, attempt: Callable[[int], Awaitable[T]]) -> T:
    """`attempt(key index)` with each usable key in turn, each at most once, until one is
    neither rate limited nor refused (a model-list fetch; proxied calls do the same in
    attempts.py). The upstream's error when every key failed, or UpstreamError if none was
    usable."""
    spent: set[int] = set()
    while True:
        try:
            index = pool.pick(spent)
        except NoKeyFree as none:
            raise UpstreamError(none.describe(pool.instance)) from None
        try:
            found = await attempt(index)
        except UpstreamError as error:
            if error.status is None or not pool.answered(index, error.status, error.retry_after):
                raise
            spent.add(index)
            if not pool.any_usable(spent):
                raise
            continue
        pool.answered(index, 200, None)
        return found
