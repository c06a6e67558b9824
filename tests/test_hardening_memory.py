"""A real `localrouter serve` process against answers built to exhaust memory: a gzip bomb, an
endless plain body, an endless compressed stream. Its peak RSS (VmHWM, from /proc) stays under
MEMORY_BOUND, and every oversized answer is a 502 naming the instance and the limit."""

from __future__ import annotations

import sys
import zlib
from collections.abc import AsyncIterator
from functools import cache
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.test_service import Daemon

MEMORY_BOUND = 300 * 1024 * 1024
BOMB_DECODED = 512 * 1024**2  # zeros, about 2.3 MB on the wire
STREAM_DECODED = 256 * 1024**2  # streamed through whole, so smaller to keep the test quick
MIB = b"\0" * (1024 * 1024)

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads the daemon's peak RSS from /proc"
)


@cache
def gzip_bomb(decoded: int) -> bytes:
    deflate = zlib.compressobj(1, zlib.DEFLATED, 31)  # level 1: quick to make, still 200:1
    parts = [deflate.compress(MIB) for _ in range(decoded // len(MIB))]
    return b"".join(parts) + deflate.flush()


async def hostile(request: web.Request) -> web.StreamResponse:
    if request.method == "GET":
        return web.json_response({"data": [{"id": "m"}]})
    body = await request.json()
    if request.path.endswith("/chat/completions") and body.get("stream"):
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Content-Encoding": "gzip"}
        )
        await response.prepare(request)
        bomb = gzip_bomb(STREAM_DECODED)
        for start in range(0, len(bomb), 65536):
            await response.write(bomb[start : start + 65536])
        return response
    if request.path.endswith("/chat/completions"):
        return web.Response(
            body=gzip_bomb(BOMB_DECODED),
            content_type="application/json",
            headers={"Content-Encoding": "gzip"},
        )
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    for _ in range(1536):  # 1.5 GiB, plain, until the daemon hangs up
        await response.write(MIB)
    return response


@pytest.fixture
async def daemon_against_hostile(tmp_path: Path, aiohttp_server: Any) -> AsyncIterator[Daemon]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hostile)
    server = await aiohttp_server(app)
    instance = {
        "name": "hostile",
        "type": "openai",
        "base_url": str(server.make_url("/v1")),
        "api_key": "sk-hostile-memory-1234",
    }
    daemon = Daemon(tmp_path, {"providers": [instance]})
    await daemon.start()
    yield daemon
    await daemon.stop()


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc")


async def test_memory_stays_bounded_under_bombs_and_endless_bodies(daemon_against_hostile: Daemon):
    daemon = daemon_against_hostile
    assert daemon.process is not None
    async with aiohttp.ClientSession() as session:
        for path in ("/v1/chat/completions", "/v1/embeddings", "/v1/completions"):
            body = {"model": "hostile/m", "messages": [], "input": "x"}
            async with session.post(daemon.url + path, json=body) as response:
                assert response.status == 502, path
                error = (await response.json())["error"]
                assert error["code"] == "upstream_too_large"
                assert "instance 'hostile'" in error["message"]
                assert str(32 * 1024 * 1024) in error["message"]
        streamed = 0
        body = {"model": "hostile/m", "messages": [], "stream": True}
        async with session.post(daemon.url + "/v1/chat/completions", json=body) as response:
            assert response.status == 200
            async for chunk in response.content.iter_any():
                streamed += len(chunk)
        assert streamed == STREAM_DECODED  # passed through whole, never held
    peak = peak_rss(daemon.process.pid)
    assert peak < MEMORY_BOUND, f"peak RSS {peak / 2**20:.0f} MiB"
