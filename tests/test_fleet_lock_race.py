"""A daemon that takes a list's lock looks once more for the list before it calls the upstream:
another daemon may have published the list and let its lock go between this one's first look
and its taking the lock. The interleaving is made certain by a loopback proxy in front of the
real redis-server, which hides the list from the second daemon until it asks for the lock."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis
from structlog.testing import capture_logs

from tests.conftest import DaemonFactory, UpstreamFactory, eventually, openai_compatible
from tests.fleet_processes import RedisServer
from tests.test_fleet_foreign_data import connected, fleet_config, model_ids, shared_key


class HidingProxy:
    """TCP between a daemon and Redis. Until the daemon asks for the lock (`SET <lock> ... NX`),
    its HMGET of the list (the look for a published list) asks for a key of the same length
    that is not there, so that Redis itself answers that there is no list, in whichever
    protocol version the connection speaks."""

    def __init__(self, redis_port: int, list_key: str, lock_key: str) -> None:
        self._redis_port = redis_port
        self._list, self._lock = list_key.encode(), lock_key.encode()
        self._elsewhere = self._list[:-1] + (b"#" if not self._list.endswith(b"#") else b"$")
        self.asked_lock = False
        self.hidden = 0  # looks sent elsewhere
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _connection(
        self, daemon_reader: asyncio.StreamReader, daemon_writer: asyncio.StreamWriter
    ) -> None:
        redis_reader, redis_writer = await asyncio.open_connection("127.0.0.1", self._redis_port)

        async def to_redis() -> None:
            while data := await daemon_reader.read(65536):
                if not self.asked_lock:
                    if b"HMGET" in data and self._list in data:
                        data = data.replace(self._list, self._elsewhere)
                        self.hidden += 1
                    elif b"SET" in data and self._lock in data and b"NX" in data:
                        self.asked_lock = True
                redis_writer.write(data)
                await redis_writer.drain()
            redis_writer.close()

        async def to_daemon() -> None:
            while data := await redis_reader.read(65536):
                daemon_writer.write(data)
                await daemon_writer.drain()
            daemon_writer.close()

        with contextlib.suppress(ConnectionError):
            await asyncio.gather(to_redis(), to_daemon())


@pytest.fixture
async def hiding() -> AsyncIterator[list[HidingProxy]]:
    proxies: list[HidingProxy] = []
    yield proxies
    for proxy in proxies:
        await proxy.close()


async def test_a_list_published_just_before_the_lock_is_taken_is_not_fetched_again(
    redis_server: RedisServer,
    neighbour: redis.Redis,
    upstream: UpstreamFactory,
    daemon: DaemonFactory,
    hiding: list[HidingProxy],
):
    alpha = await upstream()
    alpha.serve_models(["m"])
    config = fleet_config(redis_server, openai_compatible("alpha", alpha.url))
    list_key, lock_key = shared_key("list", config), shared_key("lock", config)

    first = await connected(daemon, config)
    assert await model_ids(first) == ["alpha/m"]

    async def published_and_let_go() -> bool:  # in the background, once it has answered
        return bool(await neighbour.exists(list_key)) and not await neighbour.exists(lock_key)

    await eventually(published_and_let_go, "the first daemon's list published, its lock let go")
    assert alpha.calls == 1

    proxy = HidingProxy(redis_server.port, list_key, lock_key)
    hiding.append(proxy)
    port = await proxy.start()
    through_proxy = {**config["fleet"], "redis_url": f"redis://127.0.0.1:{port}/0"}
    with capture_logs() as logs:
        second = await connected(daemon, {**config, "fleet": through_proxy})
        assert await model_ids(second) == ["alpha/m"]

    assert not [entry for entry in logs if entry["event"].startswith("fleet.foreign")], logs

    assert proxy.hidden >= 1, "the second daemon's look for the list was not hidden"
    assert proxy.asked_lock, "the second daemon did not take the lock"
    assert alpha.calls == 1  # the list the lock's last holder published, not another fetch
