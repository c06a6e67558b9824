"""Cache semantics, observed over HTTP against real loopback upstreams."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from localrouter.lists.cache import backoff_seconds
from tests.conftest import (
    PATIENCE_SECONDS,
    DaemonFactory,
    FakeClock,
    Upstream,
    UpstreamFactory,
    eventually,
    openai_compatible,
    settled,
)


async def ids_and_sources(client: Any) -> tuple[list[str], set[str]]:
    response = await client.get("/v1/models")
    assert response.status == 200
    data = (await response.json())["data"]
    return [m["id"] for m in data], {m["source"] for m in data}


def one_instance(up: Upstream, **cache: Any) -> dict[str, Any]:
    return {
        "providers": [openai_compatible("local", up.url)],
        "model_cache": {"provider_ttl_overrides": {"local": 100}, **cache},
    }


async def stats(client: Any) -> dict[str, Any]:
    response = await client.get("/api/cache/stats")
    assert response.status == 200
    answer: dict[str, Any] = await response.json()
    return answer


async def asked(up: Upstream) -> bool:
    return up.calls > 0


async def listed_once(client: Any, name: str) -> bool:
    """Whether instance `name` holds a list and no refresh of it is in flight."""
    status = (await stats(client))["instances"][name]
    return bool(status["count"]) and not status["refreshing"]


async def test_cache_hit_makes_no_upstream_call(upstream: UpstreamFactory, daemon: DaemonFactory):
    up = await upstream()
    up.serve_models(["m1", "m2"])
    client = await daemon(one_instance(up))
    ids, sources = await ids_and_sources(client)
    assert ids == ["local/m1", "local/m2"]
    assert sources == {"live"}
    calls = up.calls
    assert calls == 1  # the start-up warm-up and the first request shared one call
    for _ in range(5):
        await ids_and_sources(client)
    assert up.calls == calls


async def test_every_view_counts_one_hit_a_request(
    upstream: UpstreamFactory, daemon: DaemonFactory
):
    """A client view built on its first request counts that request once, as /v1/models
    does (its answer from memory, tried first, must not count a hit it did not serve)."""
    up = await upstream()
    up.serve_models(["m1"])
    client = await daemon(one_instance(up))
    await ids_and_sources(client)
    before = (await settled(client))["instances"]["local"]["hits"]
    for path in ("/api/tags", "/api/tags", "/v1/model/info", "/v1/models", "/api/tags"):
        assert (await client.get(path)).status == 200
    after = (await settled(client))["instances"]["local"]["hits"]
    assert after - before == 5


async def test_a_list_refreshed_before_it_expires_is_served_at_once(
    upstream: UpstreamFactory, daemon: DaemonFactory
):
    """What each caller was last served is kept until its lists expire, unless they change
    first: a list marked expired (/api/cache/clear) is served as stale on the next request,
    and the refresh that starts shows as soon as it is done, to the admin and a client
    alike."""
    up = await upstream()
    up.serve_models(["m1"])
    config = {
        **one_instance(up),
        "server": {"auth_token": "admin-token-0123"},
        "clients": [{"name": "editor", "token": "editor-token-0123", "allow": ["local/*"]}],
    }
    client = await daemon(config)
    as_admin = {"Authorization": "Bearer admin-token-0123"}
    as_editor = {"Authorization": "Bearer editor-token-0123"}

    async def listed(headers: dict[str, str]) -> list[tuple[str, str]]:
        response = await client.get("/v1/models", headers=headers)
        return [(m["id"], m["source"]) for m in (await response.json())["data"]]

    for _ in range(2):  # the second answer comes from what was kept
        assert await listed(as_admin) == await listed(as_editor) == [("local/m1", "live")]
    up.serve_models(["m1", "m2"])
    cleared = await client.post("/api/cache/clear", json={"instance": "local"}, headers=as_admin)
    assert cleared.status == 200
    assert await listed(as_editor) == [("local/m1", "stale")]
    await settled(client, as_admin)
    expected = [("local/m1", "live"), ("local/m2", "live")]
    assert await listed(as_admin) == await listed(as_editor) == expected


async def test_expiry_causes_exactly_one_refetch(
    upstream: UpstreamFactory, daemon: DaemonFactory, clock: FakeClock
):
    up = await upstream()
    up.serve_models(["m1"])
    client = await daemon(one_instance(up))
    await ids_and_sources(client)
    assert up.calls == 1

    up.serve_models(["m1", "m2"])
    clock.advance(101)
    # Expired: served at once (stale), one background refresh however many ask.
    results = await asyncio.gather(*(ids_and_sources(client) for _ in range(20)))
    assert all(ids == ["local/m1"] and sources == {"stale"} for ids, sources in results)
    await settled(client)
    assert up.calls == 2
    ids, sources = await ids_and_sources(client)
    assert ids == ["local/m1", "local/m2"]
    assert sources == {"live"}
    assert up.calls == 2


async def test_each_request_counts_one_lookup_per_instance(
    upstream: UpstreamFactory, daemon: DaemonFactory, clock: FakeClock
):
    """A fresh instance counts one hit per request even when another instance has expired
    (the fast path that finds the other one expired must not count the first one twice)."""
    first, second = await upstream(), await upstream()
    first.serve_models(["a"])
    second.serve_models(["b"])
    config = {
        "providers": [
            openai_compatible("first", first.url),
            openai_compatible("second", second.url),
        ],
        "model_cache": {"provider_ttl_overrides": {"first": 1000, "second": 10}},
    }
    client = await daemon(config)
    await ids_and_sources(client)
    before = (await settled(client))["instances"]

    for _ in range(3):
        await ids_and_sources(client)  # all fresh
    clock.advance(11)  # second expires, first stays fresh
    for _ in range(4):
        await ids_and_sources(client)
    after = (await settled(client))["instances"]

    assert after["first"]["hits"] - before["first"]["hits"] == 7
    assert after["first"]["misses"] == before["first"]["misses"]
    assert after["second"]["hits"] - before["second"]["hits"] >= 3  # the 3 while fresh
    assert after["second"]["hits"] - before["second"]["hits"] <= 7


async def test_concurrent_cold_requests_share_one_upstream_call(
    upstream: UpstreamFactory, daemon: DaemonFactory
):
    up = await upstream(gate=asyncio.Event())  # the list is held until every caller waits
    up.serve_models(["m1"])
    config = {
        "server": {"models_deadline_seconds": PATIENCE_SECONDS},
        "providers": [openai_compatible("local", up.url, timeout_seconds=10 * PATIENCE_SECONDS)],
    }
    client = await daemon(config)
    # The callers' own session, unlimited: all 200 requests are open at once (the test
    # client's pool of 100 would queue half of them, and the stats requests behind them).
    unlimited = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(str(client.make_url("/")), connector=unlimited) as callers:
        requests = [asyncio.create_task(ids_and_sources(callers)) for _ in range(200)]

        async def all_waiting() -> bool:
            return bool((await stats(client))["misses"] >= len(requests))

        await eventually(all_waiting, "200 requests waiting on the cold cache")
        assert up.gate is not None
        up.gate.set()
        results = await asyncio.gather(*requests)
    assert all(ids == ["local/m1"] for ids, _ in results)
    assert up.calls == 1


async def test_down_and_hanging_upstreams_do_not_block_the_others(
    upstream: UpstreamFactory, daemon: DaemonFactory, unused_tcp_port: int
):
    """The list is answered with the healthy instance's models while another instance's
    upstream holds its answer back (and its own timeout is far off) and a third is down."""
    healthy = await upstream()
    healthy.serve_models(["ok"])
    hanging = await upstream(gate=asyncio.Event())  # answers only once the test lets it
    hanging.serve_models(["late"])
    config = {
        "server": {"models_deadline_seconds": 0.5},
        "providers": [
            openai_compatible("down", f"http://127.0.0.1:{unused_tcp_port}/v1"),
            openai_compatible("hanging", hanging.url, timeout_seconds=10 * PATIENCE_SECONDS),
            openai_compatible("healthy", healthy.url),
        ],
    }
    client = await daemon(config)
    await eventually(lambda: asked(hanging), "the hanging upstream being asked")
    await eventually(lambda: listed_once(client, "healthy"), "the healthy list arriving")
    async with asyncio.timeout(PATIENCE_SECONDS):  # only how long a broken test takes to fail
        ids, _ = await ids_and_sources(client)
    assert ids == ["healthy/ok"]
    # Answered while the hanging fetch was still in flight: nothing waited for it to end.
    assert (await stats(client))["instances"]["hanging"]["refreshing"] is True
    assert hanging.calls == 1
    assert hanging.gate is not None
    hanging.gate.set()


async def test_slow_instance_appears_once_its_fetch_completes(
    upstream: UpstreamFactory, daemon: DaemonFactory
):
    fast = await upstream()
    fast.serve_models(["a"])
    slow = await upstream(gate=asyncio.Event())  # answers only once the test lets it
    slow.serve_models(["b"])
    config = {
        "server": {"models_deadline_seconds": 0.1},
        "providers": [openai_compatible("fast", fast.url), openai_compatible("slow", slow.url)],
    }
    client = await daemon(config)
    await eventually(lambda: asked(slow), "the slow upstream being asked")
    await eventually(lambda: listed_once(client, "fast"), "the fast list arriving")
    async with asyncio.timeout(PATIENCE_SECONDS):  # only how long a broken test takes to fail
        ids, _ = await ids_and_sources(client)
    assert ids == ["fast/a"]
    assert slow.gate is not None
    slow.gate.set()

    async def slow_listed() -> list[str] | None:
        ids, _ = await ids_and_sources(client)
        return ids if "slow/b" in ids else None

    assert await eventually(slow_listed, "the slow list arriving") == ["fast/a", "slow/b"]
    assert slow.calls == 1


async def test_failure_after_success_serves_stale_and_backs_off(
    upstream: UpstreamFactory, daemon: DaemonFactory, clock: FakeClock
):
    up = await upstream()
    up.serve_models(["m1"])
    client = await daemon(one_instance(up))
    await ids_and_sources(client)

    up.status = 500
    clock.advance(101)
    ids, sources = await ids_and_sources(client)
    assert (ids, sources) == (["local/m1"], {"stale"})
    stats = await settled(client)
    assert up.calls == 2
    assert "HTTP 500" in stats["instances"]["local"]["last_error"]
    for _ in range(5):  # within the backoff window: no new upstream call
        ids, sources = await ids_and_sources(client)
        assert (ids, sources) == (["local/m1"], {"stale"})
    assert up.calls == 2

    clock.advance(backoff_seconds(1) + 0.1)
    await ids_and_sources(client)
    await settled(client)
    assert up.calls == 3

    up.status = 200
    clock.advance(backoff_seconds(2) + 0.1)
    await ids_and_sources(client)
    stats = await settled(client)
    assert up.calls == 4
    assert stats["instances"]["local"]["last_error"] is None
    ids, sources = await ids_and_sources(client)
    assert (ids, sources) == (["local/m1"], {"live"})


async def test_empty_answer_never_replaces_a_good_list(
    upstream: UpstreamFactory, daemon: DaemonFactory, clock: FakeClock
):
    up = await upstream()
    up.serve_models(["m1"])
    client = await daemon(one_instance(up))
    await ids_and_sources(client)

    up.serve_models([])
    clock.advance(101)
    await ids_and_sources(client)
    stats = await settled(client)
    assert up.calls == 2
    assert "no models" in stats["instances"]["local"]["last_error"]
    ids, sources = await ids_and_sources(client)
    assert (ids, sources) == (["local/m1"], {"stale"})


@pytest.mark.parametrize(
    ("advance", "refetched"),
    [(50, {"by_name"}), (150, {"by_name", "by_type"}), (1100, {"by_name", "by_type", "default"})],
)
async def test_ttl_by_instance_name_beats_type_beats_default(
    upstream: UpstreamFactory,
    daemon: DaemonFactory,
    clock: FakeClock,
    advance: float,
    refetched: set[str],
):
    ups = {name: await upstream() for name in ("by_name", "by_type", "default")}
    for name, up in ups.items():
        up.serve_models([name])
    config = {
        "providers": [
            openai_compatible("by_name", ups["by_name"].url),
            openai_compatible("by_type", ups["by_type"].url),
            {"name": "default", "type": "openai", "base_url": ups["default"].url, "api_key": "k"},
        ],
        "model_cache": {
            "default_ttl_seconds": 1000,
            "provider_ttl_overrides": {"by_name": 10, "openai_compatible": 100},
        },
    }
    client = await daemon(config)
    await ids_and_sources(client)
    assert {name: up.calls for name, up in ups.items()} == dict.fromkeys(ups, 1)

    clock.advance(advance)
    await ids_and_sources(client)
    await settled(client)
    assert {name for name, up in ups.items() if up.calls == 2} == refetched
