"""Heavy work (parsing, enriching, rendering and indexing long lists) off the event loop.

Four costs stall the loop, and each is handled here:
- Python code over 100,000 models runs for seconds: in a worker thread the GIL changes hands
  every switch interval, so the loop waits milliseconds, not seconds;
- the cyclic garbage collector: once such a list exists, every full collection walks all of its
  objects while holding the GIL (measured: 30 to 310 ms a collection with a 20,000-model list).
  After a heavy build, `gc.freeze()` moves everything alive into the permanent generation,
  which the collector no longer walks. Those objects are still freed by reference counting
  when a newer list replaces them (model lists hold no cycles); a cycle frozen by chance is
  only reclaimed at exit, and freezes happen once per list change, not per request. While a
  build runs, the collector is paused too: the build's own allocations would otherwise start
  full collections half way through.
- one C call over a whole list holds the GIL throughout (measured on 100,000 items: orjson.dumps
  80 ms, sorted() 70 ms, a keyed sort 105 ms): `dumps_array_in_steps` serialises an array a slice
  at a time, and `sorted_in_steps` sorts slices, then merges them in Python.
- several busy threads starve the loop: a thread that gives up the GIL may hand it to another
  worker rather than to the loop, again and again (seen: 230 ms stalls with a render and a
  persist running at once). All heavy work therefore runs in one worker thread, in turn;
  asyncio's default executor stays free for DNS look-ups and small file reads.
"""

from __future__ import annotations

import asyncio
import gc
import heapq
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar, runtime_checkable

import orjson

V = TypeVar("V")
T = TypeVar("T")

INLINE_ITEMS = 2000  # below this, doing the work on the loop costs less than the hand-off


_STEP_ITEMS = 1000


class _CollectorPause:
    """Pauses the cyclic collector while any heavy build runs (builds may overlap)."""

    def __init__(self) -> None:
        self._builds = 0
        self._paused = False  # whether we turned the collector off (and so turn it back on)

    def __enter__(self) -> None:
        if self._builds == 0 and gc.isenabled():
            gc.disable()
            self._paused = True
        self._builds += 1

    def __exit__(self, *exc: object) -> None:
        self._builds -= 1
        if self._builds == 0 and self._paused:
            self._paused = False
            gc.freeze()
            gc.enable()


_PAUSE = _CollectorPause()

# A request allocates a few hundred container objects, all but a handful freed by reference
# counting as it ends. The count of those alive still wanders past CPython's young-generation
# threshold of 700 every few dozen calls under load, and each collection then walks the calls
# in flight to find next to nothing: 7 us of CPU a proxied call with 16 in flight, 32 us with
# 64 (measured with gc.callbacks in the daemon). At 2,000 none ran in 3,000 calls with 16 in
# flight, and they took 13 us a call with 64. What survives a young collection is walked
# again by the middle generation's, after every YOUNG_COLLECTIONS_PER_MIDDLE of them: 2, not
# CPython's 10, so that one walks at most about 6,000 objects, as before (10,000 usage records
# waiting for the ledger's writer made a 28 ms stall with 5,000 and 10; bench/loop_stall.py
# --phases ledger). A full collection still follows every ten middle ones when enough has
# survived: in a model of a backlog of records growing and draining, as many as with
# CPython's defaults, and pausing as long (17-32 ms against 27-30 ms).
YOUNG_GENERATION_THRESHOLD = 2000
YOUNG_COLLECTIONS_PER_MIDDLE = 2


def collect_young_less_often() -> None:
    """The collector's thresholds for the daemon (the oldest generation's stays as it is).
    Only for the generational collector (Python < 3.14): 3.14's incremental one already
    starts at 2,000, and reads the second threshold as how fast it scans the old objects."""
    if sys.version_info >= (3, 14):
        return
    oldest = gc.get_threshold()[2]
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, YOUNG_COLLECTIONS_PER_MIDDLE, oldest)


async def heavy(build: Callable[[], V], size: int) -> V:
    """`build()`: inline for up to INLINE_ITEMS items, else in a worker thread."""
    if size <= INLINE_ITEMS:
        return build()
    with _PAUSE:
        return await in_worker(build)


# Process-wide like asyncio's own default executor: one thread, whatever the number of loops.
_WORKER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="localrouter-heavy")


async def in_worker(function: Callable[[], V]) -> V:
    """`function()` in the one heavy-work thread."""
    return await asyncio.get_running_loop().run_in_executor(_WORKER, function)


def sorted_in_steps(
    items: Sequence[T], *, key: Callable[[T], Any] | None = None, reverse: bool = False
) -> list[T]:
    """sorted(items, key=key, reverse=reverse), stable, without one long C call."""
    if len(items) <= _STEP_ITEMS:
        return sorted(items, key=key, reverse=reverse)  # type: ignore[type-var, arg-type]
    runs = [
        sorted(items[start : start + _STEP_ITEMS], key=key, reverse=reverse)  # type: ignore[type-var, arg-type]
        for start in range(0, len(items), _STEP_ITEMS)
    ]
    return list(heapq.merge(*runs, key=key, reverse=reverse))  # type: ignore[arg-type]


def dumps_array_in_steps(
    items: Sequence[Any], *, prefix: bytes = b"", suffix: bytes = b""
) -> bytes | bytearray:
    """prefix + orjson.dumps(items) + suffix, a slice at a time (see the module docstring).

    Built in one growing buffer, never joined or copied whole: each whole copy of a 40 MB body
    (with the page faults of its fresh memory) held the GIL for tens of milliseconds."""
    if len(items) <= _STEP_ITEMS:
        return prefix + orjson.dumps(items) + suffix
    out = bytearray(prefix)
    out += b"["
    for start in range(0, len(items), _STEP_ITEMS):
        if start:
            out += b","
        out += orjson.dumps(items[start : start + _STEP_ITEMS])[1:-1]
    out += b"]"
    out += suffix
    return out


def release(value: object, *companions: object) -> None:
    """Let go of a large value in a worker thread, a slice at a time (see `dismantle`); the
    companions (what the value was derived from) are let go there too, after it.

    The caller must hold no other reference: freeing 100,000 decoded entries on the loop is one
    cascade of about 100 ms, and a cascade holds the GIL wherever it runs, so it is cut up."""
    asyncio.get_running_loop().run_in_executor(_WORKER, dismantle, value, companions)


def dismantle(value: object, companions: tuple[object, ...] = ()) -> None:
    """Empty `value`'s own containers in slices, so each slice's objects are freed apart.
    Only for values nothing else references (a replaced cache entry, a parsed list).
    `companions` are only held: their last reference goes when this returns, in this thread."""
    if isinstance(value, list):
        while value:
            del value[-_STEP_ITEMS:]
    elif isinstance(value, dict):
        keys = list(value)
        while keys:
            for key in keys[-_STEP_ITEMS:]:
                del value[key]
            del keys[-_STEP_ITEMS:]
    elif isinstance(value, Dismantlable):
        value.dismantle()


@runtime_checkable
class Dismantlable(Protocol):
    def dismantle(self) -> None: ...
