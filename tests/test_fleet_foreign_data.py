"""Foreign data under the fleet's prefix, as a hostile or broken neighbour on the Redis writes
it: a value of another Redis type under one of our keys, a lock that never expires, garbage on
the events channel by the thousand, a key's rest or refusal out of range. Each is ignored with a
rate-limited warning and the fleet stays up. The daemon runs in-process (its warnings captured)
with the test's clock, against a real redis-server."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import openai
import orjson
import pytest
import redis.asyncio as redis
from structlog.testing import capture_logs

from localrouter.lists.fleet import (
    FOREIGN_INTERVAL_SECONDS,
    FOREIGN_WARNINGS,
    identity,
)
from localrouter.upstream.key_pool import MAX_REST_SECONDS
from tests.conftest import (
    DaemonFactory,
    FakeClock,
    UpstreamFactory,
    eventually,
    openai_compatible,
    settings_from,
)
from tests.fleet_processes import RedisServer
from tests.test_control import sdk
from tests.test_hardening_pool import HI, KEYS, Storming, storming  # noqa: F401 (a fixture)

Logs = list[dict[str, Any]]


def fleet_config(redis_server: RedisServer, *providers: dict[str, Any]) -> dict[str, Any]:
    return {
        "server": {"models_deadline_seconds": 60},  # a busy machine is slow, never wrong
        "providers": list(providers),
        "fleet": {"redis_url": redis_server.url, "key_prefix": "test:"},
    }


def shared_key(kind: str, config: dict[str, Any]) -> str:
    """`test:<kind>:<instance>:<identity>` for the config's first instance."""
    provider = settings_from(config).providers[0]
    return f"test:{kind}:{provider.name}:{identity(provider)}"


def logged(logs: Logs, event: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == event]


async def connected(daemon: DaemonFactory, config: dict[str, Any]) -> Any:
    """The daemon, once its fleet link is up (a busy machine may take longer than start-up
    waits, and what happens before would not reach Redis)."""
    client = await daemon(config)

    async def up() -> bool:
        return bool((await fleet_health(client))["fleet"]["connected"])

    await eventually(up, "the fleet connected")
    return client


async def model_ids(client: Any) -> list[str]:
    listed = await (await client.get("/v1/models")).json()
    return [model["id"] for model in listed["data"]]


async def fleet_health(client: Any) -> dict[str, Any]:
    health: dict[str, Any] = await (await client.get("/health")).json()
    return health


async def test_a_value_of_another_redis_type_under_our_keys_leaves_the_fleet_up(
    redis_server: RedisServer,
    neighbour: redis.Redis,
    upstream: UpstreamFactory,
    daemon: DaemonFactory,
    clock: FakeClock,
):
    alpha = await upstream()
    alpha.serve_models(["m"])
    config = fleet_config(redis_server, openai_compatible("alpha", alpha.url))
    list_key = shared_key("list", config)
    await neighbour.set(list_key, "a string where our hash goes")

    def wrong_types() -> list[dict[str, Any]]:
        return [w for w in logged(logs, "fleet.foreign_type_ignored") if w["key"] == list_key]

    async def warned(count: int) -> bool:
        return len(wrong_types()) >= count

    with capture_logs() as logs:
        client = await connected(daemon, config)
        assert await model_ids(client) == ["alpha/m"]  # its HMGET met WRONGTYPE
        assert logged(logs, "fleet.redis_unreachable") == []
        await eventually(lambda: warned(2), "a warning for the list's HMGET and its HSET")

        clock.advance(FOREIGN_INTERVAL_SECONDS)  # the periodic check's HGET, in a new interval
        await eventually(lambda: warned(4), "warnings for the periodic check")
        cleared = await (await client.post("/api/cache/clear", json={})).json()
        assert cleared["fleet"] == "expired on every daemon"
        await eventually(
            lambda: _any(wrong_types(), lambda w: "script" in w["error"]),
            "a warning for the clear's EVAL",
        )
        health = await fleet_health(client)

    assert logged(logs, "fleet.redis_unreachable") == []
    assert health["fleet"]["connected"] is True
    assert health["status"] == "ok", health["reasons"]
    assert all(w["error"].startswith("WRONGTYPE") for w in wrong_types())
    assert await neighbour.get(list_key) == b"a string where our hash goes"  # ignored, not ours
    assert alpha.calls == 1


async def _any(items: list[dict[str, Any]], test: Callable[[dict[str, Any]], bool]) -> bool:
    return any(test(item) for item in items)


async def test_a_lock_that_never_expires_holds_no_refresh(
    redis_server: RedisServer,
    neighbour: redis.Redis,
    upstream: UpstreamFactory,
    daemon: DaemonFactory,
):
    alpha = await upstream()
    alpha.serve_models(["m"])
    config = fleet_config(redis_server, openai_compatible("alpha", alpha.url))
    await neighbour.hset(shared_key("lock", config), "owner", "nobody")  # no expiry, a hash
    with capture_logs() as logs:
        client = await connected(daemon, config)
        assert await model_ids(client) == ["alpha/m"]
    reasons = {w["reason"] for w in logged(logs, "fleet.foreign_list_ignored")}
    assert reasons == {"its lock never expires"}
    assert (await fleet_health(client))["fleet"]["connected"] is True


async def test_three_thousand_garbage_events_log_a_few_lines_and_a_count(
    redis_server: RedisServer,
    neighbour: redis.Redis,
    upstream: UpstreamFactory,
    daemon: DaemonFactory,
    clock: FakeClock,
):
    alpha = await upstream()
    alpha.serve_models(["m"])
    config = fleet_config(redis_server, openai_compatible("alpha", alpha.url))
    list_key = shared_key("list", config)

    async def source() -> str:
        stats = await (await client.get("/api/cache/stats")).json()
        return str(stats["instances"]["alpha"]["source"])

    async def stale() -> bool:
        return await source() == "stale"

    with capture_logs() as logs:
        client = await connected(daemon, config)
        assert await model_ids(client) == ["alpha/m"]
        assert await source() == "live"
        async with neighbour.pipeline(transaction=False) as pipe:
            for number in range(3000):
                pipe.publish("test:events", f"garbage {number}")
            # Then a clear from "another daemon": once it is heard, all of the above was.
            pipe.publish("test:events", orjson.dumps({"kind": "expire", "target": list_key}))
            await pipe.execute()
        await eventually(stale, "the clear heard after the garbage")
        shown = len(logged(logs, "fleet.foreign_event_ignored"))
        assert shown == FOREIGN_WARNINGS, f"{shown} warnings for 3000 garbage events"
        assert logged(logs, "fleet.foreign_data_suppressed") == []  # not before the interval ends

        clock.advance(FOREIGN_INTERVAL_SECONDS)

        async def counted() -> list[dict[str, Any]]:
            return logged(logs, "fleet.foreign_data_suppressed")

        [summary] = await eventually(counted, "the count of warnings held back")
        await neighbour.publish("test:events", "garbage after the interval")
        await eventually(
            lambda: _reached(logs, "fleet.foreign_event_ignored", FOREIGN_WARNINGS + 1),
            "a warning in the new interval",
        )
    assert summary["count"] == 3000 - FOREIGN_WARNINGS
    assert summary["events"] == {"fleet.foreign_event_ignored": 3000 - FOREIGN_WARNINGS}
    assert (await fleet_health(client))["fleet"]["connected"] is True


async def _reached(logs: Logs, event: str, count: int) -> bool:
    return len(logged(logs, event)) >= count


async def test_a_rest_heard_from_the_fleet_is_capped_and_a_foreign_refusal_ignored(
    redis_server: RedisServer,
    neighbour: redis.Redis,
    storming: Callable[..., Awaitable[Storming]],  # noqa: F811 (the fixture imported above)
    daemon: DaemonFactory,
    clock: FakeClock,
):
    lab = await storming("30")
    config = fleet_config(redis_server, openai_compatible("lab", lab.url, api_keys=KEYS[:2]))

    async def keys() -> list[dict[str, Any]]:
        providers = await (await client.get("/api/providers")).json()
        shown: list[dict[str, Any]] = providers["providers"][0]["keys"]
        return shown

    async def shared_rests() -> list[bytes] | None:
        found: list[bytes] = await neighbour.keys("test:key:*")
        return found if len(found) == 2 else None

    async def rested_longer() -> list[dict[str, Any]] | None:
        shown = await keys()
        return shown if all(key.get("seconds_left", 0) > 30 for key in shown) else None

    async def refusals_heard() -> bool:
        ignored = logged(logs, "fleet.foreign_key_state_ignored")
        return len(ignored) == 2 or any(key["state"] == "refused" for key in await keys())

    async def tell(name: str, until: float, refused: int | None) -> None:
        news = {"by": "elsewhere", "kind": "key", "target": name, "until": until}
        await neighbour.publish("test:events", orjson.dumps({**news, "refused": refused}))

    with capture_logs() as logs:
        client = await connected(daemon, config)
        async with sdk(client) as api:
            with pytest.raises(openai.RateLimitError):  # both keys: 429, Retry-After 30
                await api.chat.completions.create(model="lab/m", messages=HI)
        found = await eventually(shared_rests, "both keys' rests in Redis")
        names = [name.decode().removeprefix("test:key:") for name in found]
        for name in names:
            await tell(name, clock.now + 1e9, None)  # another daemon: rest thirty years
        rested = await eventually(rested_longer, "the fleet's rests applied")
        for name in names:
            await tell(name, clock.now, 200)  # "refused" with a status that refuses nothing
        await eventually(refusals_heard, "the refusals heard")
        after = await keys()
    assert [key["seconds_left"] for key in rested] == [MAX_REST_SECONDS] * 2
    assert [key["state"] for key in after] == ["resting", "resting"]
    assert len(lab.chat_keys) == 2
