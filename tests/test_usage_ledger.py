"""The usage ledger (localrouter/usage/ledger.py) on real SQLite files: what it keeps, how it
rolls up and reads back, retention by an injected clock, migration, and what it does when the
disk is not there. Nothing sleeps: the clock is moved by hand and `flush` writes."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from localrouter.base.errors import BadRequest
from localrouter.usage.ledger import WARNING_INTERVAL_SECONDS, WARNINGS_PER_INTERVAL, Ledger
from localrouter.usage.ledger_file import Deltas
from localrouter.usage.record import CallRecord, CostSource, Tokens, UsageSource
from localrouter.usage.schema import GROUP_KEYS, SUMS, VERSION
from tests.conftest import PATIENCE_SECONDS, FakeClock

DAY = 86400.0
NOW = 1_800_000_000.0  # FakeClock's start: 2027-01-15 08:00 UTC
FIRST_DAY_ENDS = 1_800_057_600.0  # 2027-01-16 00:00 UTC
LedgerFactory = Callable[..., Ledger]


def call(request_id: str, started_at: float, **fields: Any) -> CallRecord:
    """A finished, priced chat call by alice, with `fields` changed."""
    base: dict[str, Any] = {
        "route": "/v1/chat/completions",
        "client": "alice",
        "requested_model": "m1",
        "model": "cloud/m1",
        "instance": "cloud",
        "provider_type": "openai",
        "key_position": 0,
        "attempts": 1,
        "status": 200,
        "duration_ms": 120.0,
        "tokens": Tokens(input_tokens=100, output_tokens=20),
        "usage_source": UsageSource.REPORTED,
        "cost_usd": 0.001,
        "cost_source": CostSource.CATALOG,
    }
    return CallRecord(id=request_id, started_at=started_at, **(base | fields))


def flattened(record: CallRecord) -> dict[str, object]:
    """The record as the ledger gives it back: tokens flattened, enums as strings."""
    row: dict[str, object] = {}
    for field in dataclasses.fields(record):
        if field.name == "bodies":  # the request log's, in a table of its own
            continue
        value = getattr(record, field.name)
        if isinstance(value, Tokens):
            row.update(dataclasses.asdict(value))
        elif isinstance(value, CostSource | UsageSource):
            row[field.name] = value.value
        else:
            row[field.name] = value
    return row


def expected_usage(records: Sequence[CallRecord], keys: Sequence[str]) -> list[dict[str, object]]:
    """The rules restated plainly: failed is cancelled or not 2xx/3xx; cost sums known costs."""
    groups: dict[tuple[Any, ...], list[CallRecord]] = {}
    for record in records:
        row = flattened(record)
        row["day"] = "2027-01-15" if record.started_at < FIRST_DAY_ENDS else "2027-01-16"
        groups.setdefault(tuple(row[key] for key in keys), []).append(record)
    rows = []
    for group_key in sorted(groups, key=lambda key: tuple(part or "" for part in key)):
        members = groups[group_key]
        input_tokens = sum(r.tokens.input_tokens for r in members)
        cache_read = sum(r.tokens.cache_read_tokens for r in members)
        rows.append(
            {
                **dict(zip(keys, group_key, strict=True)),
                "requests": len(members),
                "failed": sum(r.cancelled or not 200 <= r.status < 400 for r in members),
                "input_tokens": input_tokens,
                "output_tokens": sum(r.tokens.output_tokens for r in members),
                "cache_read_tokens": cache_read,
                "cache_write_tokens": sum(r.tokens.cache_write_tokens for r in members),
                "reasoning_tokens": sum(r.tokens.reasoning_tokens for r in members),
                "cost_usd": round(sum(r.cost_usd or 0.0 for r in members), 10),
                "unpriced_requests": sum(r.cost_source is CostSource.UNPRICED for r in members),
                "cache_read_share": round(cache_read / input_tokens, 6) if input_tokens else None,
            }
        )
    return rows


def mixed_records() -> list[CallRecord]:
    """Sixteen calls over two UTC days, two clients (one unnamed), two models on two
    instances, two routes; some failed, cancelled, unpriced, cached."""
    records = []
    for index in range(16):
        model = ("cloud/m1", "cloud") if index % 4 < 2 else ("local/m2", "local")
        records.append(
            call(
                f"r{index:02d}",
                NOW + (index // 8) * DAY + index,
                client="alice" if index % 2 else None,
                model=model[0],
                instance=model[1],
                route="/v1/chat/completions" if index % 3 else "/v1/messages",
                status=(200, 200, 502, 0)[index % 4],
                cancelled=index == 5,
                tokens=Tokens(
                    input_tokens=100 + index,
                    output_tokens=10 + index,
                    cache_read_tokens=index * 3,
                    cache_write_tokens=index % 5,
                    reasoning_tokens=index % 7,
                ),
                cost_usd=None if index % 5 == 0 else 0.0001 * (index + 1),
                cost_source=CostSource.UNPRICED if index % 5 == 0 else CostSource.CATALOG,
            )
        )
    return records


@pytest.fixture
async def make_ledger(tmp_path: Path, clock: FakeClock) -> AsyncIterator[LedgerFactory]:
    """Ledgers on the test's clock, which write only when the test flushes them (the
    writer's interval is longer than any test), closed at the end."""
    made: list[Ledger] = []

    def make(path: Path | None = tmp_path / "state" / "usage.sqlite3", **options: Any) -> Ledger:
        ledger = Ledger(path, clock=clock, flush_seconds=10 * PATIENCE_SECONDS, **options)
        made.append(ledger)
        return ledger

    yield make
    for ledger in made:
        await ledger.close()


async def started(ledger: Ledger) -> Ledger:
    await ledger.start()
    return ledger


# What is kept, and read back.


async def test_a_record_is_read_back_with_every_field(make_ledger: LedgerFactory) -> None:
    ledger = await started(make_ledger())
    full = call(
        "full",
        NOW,
        stream=True,
        session="s-1",
        key_position=2,
        attempts=3,
        error_type="upstream_error",
        cancelled=True,
        ttft_ms=35.5,
        tokens=Tokens(1000, 200, 600, 100, 50),
        usage_source=UsageSource.ESTIMATED,
    )
    sparse = CallRecord(id="sparse", started_at=NOW + 1, route="/api/chat")
    ledger.add(full)
    ledger.add(sparse)
    await ledger.flush()

    assert await ledger.generation("full") == flattened(full)
    assert await ledger.generation("sparse") == flattened(sparse)
    assert await ledger.generation("never") is None
    assert (ledger.written, ledger.dropped) == (2, 0)


async def test_the_file_is_in_wal_mode_at_the_current_version(
    make_ledger: LedgerFactory, tmp_path: Path
) -> None:
    await started(make_ledger())
    with sqlite3.connect(tmp_path / "state" / "usage.sqlite3") as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA user_version").fetchone() == (VERSION,)


async def test_a_repeated_id_keeps_the_latest_row_and_counts_both(
    make_ledger: LedgerFactory,
) -> None:
    ledger = await started(make_ledger())
    ledger.add(call("same", NOW, model="cloud/m1"))
    ledger.add(call("same", NOW + 1, model="cloud/m9"))
    await ledger.flush()

    row = await ledger.generation("same")
    assert row is not None
    assert row["model"] == "cloud/m9"
    [total] = await ledger.usage()
    assert total["requests"] == 2


GROUPINGS = [
    combination
    for size in (0, 1, 2, 3, 5)
    for combination in itertools.combinations(GROUP_KEYS, size)
]


@pytest.mark.parametrize("keys", GROUPINGS, ids=lambda keys: ",".join(keys) or "total")
async def test_usage_groups_by_any_keys(make_ledger: LedgerFactory, keys: tuple[str, ...]) -> None:
    ledger = await started(make_ledger())
    records = mixed_records()
    for record in records:
        ledger.add(record)
    await ledger.flush()

    assert await ledger.usage(group_by=keys) == expected_usage(records, keys)


async def test_usage_shows_the_sums_by_their_rules(make_ledger: LedgerFactory) -> None:
    ledger = await started(make_ledger())
    ledger.add(call("ok", NOW, tokens=Tokens(1000, 100, cache_read_tokens=750), cost_usd=0.1))
    ledger.add(call("refused", NOW, status=429, cost_usd=0.2))
    ledger.add(call("gone", NOW, cancelled=True, cost_usd=0.3))
    ledger.add(call("none", NOW, status=0, cost_usd=None, cost_source=CostSource.UNPRICED))
    ledger.add(call("free", NOW, client=None, cost_usd=0.0, cost_source=CostSource.FREE))
    await ledger.flush()

    rows = await ledger.usage(group_by=["client"])

    assert [row["client"] for row in rows] == [None, "alice"]
    assert (rows[0]["requests"], rows[0]["cost_usd"]) == (1, 0.0)
    assert rows[1] == {
        "client": "alice",
        "requests": 4,
        "failed": 3,  # 429, cancelled, and no answer (status 0)
        "input_tokens": 1300,
        "output_tokens": 160,
        "cache_read_tokens": 750,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
        "cost_usd": 0.6,  # not 0.6000000000000001
        "unpriced_requests": 1,
        "cache_read_share": round(750 / 1300, 6),
    }


async def test_cache_read_share_is_none_without_input(make_ledger: LedgerFactory) -> None:
    ledger = await started(make_ledger())
    ledger.add(call("empty", NOW, tokens=Tokens()))
    await ledger.flush()

    [total] = await ledger.usage()
    assert total["input_tokens"] == 0
    assert total["cache_read_share"] is None


async def test_an_empty_ledger_totals_zero(make_ledger: LedgerFactory) -> None:
    ledger = await started(make_ledger())

    assert await ledger.usage() == [dict.fromkeys(SUMS, 0) | {"cache_read_share": None}]
    assert await ledger.usage(group_by=["day"]) == []


async def test_since_and_until_select_whole_utc_days(make_ledger: LedgerFactory) -> None:
    ledger = await started(make_ledger())
    midnight = FIRST_DAY_ENDS
    for index, started_at in enumerate(
        (midnight - DAY - 1, midnight - DAY, midnight - 1, midnight, midnight + DAY - 1)
    ):
        ledger.add(call(f"r{index}", started_at))
    await ledger.flush()

    def days(rows: list[dict[str, Any]]) -> dict[str, int]:
        return {row["day"]: row["requests"] for row in rows}

    everything = await ledger.usage(group_by=["day"])
    assert days(everything) == {"2027-01-14": 1, "2027-01-15": 2, "2027-01-16": 2}
    # Any time in a day selects that whole day.
    since_noon = await ledger.usage(since=midnight - DAY / 2, group_by=["day"])
    assert days(since_noon) == {"2027-01-15": 2, "2027-01-16": 2}
    until_noon = await ledger.usage(until=midnight - DAY / 2, group_by=["day"])
    assert days(until_noon) == {"2027-01-14": 1, "2027-01-15": 2}
    one_day = await ledger.usage(since=midnight + 5, until=midnight + 6, group_by=["day"])
    assert days(one_day) == {"2027-01-16": 2}


async def test_an_unknown_group_key_is_a_bad_request(make_ledger: LedgerFactory) -> None:
    ledger = await started(make_ledger())

    with pytest.raises(BadRequest) as refused:
        await ledger.usage(group_by=["day", "key", "user"])

    assert refused.value.param == "group_by"
    assert "'key', 'user'" in refused.value.message
    assert "day, client, model, instance, route" in refused.value.message


async def test_a_single_key_string_is_one_key(make_ledger: LedgerFactory) -> None:
    ledger = await started(make_ledger())
    ledger.add(call("r", NOW))
    await ledger.flush()

    assert [row["day"] for row in await ledger.usage(group_by="day")] == ["2027-01-15"]


async def test_spent_sums_one_clients_requests_since_a_time(make_ledger: LedgerFactory) -> None:
    ledger = await started(make_ledger())
    ledger.add(call("old", NOW - 10, cost_usd=1.0))
    ledger.add(call("new", NOW, cost_usd=0.25, tokens=Tokens(10, 5, cache_read_tokens=5)))
    ledger.add(call("unpriced", NOW + 5, cost_usd=None, cost_source=CostSource.UNPRICED))
    ledger.add(call("bob's", NOW, client="bob", cost_usd=7.0))
    ledger.add(call("admin's", NOW, client=None, cost_usd=3.0))
    await ledger.flush()

    alice = await ledger.spent("alice", NOW)
    assert alice["requests"] == 2
    assert alice["cost_usd"] == 0.25
    assert alice["unpriced_requests"] == 1
    assert alice["input_tokens"] == 110
    assert alice["cache_read_share"] == round(5 / 110, 6)
    assert (await ledger.spent(None, NOW))["cost_usd"] == 3.0
    assert (await ledger.spent("carol", NOW))["requests"] == 0


# Retention, by the injected clock.


async def test_daily_totals_outlive_the_request_rows(
    make_ledger: LedgerFactory, clock: FakeClock
) -> None:
    ledger = await started(make_ledger())
    ledger.add(call("r1", NOW, cost_usd=0.5))
    await ledger.flush()

    clock.advance(100 * DAY)
    await ledger.flush()

    assert await ledger.generation("r1") is None
    assert (await ledger.spent("alice", 0))["requests"] == 0
    [total] = await ledger.usage(group_by=["day", "client"])
    assert (total["day"], total["client"], total["requests"]) == ("2027-01-15", "alice", 1)
    assert total["cost_usd"] == 0.5


async def test_daily_totals_go_after_400_days(make_ledger: LedgerFactory, clock: FakeClock) -> None:
    ledger = await started(make_ledger())
    ledger.add(call("r1", NOW))
    await ledger.flush()

    clock.advance(400 * DAY)  # the day 400 days ago is still inside the window
    await ledger.flush()
    assert len(await ledger.usage(group_by=["day"])) == 1

    clock.advance(DAY)
    await ledger.flush()
    assert await ledger.usage(group_by=["day"]) == []


async def test_retention_runs_at_most_once_an_hour(
    make_ledger: LedgerFactory, clock: FakeClock
) -> None:
    ledger = await started(make_ledger(retention_days=1))
    await ledger.flush()  # retention ran just now
    ledger.add(call("stale", NOW - 2 * DAY))
    await ledger.flush()
    clock.advance(3599)
    await ledger.flush()
    assert await ledger.generation("stale") is not None

    clock.advance(1)
    await ledger.flush()
    assert await ledger.generation("stale") is None


# The schema, migrated.

VERSION_1 = """
CREATE TABLE requests (
    id TEXT PRIMARY KEY, started_at REAL NOT NULL, route TEXT NOT NULL, client TEXT,
    requested_model TEXT, stream INTEGER NOT NULL, session TEXT, model TEXT, instance TEXT,
    provider_type TEXT, key_position INTEGER, attempts INTEGER NOT NULL,
    status INTEGER NOT NULL, error_type TEXT, cancelled INTEGER NOT NULL,
    duration_ms REAL NOT NULL, ttft_ms REAL, input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL, cache_read_tokens INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL, reasoning_tokens INTEGER NOT NULL,
    usage_source TEXT NOT NULL, cost_usd REAL, cost_source TEXT NOT NULL
);
CREATE INDEX requests_by_started_at ON requests (started_at);
CREATE INDEX requests_by_client ON requests (client, started_at);
PRAGMA user_version = 1;
"""


REQUEST_LOG_COLUMNS = ("upstream_status", "error", "path")


async def test_a_version_1_file_is_migrated_and_its_requests_rolled_up(
    make_ledger: LedgerFactory, tmp_path: Path
) -> None:
    path = tmp_path / "v1.sqlite3"
    records = mixed_records()
    with sqlite3.connect(path) as db:
        db.executescript(VERSION_1)
        for record in records:
            row = {
                name: value
                for name, value in flattened(record).items()
                if name not in REQUEST_LOG_COLUMNS  # added by version 3
            }
            db.execute(
                f"INSERT INTO requests ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                tuple(row.values()),
            )
    db.close()

    with capture_logs() as logs:
        ledger = await started(make_ledger(path))

    assert logs == []
    assert ledger.available
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (VERSION,)
    db.close()
    keys = ("day", "client", "model", "instance", "route")
    assert await ledger.usage(group_by=keys) == expected_usage(records, keys)
    assert await ledger.generation("r03") == flattened(records[3])
    # Writing goes on into the migrated rollup.
    ledger.add(call("new", NOW))
    await ledger.flush()
    [total] = await ledger.usage()
    assert total["requests"] == len(records) + 1


async def test_a_file_from_a_newer_version_is_left_alone(
    make_ledger: LedgerFactory, tmp_path: Path
) -> None:
    path = tmp_path / "future.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE requests (id TEXT)")
        db.execute(f"PRAGMA user_version = {VERSION + 1}")
    db.close()

    with capture_logs() as logs:
        ledger = await started(make_ledger(path))
        ledger.add(call("r", NOW))
        await ledger.close()

    assert [log["event"] for log in logs] == ["usage.ledger_unavailable"]
    assert "newer localrouter" in logs[0]["reason"]
    assert ledger.dropped == 1
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (VERSION + 1,)
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == [("requests",)]
    db.close()


# A disk that is not there, broken, or full: never raises, counts what it drops.


async def test_a_directory_that_cannot_exist_drops_and_counts(
    make_ledger: LedgerFactory, tmp_path: Path
) -> None:
    (tmp_path / "afile").write_text("not a directory")
    path = tmp_path / "afile" / "usage.sqlite3"
    ledger = make_ledger(path)

    with capture_logs() as logs:
        ledger.add(call("before start", NOW))
        await ledger.start()
        for index in range(3):
            ledger.add(call(f"r{index}", NOW))
        await ledger.flush()
        await ledger.close()
        ledger.add(call("after close", NOW))

    assert [(log["event"], log["log_level"]) for log in logs] == [
        ("usage.ledger_unavailable", "warning")
    ]
    assert logs[0]["path"] == str(path)
    assert "afile" in logs[0]["reason"]
    assert not ledger.available
    assert (ledger.written, ledger.dropped) == (0, 5)
    assert await ledger.usage() == []
    assert await ledger.generation("r0") is None


async def test_a_broken_file_drops_and_counts(make_ledger: LedgerFactory, tmp_path: Path) -> None:
    path = tmp_path / "usage.sqlite3"
    garbage = bytes(range(256)) * 64
    path.write_bytes(garbage)
    ledger = make_ledger(path)

    with capture_logs() as logs:
        await ledger.start()
        ledger.add(call("r", NOW))
        await ledger.flush()
        await ledger.close()

    assert [log["event"] for log in logs] == ["usage.ledger_unavailable"]
    assert "not a database" in logs[0]["reason"]
    assert (ledger.written, ledger.dropped) == (0, 1)
    assert path.read_bytes() == garbage  # not ours to repair or replace


async def test_failing_writes_drop_their_batch_with_few_warnings(
    make_ledger: LedgerFactory, tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "usage.sqlite3"
    ledger = await started(make_ledger(path))
    # Another connection makes every insert fail, as a full disk would.
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TRIGGER full BEFORE INSERT ON requests "
            "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
    db.close()

    with capture_logs() as logs:
        for batch in range(WARNINGS_PER_INTERVAL + 2):
            ledger.add(call(f"a{batch}", NOW))
            ledger.add(call(f"b{batch}", NOW))
            await ledger.flush()
        clock.advance(WARNING_INTERVAL_SECONDS)
        ledger.add(call("later", NOW))
        await ledger.flush()

    assert [log["event"] for log in logs] == ["usage.ledger_write_failed"] * (
        WARNINGS_PER_INTERVAL + 1
    )
    assert logs[0]["reason"] == "disk full"
    assert logs[0]["records"] == 2
    assert logs[-1]["held_back"] == 2
    assert (ledger.written, ledger.dropped) == (0, 2 * (WARNINGS_PER_INTERVAL + 2) + 1)
    # Nothing of a failed batch was half written.
    [total] = await ledger.usage()
    assert total["requests"] == 0

    with sqlite3.connect(path) as db:
        db.execute("DROP TRIGGER full")
    db.close()
    ledger.add(call("again", NOW))
    await ledger.flush()
    assert ledger.written == 1
    assert await ledger.generation("again") is not None


async def test_past_max_pending_records_are_dropped_and_counted(
    make_ledger: LedgerFactory,
) -> None:
    ledger = await started(make_ledger(max_pending=3))

    with capture_logs() as logs:
        for index in range(3 + WARNINGS_PER_INTERVAL + 4):
            ledger.add(call(f"r{index}", NOW))
    await ledger.flush()

    assert (ledger.written, ledger.dropped) == (3, WARNINGS_PER_INTERVAL + 4)
    assert [log["event"] for log in logs] == ["usage.ledger_overflow"] * WARNINGS_PER_INTERVAL
    # Room again once written.
    ledger.add(call("more", NOW))
    await ledger.flush()
    assert ledger.written == 4


async def test_a_disabled_ledger_keeps_and_counts_nothing(make_ledger: LedgerFactory) -> None:
    ledger = make_ledger(None)

    with capture_logs() as logs:
        await ledger.start()
        ledger.add(call("r", NOW))
        await ledger.flush()
        assert await ledger.usage(group_by=["day"]) == []
        assert await ledger.generation("r") is None
        assert (await ledger.spent("alice", 0))["requests"] == 0
        await ledger.close()

    assert logs == []
    assert (ledger.enabled, ledger.written, ledger.dropped) == (False, 0, 0)


async def test_close_writes_what_is_pending(make_ledger: LedgerFactory, tmp_path: Path) -> None:
    path = tmp_path / "usage.sqlite3"
    ledger = await started(make_ledger(path))
    ledger.add(call("r", NOW))
    await ledger.close()
    ledger.add(call("late", NOW))

    assert (ledger.written, ledger.dropped) == (1, 1)
    reopened = await started(make_ledger(path))
    assert await reopened.generation("r") is not None


# Rollups handed on, and the background writer.


async def test_on_rollup_receives_what_each_flush_added(make_ledger: LedgerFactory) -> None:
    seen: list[Deltas] = []
    ledger = await started(make_ledger(on_rollup=seen.append))
    ledger.add(call("r1", NOW, cost_usd=0.5, tokens=Tokens(10, 1)))
    ledger.add(call("r2", NOW + 1, cost_usd=0.25, tokens=Tokens(20, 2)))
    ledger.add(
        call(
            "r3",
            NOW,
            client=None,
            status=500,
            cost_usd=None,
            cost_source=CostSource.UNPRICED,
            tokens=Tokens(1, 0),
        )
    )
    await ledger.flush()
    await ledger.flush()  # nothing new: no call
    ledger.add(call("r4", NOW))
    await ledger.flush()

    route = "/v1/chat/completions"
    alice = ("2027-01-15", "alice", "cloud/m1", "cloud", route)
    nobody = ("2027-01-15", "", "cloud/m1", "cloud", route)
    sums = dict.fromkeys(SUMS, 0)
    assert len(seen) == 2
    assert dict(seen[0]) == {
        alice: sums | {"requests": 2, "input_tokens": 30, "output_tokens": 3, "cost_usd": 0.75},
        nobody: sums
        | {"requests": 1, "failed": 1, "input_tokens": 1, "cost_usd": 0.0, "unpriced_requests": 1},
    }
    assert dict(seen[1]) == {
        alice: sums | {"requests": 1, "input_tokens": 100, "output_tokens": 20, "cost_usd": 0.001}
    }


async def test_a_failing_rollup_hook_is_logged_and_writing_goes_on(
    make_ledger: LedgerFactory,
) -> None:
    def broken(deltas: Deltas) -> None:
        raise ValueError("redis is away")

    ledger = await started(make_ledger(on_rollup=broken))
    with capture_logs() as logs:
        ledger.add(call("r", NOW))
        await ledger.flush()

    assert [log["event"] for log in logs] == ["usage.rollup_hook_failed"]
    assert ledger.written == 1


async def test_the_writer_writes_a_full_batch_by_itself(make_ledger: LedgerFactory) -> None:
    written: asyncio.Future[Deltas] = asyncio.get_running_loop().create_future()
    ledger = await started(make_ledger(batch=3, on_rollup=written.set_result))
    ledger.add(call("r1", NOW))
    ledger.add(call("r2", NOW))
    ledger.add(call("r3", NOW))

    async with asyncio.timeout(PATIENCE_SECONDS):  # only how long a broken test takes to fail
        await written
    assert ledger.written == 3
