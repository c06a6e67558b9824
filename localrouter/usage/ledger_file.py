"""The usage ledger's side in its one worker thread (usage/ledger.py hands it work): the
SQLite file opened and migrated, a batch of records written in one transaction, and the reads
behind the ledger's queries, each on the thread's own connection."""

from __future__ import annotations

import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar, cast

from localrouter.usage.record import CallRecord
from localrouter.usage.schema import (
    ADD_TO_DAILY,
    BODY_COLUMNS,
    DELETE_BODIES_BEFORE,
    DELETE_DAILY_BEFORE,
    DELETE_REQUESTS_BEFORE,
    INSERT_BODIES,
    INSERT_REQUEST,
    SELECT_BODIES,
    SELECT_REQUEST,
    SELECT_SPENT,
    SELECT_SPENT_BY_MODEL,
    Rollup,
    migrate,
    request_of,
    totals,
    usage_query,
)

T = TypeVar("T")

# How long a write waits for another process's lock on the file (in the worker, not the loop).
BUSY_TIMEOUT_SECONDS = 5.0
# The worker gives up the GIL at every SQLite step, but often takes it back before the loop's
# thread has woken to take it, until the loop has waited a whole switch interval (5 ms) and
# forces the switch. A short sleep every so many rows lets the loop in at once.
YIELD_EVERY_ROWS = 64
YIELD_SECONDS = 0.0002

# Per (day, client, model, instance, route), '' for a missing key: what one flush added.
Deltas = list[tuple[tuple[str, ...], dict[str, float]]]
Totals = dict[str, float | None]
Group = dict[str, str | float | None]
# client, model asked for, model that answered, USD since a time, USD since a later one
ModelSpend = tuple[str | None, str | None, str | None, float, float]


# None binds as NULL either way; without an adapter of its own, sqlite3 (3.11) searches for
# one, failed attribute lookups included: 2k instructions for each None a row binds, six of
# them in a row. `{}.get` gives None back, in C. The registry is the process's: any other
# connection binds None as NULL, as before.
sqlite3.register_adapter(type(None), cast("Callable[[None], None]", {}.get))


def open_file(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode = WAL")
        # In WAL mode, NORMAL loses at most the last transactions on a power cut, never the
        # file, and spares an fsync per batch.
        connection.execute("PRAGMA synchronous = NORMAL")
        migrate(connection)
    except BaseException:
        connection.close()
        raise
    return connection


def write(
    connection: sqlite3.Connection,
    records: deque[CallRecord],
    cutoffs: tuple[float, str, float] | None,
    with_deltas: bool,
) -> Deltas:
    """One transaction: `records` inserted (each taken out of the deque as its row is made,
    so that they are freed one by one, between SQLite's steps, and not in one long cascade),
    the daily sums added, and retention applied when `cutoffs` say it is due."""
    rollup = Rollup()
    try:
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.executemany(INSERT_REQUEST, _yielding(rollup.rows(records)))
            connection.executemany(ADD_TO_DAILY, rollup.daily_rows())
            if rollup.bodies:
                connection.executemany(INSERT_BODIES, rollup.bodies)
            if cutoffs is not None:
                oldest_start, oldest_day, oldest_body = cutoffs
                connection.execute(DELETE_REQUESTS_BEFORE, (oldest_start,))
                connection.execute(DELETE_DAILY_BEFORE, (oldest_day,))
                connection.execute(DELETE_BODIES_BEFORE, (oldest_body,))
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
    finally:
        _let_go(records)
    return rollup.deltas() if with_deltas else []


def _let_go(records: deque[CallRecord]) -> None:
    """Free what a failed write left, with the GIL given up between slices: one clear() of
    10,000 records holds it for milliseconds."""
    while records:
        for _ in range(min(YIELD_EVERY_ROWS, len(records))):
            records.pop()
        time.sleep(YIELD_SECONDS)


def _yielding(rows: Iterator[T]) -> Iterator[T]:
    """`rows`, with a short sleep every YIELD_EVERY_ROWS (see YIELD_EVERY_ROWS)."""
    for index, row in enumerate(rows, start=1):
        if not index % YIELD_EVERY_ROWS:
            time.sleep(YIELD_SECONDS)
        yield row


def read_usage(
    connection: sqlite3.Connection, keys: tuple[str, ...], first: str, last: str
) -> list[Group]:
    groups: list[Group] = []
    for row in connection.execute(usage_query(keys), (first, last)):
        group: Group = {key: value or None for key, value in zip(keys, row, strict=False)}
        group.update(totals(row[len(keys) :]))
        groups.append(group)
    return groups


def read_request(connection: sqlite3.Connection, request_id: str) -> dict[str, object] | None:
    row = connection.execute(SELECT_REQUEST, (request_id,)).fetchone()
    return None if row is None else request_of(row)


def read_bodies(connection: sqlite3.Connection, request_id: str) -> dict[str, object] | None:
    row = connection.execute(SELECT_BODIES, (request_id,)).fetchone()
    return None if row is None else dict(zip(BODY_COLUMNS, row, strict=True))


def read_page(
    connection: sqlite3.Connection, sql: str, arguments: list[object]
) -> list[dict[str, object]]:
    return [request_of(row) for row in connection.execute(sql, arguments)]


def read_spent_by_model(
    connection: sqlite3.Connection, later: float, since: float
) -> list[ModelSpend]:
    return [
        (client, asked, model, float(total or 0.0), float(recent or 0.0))
        for client, asked, model, total, recent in connection.execute(
            SELECT_SPENT_BY_MODEL, (later, since)
        )
    ]


def read_spent(connection: sqlite3.Connection, client: str | None, since: float) -> Totals:
    return totals(connection.execute(SELECT_SPENT, (since, client)).fetchone())
