"""Shared test helpers: real loopback upstreams, an injectable clock, the daemon over HTTP."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
import pytest
import redis.asyncio as redis
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from localrouter.app import create_app
from localrouter.config.loading import parse_settings
from localrouter.config.settings import Settings
from localrouter.serve import bind, listen

if TYPE_CHECKING:
    from tests.fleet_processes import RedisServer

FIXTURES = Path(__file__).parent / "fixtures"
T = TypeVar("T")
PATIENCE_SECONDS = 30.0  # only how long a broken test takes to fail; nothing is timed


async def eventually(check: Callable[[], Awaitable[T]], what: str = "the condition") -> T:
    """Ask `check` again and again until it answers something true, and return that answer:
    for what the daemon does in the background (a refresh, a reload, a write)."""
    deadline = asyncio.get_running_loop().time() + PATIENCE_SECONDS
    while not (answer := await check()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} never happened")
        await asyncio.sleep(0.01)
    return answer


async def settled(client: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """The cache stats once no instance has a refresh in flight (`headers`: the admin's
    token, once the config has one)."""

    async def stats_when_idle() -> dict[str, Any] | None:
        response = await client.get("/api/cache/stats", headers=headers)
        stats: dict[str, Any] = await response.json()
        busy = any(status["refreshing"] for status in stats["instances"].values())
        return None if busy else stats

    return await eventually(stats_when_idle, "the end of every refresh")


def fixture_bytes(relative: str) -> bytes:
    return (FIXTURES / relative).read_bytes()


class FakeClock:
    """A wall clock the test moves by hand."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Upstream:
    """A real HTTP server on loopback that plays one provider and records what it was asked."""

    body: bytes
    status: int = 200
    delay_seconds: float = 0.0
    # When given, every call waits until the test opens the gate (the test's own upstream
    # fixture opens any gate left shut, so that no answer is left hanging at teardown).
    gate: asyncio.Event | None = None
    expected_auth: dict[str, str] = field(default_factory=dict)
    calls: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    def serve_models(self, ids: list[str]) -> None:
        data = [{"id": i, "object": "model", "created": 1700000000, "owned_by": "x"} for i in ids]
        self.body = orjson.dumps({"object": "list", "data": data})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.calls += 1
        self.requests.append({"path": request.path_qs, "headers": dict(request.headers)})
        for name, value in self.expected_auth.items():
            if request.headers.get(name) != value:
                return web.json_response({"error": {"message": "bad auth"}}, status=401)
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        if self.gate is not None:
            await self.gate.wait()
        return web.Response(body=self.body, status=self.status, content_type="application/json")


UpstreamFactory = Callable[..., Awaitable[Upstream]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def upstream(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Iterator[UpstreamFactory]:
    started: list[Upstream] = []

    async def start(body: bytes = b'{"object":"list","data":[]}', **options: Any) -> Upstream:
        fake = Upstream(body=body, **options)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", fake.handle)
        fake.server = await aiohttp_server(app)
        started.append(fake)
        return fake

    yield start
    for fake in started:
        if fake.gate is not None:
            fake.gate.set()


def settings_from(config: dict[str, Any], env: dict[str, str] | None = None) -> Settings:
    """A config as a file would give it; discovery off unless the test sets it (a developer's
    own Ollama or llama.cpp must not join a test's instances)."""
    config = {"discovery": {"enabled": False}, **config}
    return parse_settings(yaml.safe_dump(config), "test-config.yaml", env or {})


DaemonFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture
def daemon(aiohttp_client: Any, clock: FakeClock) -> DaemonFactory:
    """The daemon over real HTTP, from a config dict, with the test's clock."""

    async def start(
        config: dict[str, Any], env: dict[str, str] | None = None, **options: Any
    ) -> TestClient[web.Request, web.Application]:
        app = create_app(settings_from(config, env), clock=clock, **options)
        # As `localrouter serve` runs it: a client that leaves cancels its request.
        client: TestClient[web.Request, web.Application] = await aiohttp_client(
            app, server_kwargs={"handler_cancellation": True}
        )
        return client

    return start


def openai_compatible(name: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "openai_compatible", "base_url": url, **extra}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Served:
    """A daemon on a real port, and the config file that points the CLI at it."""

    config: Path
    app: web.Application
    base: str


@asynccontextmanager
async def served_on_a_port(
    config: dict[str, Any], directory: Path, clock: FakeClock
) -> AsyncIterator[Served]:
    """The daemon as `localrouter serve` runs it, on a free port, from `config` written to
    `directory`/config.yaml (for the CLI's commands, which find the daemon through it)."""
    config = {**config, "server": {**config.get("server", {}), "port": free_port()}}
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    settings = settings_from(config)
    app = create_app(settings, clock=clock)
    runner = web.AppRunner(app)
    await runner.setup()
    await listen(runner, bind(settings))
    try:
        yield Served(path, app, f"http://127.0.0.1:{config['server']['port']}")
    finally:
        await runner.cleanup()


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A real redis-server on a free loopback port, for the fleet's tests."""
    from tests.fleet_processes import RedisServer  # which imports this module's helpers

    server = RedisServer(tmp_path / "redis-data")
    server.directory.mkdir()
    await server.start()
    yield server
    server.kill()


@pytest.fixture
async def neighbour(redis_server: RedisServer) -> AsyncIterator[redis.Redis]:
    """Another program on the same Redis (writing under the fleet's prefix, or reading it)."""
    client = redis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()
