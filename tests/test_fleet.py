"""Several daemons, as real processes, sharing one real redis-server (fleet.redis_url)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer, unused_port

from localrouter.app import COMPONENTS
from localrouter.base.errors import ConfigError
from localrouter.cli import main
from tests.conftest import eventually, openai_compatible, settings_from
from tests.fleet_processes import DaemonProcess, RedisServer
from tests.test_reload import one_instance_watched, write_config

PASSWORD = "fleet-pa55word-never-shown"


class GatedUpstream:
    """A provider whose model-list answers wait until the test opens the gate, and which
    counts every call; chat answers 429 for the key in `limited`."""

    def __init__(self, models: list[str]) -> None:
        self.models = models
        self.calls = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.limited: str | None = None
        self.chat_keys: list[str] = []
        self.server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/v1"))

    async def list_models(self, request: web.Request) -> web.Response:
        self.calls += 1
        await self.gate.wait()
        data = [{"id": model, "object": "model", "owned_by": "lab"} for model in self.models]
        return web.json_response({"object": "list", "data": data})

    async def chat(self, request: web.Request) -> web.Response:
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.chat_keys.append(key)
        if key == self.limited:
            return web.json_response(
                {"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "600"}
            )
        message = {"role": "assistant", "content": "hi"}
        return web.json_response(
            {
                "id": "c1",
                "object": "chat.completion",
                "created": 1,
                "model": "m",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            }
        )


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as client:
        yield client


@pytest.fixture
def upstreams(aiohttp_server: Any) -> Callable[..., Any]:
    async def start(models: list[str]) -> GatedUpstream:
        upstream = GatedUpstream(models)
        app = web.Application()
        app.router.add_get("/v1/models", upstream.list_models)
        app.router.add_post("/v1/chat/completions", upstream.chat)
        upstream.server = await aiohttp_server(app)
        return upstream

    return start


@pytest.fixture
def fleet(tmp_path: Path, session: aiohttp.ClientSession) -> Iterator[Callable[..., Any]]:
    started: list[DaemonProcess] = []

    async def start(configs: list[dict[str, Any]], env: dict[str, str] | None = None) -> Any:
        daemons = [
            DaemonProcess(tmp_path / f"daemon-{len(started) + i}", config, env or {})
            for i, config in enumerate(configs)
        ]
        started.extend(daemons)
        for daemon in daemons:
            daemon.start()
        for daemon in daemons:
            await daemon.ready(session)
        return daemons

    yield start
    for daemon in started:
        daemon.stop()


def config(redis: RedisServer, *instances: dict[str, Any], **server: Any) -> dict[str, Any]:
    return {
        "server": {"models_deadline_seconds": 60, **server},
        "providers": list(instances),
        "fleet": {"redis_url": redis.url, "key_prefix": "test:"},
    }


def lab(name: str, upstream: GatedUpstream, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "openai_compatible", "base_url": upstream.url, **extra}


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as reply:
        assert reply.status == 200, await reply.text()
        return await reply.json()


async def model_ids(session: aiohttp.ClientSession, daemon: DaemonProcess) -> list[str]:
    listed = await get_json(session, f"{daemon.url}/v1/models")
    return sorted(model["id"] for model in listed["data"])


async def connected(session: aiohttp.ClientSession, daemon: DaemonProcess) -> bool:
    health = await get_json(session, f"{daemon.url}/health")
    return bool(health["fleet"]["connected"])


async def all_connected(session: aiohttp.ClientSession, daemons: list[DaemonProcess]) -> None:
    """Until every daemon has reached Redis: one that has not yet (a slow start) serves on its
    own, fetching its lists itself, as it should."""

    async def every() -> bool:
        return all([await connected(session, daemon) for daemon in daemons])

    await eventually(every, "every daemon connected to Redis")


async def sources(session: aiohttp.ClientSession, daemon: DaemonProcess) -> dict[str, Any]:
    stats = await get_json(session, f"{daemon.url}/api/cache/stats")
    return {name: status["source"] for name, status in stats["instances"].items()}


async def test_thirty_cold_requests_on_three_daemons_make_one_upstream_call_per_instance(
    redis_server, upstreams, fleet, session
):
    alpha, beta = await upstreams(["a1", "a2"]), await upstreams(["b1"])
    alpha.gate.clear()
    beta.gate.clear()
    daemons = await fleet([config(redis_server, lab("alpha", alpha), lab("beta", beta))] * 3)
    await all_connected(session, daemons)

    requests = [asyncio.create_task(model_ids(session, daemons[i % 3])) for i in range(30)]

    async def all_waiting() -> bool:  # every request has reached its daemon's cold cache
        counts = [await get_json(session, f"{d.url}/api/cache/stats") for d in daemons]
        return all(stats["misses"] >= 10 for stats in counts)

    await eventually(all_waiting, "30 requests waiting on cold caches")
    alpha.gate.set()
    beta.gate.set()
    answers = await asyncio.gather(*requests)

    assert all(ids == ["alpha/a1", "alpha/a2", "beta/b1"] for ids in answers)
    assert (alpha.calls, beta.calls) == (1, 1)

    async def fleet_totals() -> dict[str, Any] | None:  # each daemon reports every second
        stats = await get_json(session, f"{daemons[0].url}/api/cache/stats")
        totals: dict[str, Any] = stats["fleet"]
        # Six caches (three daemons, two instances) each got their list, one way or another.
        return totals if totals["upstream_calls"] + totals["fleet_lists"] >= 6 else None

    totals = await eventually(fleet_totals, "every daemon's counters in the fleet totals")
    assert totals["daemons"] == 3
    assert totals["upstream_calls"] == 2  # one per instance, fleet-wide
    assert totals["fleet_lists"] == 4  # two daemons took each list from the third


async def test_a_list_refreshed_by_one_daemon_reaches_the_others_without_upstream_calls(
    redis_server, upstreams, fleet, session
):
    alpha = await upstreams(["old"])
    first, second, third = await fleet([config(redis_server, lab("alpha", alpha))] * 3)
    await all_connected(session, [first, second, third])
    for daemon in (first, second, third):
        assert await model_ids(session, daemon) == ["alpha/old"]
    assert alpha.calls == 1

    alpha.models = ["new"]
    await get_json(session, f"{first.url}/api/models?refresh=true")

    async def everywhere() -> bool:
        return all([await model_ids(session, d) == ["alpha/new"] for d in (second, third)])

    await eventually(everywhere, "the refreshed list on the other daemons")
    assert alpha.calls == 2


async def test_cache_clear_on_one_daemon_expires_the_list_on_all(
    redis_server, upstreams, fleet, session
):
    alpha = await upstreams(["m"])
    daemons = await fleet([config(redis_server, lab("alpha", alpha))] * 3)
    await all_connected(session, daemons)
    for daemon in daemons:
        assert await model_ids(session, daemon) == ["alpha/m"]
    assert all([await sources(session, d) == {"alpha": "live"} for d in daemons])

    async with session.post(f"{daemons[0].url}/api/cache/clear", json={}) as reply:
        cleared = await reply.json()
    assert cleared["fleet"] == "expired on every daemon"

    async def stale_everywhere() -> bool:
        return all([await sources(session, d) == {"alpha": "stale"} for d in daemons])

    await eventually(stale_everywhere, "the list stale on every daemon")
    alpha.gate.clear()  # hold the refresh, so that all three ask while it is under way
    refreshing = [asyncio.create_task(model_ids(session, d)) for d in daemons]
    await eventually(lambda: _calls_reached(alpha, 2), "the refresh reaching the upstream")
    alpha.gate.set()
    assert await asyncio.gather(*refreshing) == [["alpha/m"]] * 3  # stale, then fresh

    async def live_everywhere() -> bool:
        return all([await sources(session, d) == {"alpha": "live"} for d in daemons])

    await eventually(live_everywhere, "one refresh landing on every daemon")
    assert alpha.calls == 2, _redis_trouble(*daemons)


async def _calls_reached(upstream: GatedUpstream, calls: int) -> bool:
    return upstream.calls >= calls


async def test_redis_lost_and_back_degrades_then_recovers(redis_server, upstreams, fleet, session):
    alpha = await upstreams(["m"])
    first, second = await fleet(
        [config(redis_server, lab("alpha", alpha), models_deadline_seconds=2)] * 2
    )
    assert await model_ids(session, first) == ["alpha/m"]

    redis_server.freeze()  # a Redis that hangs: the worst way to lose it
    try:
        async with session.post(f"{first.url}/api/cache/clear", json={}) as reply:
            assert (await reply.json())["success"]
        limit = aiohttp.ClientTimeout(total=10)  # a hang on Redis would not end before this
        for daemon in (first, second):
            async with session.get(f"{daemon.url}/v1/models", timeout=limit) as reply:
                assert reply.status == 200
                ids = [model["id"] for model in (await reply.json())["data"]]
            assert ids == ["alpha/m"]
    finally:
        redis_server.thaw()
    redis_server.kill()

    async def degraded(daemon: DaemonProcess) -> bool:
        health = await get_json(session, f"{daemon.url}/health")
        return health["status"] == "degraded" and any(
            "fleet: redis unreachable" in reason for reason in health["reasons"]
        )

    for daemon in (first, second):
        await eventually(lambda d=daemon: degraded(d), "/health degraded")
        assert await model_ids(session, daemon) == ["alpha/m"]

    await redis_server.start()  # the same port, empty
    for daemon in (first, second):
        await eventually(lambda d=daemon: connected(session, d), "the daemon reconnected")
    calls = alpha.calls
    alpha.models = ["after"]
    await get_json(session, f"{first.url}/api/models?refresh=true")

    async def shared_again() -> bool:
        return await model_ids(session, second) == ["alpha/after"]

    await eventually(shared_again, "the list shared again after Redis came back")
    assert alpha.calls == calls + 1
    health = await get_json(session, f"{second.url}/health")
    assert health["status"] == "ok", health


async def test_different_configs_for_one_instance_name_never_share(
    redis_server, upstreams, fleet, session
):
    one, other = await upstreams(["from-one"]), await upstreams(["from-other"])
    first, second = await fleet(
        [
            config(redis_server, lab("lab", one)),
            config(redis_server, lab("lab", other)),
        ]
    )
    third, fourth = await fleet(
        [
            config(redis_server, lab("lab", one, api_key="sk-first-key-000000")),
            config(redis_server, lab("lab", one, api_key="sk-other-key-11111")),
        ]
    )
    assert await model_ids(session, first) == ["lab/from-one"]
    assert await model_ids(session, second) == ["lab/from-other"]
    await model_ids(session, third)
    await model_ids(session, fourth)
    assert (one.calls, other.calls) == (3, 1)  # first, third and fourth each called their own


async def test_one_daemons_rate_limited_key_rests_for_the_whole_fleet(
    redis_server, upstreams, fleet, session
):
    alpha = await upstreams(["m"])
    keys = ["sk-pool-key-one-0000", "sk-pool-key-two-0000"]
    first, second = await fleet([config(redis_server, lab("alpha", alpha, api_keys=keys))] * 2)
    await all_connected(session, [first, second])
    alpha.limited = keys[0]
    chat = {"model": "alpha/m", "messages": [{"role": "user", "content": "hi"}]}
    for _ in keys:  # wherever the turn stands, one of these takes the first key
        async with session.post(f"{first.url}/v1/chat/completions", json=chat) as reply:
            assert reply.status == 200
    assert alpha.chat_keys.count(keys[0]) == 1  # limited once, then the second key answered

    async def resting_on_second() -> bool:
        listed = await get_json(session, f"{second.url}/api/providers")
        return listed["providers"][0]["keys"][0]["state"] == "resting"

    await eventually(resting_on_second, "the rest reaching the other daemon")
    asked = len(alpha.chat_keys)
    for _ in keys:
        async with session.post(f"{second.url}/v1/chat/completions", json=chat) as reply:
            assert reply.status == 200
    assert alpha.chat_keys[asked:] == [keys[1], keys[1]]  # the second never tried the first


async def test_foreign_data_under_the_prefix_is_ignored_with_a_warning(
    redis_server, upstreams, fleet, session
):
    alpha = await upstreams(["m"])
    (daemon,) = await fleet([config(redis_server, lab("alpha", alpha))])
    await all_connected(session, [daemon])
    assert await model_ids(session, daemon) == ["alpha/m"]
    # The fleet's list is written once it is served: under load, after the answer.
    listed = await eventually(lambda: _shared_lists(redis_server), "the list in Redis")
    [key] = [line.split()[-1] for line in listed.decode().splitlines() if line.startswith("test:")]
    await redis_server.command("HSET", key, "fetched_at", "9999999999", "models", "{not json")
    await eventually(
        lambda: redis_server.subscribers("test:events"), "the daemon listening for fleet news"
    )
    news = orjson.dumps({"by": "someone", "kind": "list", "target": key}).decode()
    await redis_server.command("PUBLISH", "test:events", news)
    await redis_server.command("PUBLISH", "test:events", "garbage")

    await eventually(
        lambda: _logged(daemon, "fleet.foreign_list_ignored"), "a warning for the bad list"
    )
    await eventually(
        lambda: _logged(daemon, "fleet.foreign_event_ignored"), "a warning for the bad event"
    )
    assert await model_ids(session, daemon) == ["alpha/m"]
    assert alpha.calls == 1


def _redis_trouble(*daemons: DaemonProcess) -> str:
    """What the daemons logged of Redis failing them: a daemon whose loop is starved (a busy
    machine) can miss fleet.OP_SECONDS, take the fleet for down, and call the upstream itself."""
    lines = [
        line for daemon in daemons for line in daemon.log().splitlines() if "fleet.redis_" in line
    ]
    return "\n".join(lines) or "no Redis trouble logged"


async def _shared_lists(redis_server: RedisServer) -> bytes | None:
    """The KEYS answer naming the fleet's shared lists, once there is one."""
    reply = await redis_server.command("KEYS", "test:list:*")
    return reply if b"test:list:" in reply else None


async def _logged(daemon: DaemonProcess, event: str) -> bool:
    return event in daemon.log()


async def test_the_redis_password_appears_in_no_log_or_response(
    tmp_path, upstreams, fleet, session
):
    redis = RedisServer(tmp_path / "locked-redis", password=PASSWORD)
    redis.directory.mkdir()
    await redis.start()
    try:
        alpha = await upstreams(["m"])
        good = config(redis, lab("alpha", alpha))
        good["fleet"]["redis_url"] = "${FLEET_REDIS_URL}"
        wrong = config(redis, lab("alpha", alpha))
        wrong["fleet"]["redis_url"] = redis.url.replace(PASSWORD, PASSWORD + "-wrong")
        env = {"FLEET_REDIS_URL": redis.url}
        daemons = await fleet([good, wrong], env=env)
        await all_connected(session, daemons[:1])
        assert not await connected(session, daemons[1])
        shown = []
        for daemon in daemons:
            await model_ids(session, daemon)
            for path in ("/health", "/api/cache/stats", "/api/providers", "/metrics"):
                async with session.get(f"{daemon.url}{path}") as reply:
                    shown.append(await reply.text())
            async with session.post(f"{daemon.url}/api/cache/clear", json={}) as reply:
                shown.append(await reply.text())
        for daemon in daemons:
            daemon.stop()
            shown.append(daemon.log())
        assert "fleet: redis unreachable" in shown[5]  # the wrong password, said without it
        everything = "\n".join(shown)
        assert "fleet.connected" in everything
        assert PASSWORD not in everything
    finally:
        redis.kill()


async def test_a_daemon_starts_and_serves_without_its_redis(upstream, daemon):
    up = await upstream()
    up.serve_models(["m"])
    nobody = f"redis://:{PASSWORD}@127.0.0.1:{unused_port()}/0"
    client = await daemon(
        {"providers": [openai_compatible("one", up.url)], "fleet": {"redis_url": nobody}}
    )
    listed = await (await client.get("/v1/models")).json()
    assert [model["id"] for model in listed["data"]] == ["one/m"]
    health = await (await client.get("/health")).json()
    assert health["status"] == "degraded"
    assert health["fleet"]["connected"] is False
    [reason] = health["reasons"]
    assert reason.startswith("fleet: redis unreachable (")
    stats = await (await client.get("/api/cache/stats")).json()
    assert stats["fleet"] is None  # no totals to show, and no wait for them
    cleared = await (await client.post("/api/cache/clear", json={})).json()
    assert cleared["fleet"] == "redis unreachable: here only"
    assert PASSWORD not in str((health, stats, cleared, health["fleet"]["redis"]))


def test_redis_url_needs_the_fleet_extra(monkeypatch):
    for name in ("redis", "redis.asyncio"):
        monkeypatch.setitem(sys.modules, name, None)  # as if `pip install localrouter` alone
    with pytest.raises(ConfigError) as caught:
        settings_from({"fleet": {"redis_url": f"redis://:{PASSWORD}@127.0.0.1:6379/0"}})
    message = str(caught.value)
    assert "fleet.redis_url" in message
    assert "pip install 'localrouter[fleet]'" in message
    assert PASSWORD not in message


@pytest.mark.parametrize("url", [f"http://:{PASSWORD}@127.0.0.1/", PASSWORD])
def test_a_redis_url_of_another_kind_is_refused_without_showing_it(url):
    with pytest.raises(ConfigError) as caught:
        settings_from({"fleet": {"redis_url": url}})
    assert "fleet.redis_url: expected a redis://" in str(caught.value)
    assert PASSWORD not in str(caught.value)


def test_the_redis_password_is_a_secret_in_every_form():
    quoted = "p%40ss-w0rd-long"
    settings = settings_from({"fleet": {"redis_url": f"redis://user:{quoted}@host:6379/0"}})
    assert {quoted, "p@ss-w0rd-long"} <= set(settings.secret_values)
    assert settings_from({}).fleet.enabled is False  # no fleet unless asked for


async def test_a_changed_fleet_needs_a_restart(tmp_path, upstream, daemon):
    client, path, config = await one_instance_watched(tmp_path, upstream, daemon)
    write_config(path, {**config, "fleet": {"key_prefix": "other:"}})
    assert await client.app[COMPONENTS].reloader.reload()
    health = await (await client.get("/health")).json()
    assert health["config"]["restart_needed"] == ["fleet changed: restart to apply"]


def test_check_shows_the_fleet_without_its_password(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text(f"fleet:\n  redis_url: redis://:{PASSWORD}@10.0.0.5:6379/2\n")
    path.chmod(0o644)
    assert main(["check", "--config", str(path)]) == 0
    shown = capsys.readouterr()
    assert "fleet: redis://10.0.0.5:6379/2  key prefix 'localrouter:'" in shown.out
    assert "fleet.redis_url" in shown.err  # a password written in a file others can read
    assert PASSWORD not in shown.out + shown.err


async def test_a_list_fetched_with_a_callers_key_is_never_shared(
    redis_server, upstreams, fleet, session
):
    alpha = await upstreams(["m"])
    first, second = await fleet([config(redis_server, lab("alpha", alpha))] * 2)
    await all_connected(session, [first, second])
    assert await model_ids(session, first) == ["alpha/m"]
    # The fleet's list is written once it is served: under load, after the answer.
    shared_before = await eventually(lambda: _shared_lists(redis_server), "the list in Redis")
    own_key = {"X-Openai-Compatible-Key": "sk-callers-own-key-1234"}
    for daemon in (first, second):
        async with session.get(f"{daemon.url}/api/models", headers=own_key) as reply:
            assert reply.status == 200
    # The fleet's one, then each daemon's own with the caller's key.
    assert alpha.calls == 3, _redis_trouble(first, second)
    assert await redis_server.command("KEYS", "test:list:*") == shared_before
    assert b"sk-callers-own-key" not in await redis_server.command("KEYS", "*")
