"""The usage ledger: every CallRecord kept in a local SQLite file (WAL mode), written in
batches so that a request never waits on the disk, and read back as daily totals, as one
request, or as what a client spent.

- `add` appends to a pending queue on the event loop (O(1)); past `max_pending` a record is
  dropped and counted.
- A background task swaps that queue out every `flush_seconds`, or as soon as `batch` records
  wait, and hands it to the ledger's one worker thread, which makes the rows, inserts them and
  adds them to the daily sums in one transaction; at most once an hour (by the injected clock)
  that transaction also deletes what retention lets go.
- The connection is only ever used in that thread (a ThreadPoolExecutor of one worker; reads
  queue there too, after the writes before them). The loop's share of a write is a swap and a
  hand-off. In the worker, SQLite gives up the GIL at every statement step; rows are made one
  at a time as SQLite asks for them, and each record is freed as its row is made (freeing
  10,000 at once held the GIL for 3 to 6 ms); a short sleep every YIELD_EVERY_ROWS rows lets
  the loop's thread in (bench/ledger_stall.py measures the loop's stalls meanwhile).
- Nothing here raises into a request: a directory that cannot be made or a broken file is one
  warning (`usage.ledger_unavailable`), after which every record is dropped and counted; a
  failed write (a full or broken disk) drops that batch, counted, with a few warnings a minute
  at most.

`path=None` disables the ledger: `add` does nothing, reads find nothing.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import TypeVar

import structlog

from localrouter.base.errors import BadRequest
from localrouter.usage.ledger_file import (
    Deltas,
    Group,
    ModelSpend,
    Totals,
    open_file,
    read_bodies,
    read_page,
    read_request,
    read_spent,
    read_spent_by_model,
    read_usage,
    write,
)
from localrouter.usage.record import CallRecord
from localrouter.usage.schema import (
    GROUP_KEYS,
    day_of,
    page_query,
    totals,
)

log = structlog.get_logger(__name__)

T = TypeVar("T")

DAY_SECONDS = 86400.0
PRUNE_EVERY_SECONDS = 3600.0
WARNINGS_PER_INTERVAL = 3  # lines of one warning event per interval; the rest are counted
WARNING_INTERVAL_SECONDS = 60.0

_NO_SUMS = totals((0, 0, 0, 0, 0, 0, 0, 0.0, 0))
_FIRST_DAY, _LAST_DAY = "0000-00-00", "9999-99-99"


class _Throttled:
    """One warning event, logged at most WARNINGS_PER_INTERVAL times per interval; the lines
    held back are counted, and the count rides on the next line logged (`held_back`)."""

    def __init__(self, event: str, clock: Callable[[], float]) -> None:
        self._event = event
        self._clock = clock
        self._started = float("-inf")
        self._shown = 0
        self._held_back = 0

    def warn(self, **fields: object) -> None:
        now = self._clock()
        # A clock set back starts a new interval rather than silencing the warning for long.
        if not 0 <= now - self._started < WARNING_INTERVAL_SECONDS:
            self._started, self._shown = now, 0
        if self._shown >= WARNINGS_PER_INTERVAL:
            self._held_back += 1
            return
        self._shown += 1
        log.warning(self._event, held_back=self._held_back, **fields)
        self._held_back = 0


class Ledger:
    """The usage ledger at `path` (None: disabled). `start` opens it, `add` records a call,
    `close` writes what is left; `written` and `dropped` count records. `on_rollup`, when set,
    is called on the loop after each write with the daily sums that write added (Deltas)."""

    def __init__(
        self,
        path: Path | None,
        *,
        clock: Callable[[], float] = time.time,
        retention_days: int = 90,
        daily_retention_days: int = 400,
        body_retention_days: float = 7.0,
        max_pending: int = 100_000,
        batch: int = 500,
        flush_seconds: float = 1.0,
        on_rollup: Callable[[Deltas], None] | None = None,
    ) -> None:
        self.path = path
        self.on_rollup = on_rollup
        self.written = 0
        self.dropped = 0
        self._clock = clock
        self._retention_seconds = retention_days * DAY_SECONDS
        self._daily_retention_seconds = daily_retention_days * DAY_SECONDS
        self.body_retention_seconds = body_retention_days * DAY_SECONDS  # a reload may change it
        self._max_pending = max_pending
        self._batch = batch
        self._flush_seconds = flush_seconds
        self._pending: deque[CallRecord] = deque()
        self._accepting = path is not None  # False once unavailable or closed: add drops
        self._closed = False
        self._executor: ThreadPoolExecutor | None = None
        self._connection: sqlite3.Connection | None = None
        self._writer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()
        self._last_prune: float | None = None
        self._write_failures = _Throttled("usage.ledger_write_failed", clock)
        self._overflows = _Throttled("usage.ledger_overflow", clock)
        self._hook_failures = _Throttled("usage.rollup_hook_failed", clock)

    @property
    def enabled(self) -> bool:
        return self.path is not None

    @property
    def available(self) -> bool:
        """Whether the database is open (records are being kept)."""
        return self._connection is not None

    async def start(self) -> None:
        """Open (create, migrate) the database in the worker thread and start the writer. A
        failure is logged once and leaves the ledger dropping records; it never raises."""
        if self.path is None or self._executor is not None or self._closed:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="localrouter-usage")
        try:
            self._connection = await self._executor_run(open_file, self.path)
        except Exception as exc:
            self._unavailable(str(exc) or type(exc).__name__)
            return
        self._writer = asyncio.create_task(self._write_in_background(), name="usage-ledger")

    def add(self, record: CallRecord) -> None:
        """Keep `record` (written within `flush_seconds`). The ledger owns it from now on: it is
        read in the worker thread, so it must not change any more."""
        if not self._accepting:
            if self.path is not None:
                self.dropped += 1
            return
        if len(self._pending) >= self._max_pending:
            self.dropped += 1
            self._overflows.warn(
                path=str(self.path), max_pending=self._max_pending, dropped=self.dropped
            )
            return
        self._pending.append(record)
        if len(self._pending) == self._batch:
            self._wake.set()

    async def flush(self) -> None:
        """Write every record added so far (and apply retention when an hour has passed)."""
        async with self._flushing:
            deltas = await self._write_pending()
        if deltas and self.on_rollup is not None:
            try:
                self.on_rollup(deltas)
            except Exception as exc:
                self._hook_failures.warn(error=repr(exc))

    async def close(self) -> None:
        """Stop the writer, write what is pending and close the database. Records added from
        now on are dropped and counted."""
        if self._closed:
            return
        self._closed = True
        self._accepting = False
        if self._writer is not None:
            self._wake.set()
            await self._writer
            self._writer = None
        await self.flush()
        self.dropped += len(self._pending)  # added before a start that never came
        self._pending = deque()
        connection, executor = self._connection, self._executor
        self._connection = self._executor = None
        if executor is None:
            return
        if connection is not None:
            with suppress(sqlite3.Error):
                await asyncio.get_running_loop().run_in_executor(executor, connection.close)
        executor.shutdown(wait=False)

    async def usage(
        self, since: float | None = None, until: float | None = None, group_by: Sequence[str] = ()
    ) -> list[Group]:
        """The daily sums, one row per group of `group_by` (any of GROUP_KEYS; none: one row of
        totals), sorted by those keys: the group's keys (a missing client, model or instance
        as None), SUMS and `cache_read_share`. `since` and `until` select the whole UTC days
        that contain them. Raises BadRequest for an unknown key."""
        keys = _group_keys(group_by)
        first = _FIRST_DAY if since is None else day_of(since)
        last = _LAST_DAY if until is None else day_of(until)
        return await self._read(read_usage, [], keys, first, last)

    async def generation(self, request_id: str) -> dict[str, object] | None:
        """One request's row (every CallRecord field, tokens flattened, enums as strings), or
        None when it is not kept (never written, or past retention)."""
        return await self._read(read_request, None, request_id)

    async def spent(self, client: str | None, since: float) -> Totals:
        """SUMS (and `cache_read_share`) of `client`'s requests started at or after `since`,
        from the per-request rows (so within `retention_days`). client None: the requests made
        with no client name (the admin's, or anyone's on an open daemon)."""
        return await self._read(read_spent, dict(_NO_SUMS), client, since)

    async def bodies(self, request_id: str) -> dict[str, object] | None:
        """The request log's bodies of one request (BODY_COLUMNS, as stored), or None."""
        return await self._read(read_bodies, None, request_id)

    async def page(
        self,
        before: tuple[float, str] | None,
        since: float | None,
        filters: dict[str, object],
        failed: bool,
        limit: int,
    ) -> list[dict[str, object]]:
        """The request log's rows, newest first: those before `before` (a row's started_at
        and id, the cursor), started at or after `since`, narrowed by `filters` (PAGE_FILTERS'
        keys), only the failed ones if `failed`; at most `limit`."""
        sql, parameters = page_query(filters, failed)
        start, after = before if before is not None else (float("inf"), "")
        cursor: list[object] = [start, start, after if before is not None else "\U0010ffff"]
        arguments = [*cursor, since if since is not None else float("-inf"), *parameters, limit]
        return await self._read(read_page, [], sql, arguments)

    async def spent_by_model(self, since: float, later: float) -> list[ModelSpend]:
        """Each client's priced spend (client, model asked for, model that answered, since
        `since`, since `later`), from the per-request rows: what the limits' budgets are
        rebuilt from at start."""
        return await self._read(read_spent_by_model, [], later, since)

    async def _write_pending(self) -> Deltas:
        connection = self._connection
        if connection is None:
            return []  # not started yet (records wait), or unavailable (nothing pends)
        now = self._clock()
        cutoffs = self._cutoffs(now)
        records, self._pending = self._pending, deque()
        count = len(records)
        if not count and cutoffs is None:
            return []
        try:
            deltas = await self._executor_run(
                write, connection, records, cutoffs, self.on_rollup is not None
            )
        except Exception as exc:
            self.dropped += count
            self._write_failures.warn(
                path=str(self.path), reason=str(exc), records=count, dropped=self.dropped
            )
            return []
        self.written += count
        if cutoffs is not None:
            self._last_prune = now
        return deltas

    def _cutoffs(self, now: float) -> tuple[float, str, float] | None:
        """When retention is due: the oldest start time, the oldest day and the oldest body
        start time kept."""
        if self._last_prune is not None and 0 <= now - self._last_prune < PRUNE_EVERY_SECONDS:
            return None
        return (
            now - self._retention_seconds,
            day_of(now - self._daily_retention_seconds),
            now - self.body_retention_seconds,
        )

    def _unavailable(self, reason: str) -> None:
        log.warning(
            "usage.ledger_unavailable",
            path=str(self.path),
            reason=reason,
            effect="usage records are dropped and counted until the daemon restarts",
        )
        self._accepting = False
        self.dropped += len(self._pending)
        self._pending = deque()
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    async def _write_in_background(self) -> None:
        while not self._closed:
            with suppress(TimeoutError):
                async with asyncio.timeout(self._flush_seconds):
                    await self._wake.wait()
            self._wake.clear()
            await self.flush()

    async def _read(self, read: Callable[..., T], otherwise: T, *arguments: object) -> T:
        connection = self._connection
        if connection is None:
            return otherwise
        return await self._executor_run(read, connection, *arguments)

    async def _executor_run(self, function: Callable[..., T], *arguments: object) -> T:
        if self._executor is None:
            raise RuntimeError("the usage ledger is not open")
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, function, *arguments
        )


def _group_keys(group_by: Sequence[str]) -> tuple[str, ...]:
    keys = tuple(dict.fromkeys([group_by] if isinstance(group_by, str) else group_by))
    if unknown := [key for key in keys if key not in GROUP_KEYS]:
        raise BadRequest(
            f"group_by: unknown {', '.join(map(repr, unknown))}; "
            f"use any of {', '.join(GROUP_KEYS)}",
            param="group_by",
        )
    return keys
