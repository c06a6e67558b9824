"""The usage ledger's SQLite schema: its migrations, and how a CallRecord maps to its rows.

Two tables:
- `requests`: one row per CallRecord, every field, the tokens flattened into their own
  columns, the enums as their string values, booleans as 0/1. Kept `retention_days`.
- `daily`: the sums of those rows per (day, client, model, instance, route), `day` being the
  UTC date (YYYY-MM-DD) of `started_at`. A missing client, model or instance is stored as ''
  (a UNIQUE key counts NULLs as distinct) and read back as None. Kept `daily_retention_days`,
  so totals outlive the per-request rows.

A request counts as `failed` when it was cancelled or did not end with a 2xx or 3xx status
(status 0, no answer at all, is a failure). `cost_usd` sums the known costs;
`unpriced_requests` counts the records with cost_source 'unpriced', so a total says when it
is partial.

The schema's version is SQLite's `PRAGMA user_version`: the number of MIGRATIONS applied.
A migration is never edited once released; a change is a new one appended to the list.
"""

from __future__ import annotations

import sqlite3
import time
from collections import deque
from collections.abc import Iterator

from localrouter.usage.record import CallRecord

# What a migration runs, in one transaction with the version bump.
Migration = tuple[str, ...]

_REQUESTS_V1 = """
CREATE TABLE requests (
    id TEXT PRIMARY KEY,
    started_at REAL NOT NULL,
    route TEXT NOT NULL,
    client TEXT,
    requested_model TEXT,
    stream INTEGER NOT NULL,
    session TEXT,
    model TEXT,
    instance TEXT,
    provider_type TEXT,
    key_position INTEGER,
    attempts INTEGER NOT NULL,
    status INTEGER NOT NULL,
    error_type TEXT,
    cancelled INTEGER NOT NULL,
    duration_ms REAL NOT NULL,
    ttft_ms REAL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cache_read_tokens INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    usage_source TEXT NOT NULL,
    cost_usd REAL,
    cost_source TEXT NOT NULL
)"""

_DAILY_V2 = """
CREATE TABLE daily (
    day TEXT NOT NULL,
    client TEXT NOT NULL,
    model TEXT NOT NULL,
    instance TEXT NOT NULL,
    route TEXT NOT NULL,
    requests INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cache_read_tokens INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    unpriced_requests INTEGER NOT NULL,
    PRIMARY KEY (day, client, model, instance, route)
) WITHOUT ROWID"""

# The sums over `requests` rows, in SUMS' order: the one SQL statement of the rules above
# (the Python side is `Rollup.add`).
_REQUEST_SUMS_SQL = """
    count(*),
    coalesce(sum(cancelled OR status < 200 OR status >= 400), 0),
    coalesce(sum(input_tokens), 0),
    coalesce(sum(output_tokens), 0),
    coalesce(sum(cache_read_tokens), 0),
    coalesce(sum(cache_write_tokens), 0),
    coalesce(sum(reasoning_tokens), 0),
    total(cost_usd),
    coalesce(sum(cost_source = 'unpriced'), 0)"""

MIGRATIONS: tuple[Migration, ...] = (
    # 1: the per-request log.
    (
        _REQUESTS_V1,
        "CREATE INDEX requests_by_started_at ON requests (started_at)",
        "CREATE INDEX requests_by_client ON requests (client, started_at)",
    ),
    # 2: the daily rollup, filled from the requests already kept.
    (
        _DAILY_V2,
        "INSERT INTO daily SELECT strftime('%Y-%m-%d', started_at, 'unixepoch'), "
        "coalesce(client, ''), coalesce(model, ''), coalesce(instance, ''), route, "
        f"{_REQUEST_SUMS_SQL} FROM requests GROUP BY 1, 2, 3, 4, 5",
    ),
    # 3: the request log's metadata: what the upstream answered, the error, the path taken.
    (
        "ALTER TABLE requests ADD COLUMN upstream_status INTEGER",
        "ALTER TABLE requests ADD COLUMN error TEXT",
        "ALTER TABLE requests ADD COLUMN path TEXT",
    ),
    # 4: the request log's bodies (request_log.bodies), kept for fewer days than the rows.
    (
        """CREATE TABLE bodies (
            id TEXT PRIMARY KEY,
            started_at REAL NOT NULL,
            request BLOB,
            request_truncated INTEGER NOT NULL,
            headers BLOB,
            response BLOB,
            response_truncated INTEGER NOT NULL,
            response_kind TEXT
        )""",
        "CREATE INDEX bodies_by_started_at ON bodies (started_at)",
    ),
)
VERSION = len(MIGRATIONS)

GROUP_KEYS = ("day", "client", "model", "instance", "route")  # the daily table's key, in order
SUMS = (
    "requests",
    "failed",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_usd",
    "unpriced_requests",
)
_COST = SUMS.index("cost_usd")
COST_DECIMALS = 10  # sums of float prices carry noise in the 16th digit; JSON would show it

REQUEST_COLUMNS = (
    "id",
    "started_at",
    "route",
    "client",
    "requested_model",
    "stream",
    "session",
    "model",
    "instance",
    "provider_type",
    "key_position",
    "attempts",
    "status",
    "error_type",
    "cancelled",
    "duration_ms",
    "ttft_ms",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "usage_source",
    "cost_usd",
    "cost_source",
    "upstream_status",
    "error",
    "path",
)
_BOOLEAN_COLUMNS = ("stream", "cancelled")

# A repeated id (a client may send its own X-Request-Id) replaces the earlier row rather than
# failing the whole batch; the daily sums count both.
INSERT_REQUEST = (
    f"INSERT OR REPLACE INTO requests ({', '.join(REQUEST_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in REQUEST_COLUMNS)})"
)
ADD_TO_DAILY = (
    f"INSERT INTO daily ({', '.join(GROUP_KEYS + SUMS)}) "
    f"VALUES ({', '.join('?' for _ in GROUP_KEYS + SUMS)}) "
    f"ON CONFLICT ({', '.join(GROUP_KEYS)}) DO UPDATE SET "
    + ", ".join(f"{name} = {name} + excluded.{name}" for name in SUMS)
)
DELETE_REQUESTS_BEFORE = "DELETE FROM requests WHERE started_at < ?"
DELETE_BODIES_BEFORE = "DELETE FROM bodies WHERE started_at < ?"
BODY_COLUMNS = (
    "request",
    "request_truncated",
    "headers",
    "response",
    "response_truncated",
    "response_kind",
)
INSERT_BODIES = (
    f"INSERT OR REPLACE INTO bodies (id, started_at, {', '.join(BODY_COLUMNS)}) "
    f"VALUES (?, ?, {', '.join('?' for _ in BODY_COLUMNS)})"
)
SELECT_BODIES = f"SELECT {', '.join(BODY_COLUMNS)} FROM bodies WHERE id = ?"
DELETE_DAILY_BEFORE = "DELETE FROM daily WHERE day < ?"
SELECT_REQUEST = f"SELECT {', '.join(REQUEST_COLUMNS)} FROM requests WHERE id = ?"
SELECT_SPENT = f"SELECT {_REQUEST_SUMS_SQL} FROM requests WHERE started_at >= ? AND client IS ?"
# Each client's priced spend per model asked for and answering, since a time, and the part
# of it since a later one (for the limits' daily and monthly budgets).
SELECT_SPENT_BY_MODEL = (
    "SELECT client, requested_model, model, sum(cost_usd), "
    "coalesce(sum(CASE WHEN started_at >= ? THEN cost_usd END), 0) FROM requests "
    "WHERE started_at >= ? AND cost_usd IS NOT NULL GROUP BY client, requested_model, model"
)


def usage_query(keys: tuple[str, ...]) -> str:
    """The daily sums per group of `keys` (each one of GROUP_KEYS), for days in [?, ?]."""
    sums = ", ".join(f"coalesce(sum({name}), 0)" for name in SUMS)
    if not keys:
        return f"SELECT {sums} FROM daily WHERE day >= ? AND day <= ?"
    grouped = ", ".join(keys)
    return (
        f"SELECT {grouped}, {sums} FROM daily WHERE day >= ? AND day <= ? "
        f"GROUP BY {grouped} ORDER BY {grouped}"
    )


def day_of(timestamp: float) -> str:
    """The UTC date of a unix time, as the daily table keys it."""
    return time.strftime("%Y-%m-%d", time.gmtime(timestamp))


def migrate(connection: sqlite3.Connection) -> None:
    """Bring the database to VERSION, one migration a transaction. A database made by a newer
    localrouter is refused (sqlite3.DatabaseError) rather than written in a shape it does not
    expect."""
    (found,) = connection.execute("PRAGMA user_version").fetchone()
    if found > VERSION:
        raise sqlite3.DatabaseError(
            f"schema version {found} was made by a newer localrouter (this one knows {VERSION})"
        )
    for version in range(found + 1, VERSION + 1):
        connection.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[version - 1]:
                connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {version}")
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise


class Rollup:
    """The daily sums a batch of records adds, per (day, client, model, instance, route) with
    '' for a missing key; filled while the batch's rows are made (`rows`)."""

    def __init__(self) -> None:
        self.groups: dict[tuple[str, ...], list[float]] = {}
        self.bodies: list[tuple[object, ...]] = []  # the request log's, INSERT_BODIES' rows
        self.bodies_failed = 0
        self._days: dict[int, str] = {}  # day number -> date: strftime once a day, not a record

    def rows(self, records: deque[CallRecord]) -> Iterator[tuple[object, ...]]:
        """Each record's `requests` row (in REQUEST_COLUMNS' order), adding it to the sums.
        Takes the records out of `records`, first to last, so each is let go once its row is
        made."""
        while records:
            record = records.popleft()
            self.add(record)
            if record.bodies is not None:
                try:
                    self.bodies.append((record.id, record.started_at, *record.bodies.row()))
                except Exception:  # the bodies are lost, never the record with them
                    self.bodies_failed += 1
            yield row_of(record)

    def add(self, record: CallRecord) -> None:
        number = int(record.started_at // 86400)
        day = self._days.get(number)
        if day is None:
            day = self._days[number] = day_of(record.started_at)
        key = (day, record.client or "", record.model or "", record.instance or "", record.route)
        sums = self.groups.get(key)
        if sums is None:
            sums = self.groups[key] = [0, 0, 0, 0, 0, 0, 0, 0.0, 0]
        tokens = record.tokens
        sums[0] += 1
        sums[1] += record.cancelled or not 200 <= record.status < 400
        sums[2] += tokens.input_tokens
        sums[3] += tokens.output_tokens
        sums[4] += tokens.cache_read_tokens
        sums[5] += tokens.cache_write_tokens
        sums[6] += tokens.reasoning_tokens
        sums[7] += record.cost_usd or 0.0
        sums[8] += str(record.cost_source) == "unpriced"

    def daily_rows(self) -> list[tuple[object, ...]]:
        """The upsert parameters for ADD_TO_DAILY."""
        return [(*key, *sums) for key, sums in self.groups.items()]

    def deltas(self) -> list[tuple[tuple[str, ...], dict[str, float]]]:
        """Each group's key and the sums this batch added to it, by name."""
        return [(key, dict(zip(SUMS, sums, strict=True))) for key, sums in self.groups.items()]


def totals(row: tuple[float, ...]) -> dict[str, float | None]:
    """SUMS by name from a row of them, cost rounded, plus `cache_read_share` (the share of
    input tokens read from a cache; None without input tokens)."""
    named: dict[str, float | None] = dict(zip(SUMS, row, strict=True))
    named["cost_usd"] = round(row[_COST], COST_DECIMALS)
    input_tokens, cache_read = row[SUMS.index("input_tokens")], row[SUMS.index("cache_read_tokens")]
    named["cache_read_share"] = round(cache_read / input_tokens, 6) if input_tokens else None
    return named


def row_of(record: CallRecord) -> tuple[object, ...]:
    """A record's `requests` row, in REQUEST_COLUMNS' order."""
    tokens = record.tokens
    return (
        record.id,
        record.started_at,
        record.route,
        record.client,
        record.requested_model,
        int(record.stream),
        record.session,
        record.model,
        record.instance,
        record.provider_type,
        record.key_position,
        record.attempts,
        record.status,
        record.error_type,
        int(record.cancelled),
        record.duration_ms,
        record.ttft_ms,
        tokens.input_tokens,
        tokens.output_tokens,
        tokens.cache_read_tokens,
        tokens.cache_write_tokens,
        tokens.reasoning_tokens,
        str(record.usage_source),
        record.cost_usd,
        str(record.cost_source),
        record.upstream_status,
        record.error,
        record.path,
    )


# What a page of the request log may be narrowed by: the query's name, its SQL condition.
PAGE_FILTERS = {
    "client": "client = ?",
    "model": "(model = ? OR requested_model = ?)",
    "instance": "instance = ?",
    "route": "route = ?",
    "status": "status = ?",
}
FAILED = "(cancelled OR status < 200 OR status >= 400)"


def page_query(filters: dict[str, object], failed: bool) -> tuple[str, list[object]]:
    """The newest requests first, older than a cursor (started_at, id) and started since a
    time, narrowed by `filters` (PAGE_FILTERS' keys), only the failed ones if `failed`; the
    parameters after (cursor start, cursor start, cursor id, since): then the limit."""
    conditions = ["(started_at < ? OR (started_at = ? AND id < ?))", "started_at >= ?"]
    parameters: list[object] = []
    for name, value in filters.items():
        conditions.append(PAGE_FILTERS[name])
        parameters += [value, value] if name == "model" else [value]
    if failed:
        conditions.append(FAILED)
    sql = (
        f"SELECT {', '.join(REQUEST_COLUMNS)} FROM requests WHERE {' AND '.join(conditions)} "
        "ORDER BY started_at DESC, id DESC LIMIT ?"
    )
    return sql, parameters


def request_of(row: tuple[object, ...]) -> dict[str, object]:
    """A `requests` row by column name, the booleans as booleans."""
    named = dict(zip(REQUEST_COLUMNS, row, strict=True))
    for column in _BOOLEAN_COLUMNS:
        named[column] = bool(named[column])
    return named
