"""Issue 37: the request log's live stream (`GET /api/requests/stream`) and `localrouter
requests`. Two readers get each record as it settles (a client only its own); a reader that
stops reading is dropped once it is MAX_QUEUED records behind, and the daemon's memory stays
bounded meanwhile (measured with tracemalloc); the CLI prints the log, one request, the
failed ones, and follows the stream."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from localrouter.app import COMPONENTS
from localrouter.cli import main
from localrouter.reqlog.hub import MAX_QUEUED
from tests.conftest import DaemonFactory, FakeClock, eventually, served_on_a_port
from tests.test_request_log import ADMIN, ALICE, BOB, logged, openai_chat
from tests.usage_wires import HELLO, Wires, openai_sdk, start_wires


@pytest.fixture
async def wires(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Wires:
    return await start_wires(aiohttp_server)


class StreamReader:
    """A reader of the stream over aiohttp, keeping each record it gets."""

    def __init__(self, session: aiohttp.ClientSession, url: str, token: str) -> None:
        self.records: list[dict[str, Any]] = []
        self._session, self._url, self._token = session, url, token
        self.task: asyncio.Task[None] | None = None

    async def _read(self, opened: asyncio.Event) -> None:
        headers = {"Authorization": f"Bearer {self._token}"}
        async with self._session.get(self._url, headers=headers) as answer:
            assert answer.status == 200
            assert answer.headers["Content-Type"] == "text/event-stream"
            opened.set()
            async for line in answer.content:
                if line.startswith(b"data:"):
                    self.records.append(orjson.loads(line[5:]))

    async def start(self) -> None:
        opened = asyncio.Event()
        self.task = asyncio.create_task(self._read(opened))
        await opened.wait()

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def test_two_readers_get_each_record_as_it_ends_a_client_only_its_own(
    daemon: DaemonFactory, tmp_path: Path, wires: Wires
) -> None:
    client = await daemon(logged(tmp_path, wires))
    hub = client.app[COMPONENTS].request_log.hub
    url = str(client.make_url("/api/requests/stream"))
    async with aiohttp.ClientSession() as session:
        admin, bob = StreamReader(session, url, ADMIN), StreamReader(session, url, BOB)
        await admin.start()
        await bob.start()
        await eventually(_async(lambda: len(hub.readers) == 2), "two readers")
        alices = await openai_chat(client, True)
        async with openai_sdk(client, BOB) as api:
            raw = await api.chat.completions.with_raw_response.create(
                model="oa/gpt-4o-mini", messages=HELLO
            )
        bobs = raw.headers["x-localrouter-request-id"]
        await eventually(_async(lambda: len(admin.records) == 2), "the admin's two records")
        await eventually(_async(lambda: len(bob.records) == 1), "bob's record")
        assert [record["id"] for record in admin.records] == [alices, bobs]
        assert admin.records[0]["client"] == "alice"
        assert admin.records[0]["stream"] is True
        assert [record["id"] for record in bob.records] == [bobs]
        await admin.stop()
        await bob.stop()
    await eventually(_async(lambda: not hub.readers), "the readers gone")


async def test_a_reader_that_stops_reading_is_dropped_and_memory_stays_bounded(
    daemon: DaemonFactory, tmp_path: Path, wires: Wires
) -> None:
    """A reader that connects and never reads (a small receive buffer): records of 8 KiB
    are published, 40 MiB in all; once its connection holds no more, it falls MAX_QUEUED
    behind and is dropped. The memory the daemon holds meanwhile stays a small fraction of
    what went by."""
    client = await daemon(logged(tmp_path, wires))
    hub = client.app[COMPONENTS].request_log.hub
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect((client.host, client.port))
    stuck.sendall(
        b"GET /api/requests/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"Authorization: Bearer {ADMIN}\r\n\r\n".encode()
    )
    await eventually(_async(lambda: len(hub.readers) == 1), "the stuck reader")
    record = {"id": "x", "client": None, "error": "e" * 8192}
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        published = 0
        while hub.readers and published < 5000:
            for _ in range(50):
                hub.publish(record)
            published += 50
            await asyncio.sleep(0.001)  # the reader's handler writes what it can
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        stuck.close()
    assert hub.dropped == 1
    assert not hub.readers
    assert published > MAX_QUEUED
    went_by = 5000 * 8192
    assert peak - start < went_by / 4, (peak - start, published)
    assert current - start < 8 * 1024 * 1024, current - start


def _async(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def checked() -> bool:
        return check()

    return checked


@pytest.fixture
async def served(
    tmp_path: Path, wires: Wires, clock: FakeClock
) -> AsyncIterator[tuple[Path, web.Application, str]]:
    """A daemon on a real port with the request log's bodies on, and its config file."""
    async with served_on_a_port(logged(tmp_path, wires, bodies="all"), tmp_path, clock) as on:
        yield on.config, on.app, on.base


async def _chat(base: str, model: str) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{base}/v1/chat/completions",
            json={"model": model, "messages": HELLO},
            headers={"Authorization": f"Bearer {ALICE}"},
        ) as answer,
    ):
        return answer.headers["x-localrouter-request-id"]


def _lines(said: str, first: str) -> list[str]:
    lines = said.splitlines()  # the daemon's log lines go there too
    return list(lines[next(i for i, x in enumerate(lines) if x.startswith(first)) :])


async def test_localrouter_requests_prints_the_log_the_failed_and_one(
    served: tuple[Path, web.Application, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path, app, base = served
    answered = await _chat(base, "oa/gpt-4o-mini")
    failed = await _chat(base, "oa/overloaded")
    await app[COMPONENTS].recorder.flush()

    assert await asyncio.to_thread(main, ["requests", "--config", str(path)]) == 0
    table = _lines(capsys.readouterr().out, "time ")
    assert table[0].split()[:3] == ["time", "id", "client"]
    assert [line.split()[2] for line in table[1:3]] == [failed, answered]
    assert table[1].split()[6] == "503"  # the time is two words

    assert await asyncio.to_thread(main, ["requests", "--failed", "--config", str(path)]) == 0
    table = _lines(capsys.readouterr().out, "time ")
    assert [line.split()[2] for line in table[1:] if line.split()[2].startswith("gen-")] == [failed]

    assert await asyncio.to_thread(main, ["requests", "show", answered, "--config", str(path)]) == 0
    said = capsys.readouterr().out
    shown = orjson.loads(said[said.index("{") : said.rindex("}") + 1])
    assert shown["id"] == answered
    assert shown["bodies"]["request"]["model"] == "oa/gpt-4o-mini"


async def test_localrouter_requests_follow_prints_each_request_as_it_ends(
    served: tuple[Path, web.Application, str],
) -> None:
    """`requests --follow`, a process of its own, prints the line of a request made after it
    started."""
    path, app, base = served
    hub = app[COMPONENTS].request_log.hub
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    follow = subprocess.Popen(  # noqa: ASYNC220 (starting it does not block)
        [sys.executable, "-m", "localrouter", "requests", "--follow", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=environment,
    )
    try:
        await eventually(_async(lambda: len(hub.readers) == 1), "the follower connected")
        request_id = await _chat(base, "oa/gpt-4o-mini")
        assert follow.stdout is not None
        stdout = follow.stdout
        header = await asyncio.to_thread(stdout.readline)
        assert header.split()[:2] == [b"time", b"id"]
        line = await asyncio.to_thread(stdout.readline)
        assert line.split()[2].decode() == request_id
    finally:
        follow.terminate()
        follow.wait()
        if follow.stdout is not None:
            follow.stdout.close()
