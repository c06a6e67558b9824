"""Live config: edits apply without a restart, broken edits change nothing, no request fails."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from localrouter.app import COMPONENTS
from tests.conftest import (
    DaemonFactory,
    FakeClock,
    UpstreamFactory,
    eventually,
    openai_compatible,
    settled,
)


def write_config(path: Path, config: dict[str, Any]) -> None:
    """Write the way editors do: a temporary file renamed into place."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(yaml.safe_dump(config))
    os.replace(temporary, path)


async def watching(path: Path, config: dict[str, Any], daemon: DaemonFactory) -> Any:
    """The daemon started from `config`, which is written to `path` and watched there."""
    write_config(path, config)
    return await daemon(config, config_path=path)


async def one_instance_watched(
    tmp_path: Path, upstream: UpstreamFactory, daemon: DaemonFactory
) -> tuple[Any, Path, dict[str, Any]]:
    """Instance "one" serving model "a", from a watched config: (client, path, config)."""
    up = await upstream()
    up.serve_models(["a"])
    path = tmp_path / "config.yaml"
    config: dict[str, Any] = {"providers": [openai_compatible("one", up.url)]}
    return await watching(path, config, daemon), path, config


async def model_ids(client: Any) -> list[str]:
    response = await client.get("/v1/models")
    assert response.status == 200
    return [m["id"] for m in (await response.json())["data"]]


async def test_a_ttl_edit_applies_keeping_the_list(
    tmp_path: Path, upstream: UpstreamFactory, daemon: DaemonFactory, clock: FakeClock
):
    up = await upstream()
    up.serve_models(["m1"])
    path = tmp_path / "config.yaml"
    config: dict[str, Any] = {
        "providers": [openai_compatible("local", up.url)],
        "model_cache": {"provider_ttl_overrides": {"local": 1000}},
    }
    client = await watching(path, config, daemon)
    assert await model_ids(client) == ["local/m1"]

    config["model_cache"]["provider_ttl_overrides"]["local"] = 10
    write_config(path, config)

    async def ttl_is_ten() -> bool:
        stats = await (await client.get("/api/cache/stats")).json()
        return bool(stats["instances"]["local"]["ttl_seconds"] == 10)

    await eventually(ttl_is_ten, "the new TTL")
    body = await (await client.get("/v1/models")).json()
    assert [(m["id"], m["source"]) for m in body["data"]] == [("local/m1", "live")]
    assert up.calls == 1  # the list was kept, not refetched
    clock.advance(11)  # the new TTL counts from the original fetch
    body = await (await client.get("/v1/models")).json()
    assert body["data"][0]["source"] == "stale"


async def test_broken_file_changes_nothing_and_health_says_why(
    tmp_path: Path, upstream: UpstreamFactory, daemon: DaemonFactory
):
    up = await upstream()
    up.serve_models(["m1"])
    path = tmp_path / "config.yaml"
    config = {"providers": [openai_compatible("local", up.url)]}
    client = await watching(path, config, daemon)
    assert await model_ids(client) == ["local/m1"]
    assert (await (await client.get("/health")).json())["status"] == "ok"

    path.write_text("providers: [\n  - {name: local, type: openai_compatible\n")

    async def degraded() -> bool:
        return bool((await (await client.get("/health")).json())["status"] == "degraded")

    await eventually(degraded)
    health = await (await client.get("/health")).json()
    assert "not valid YAML" in health["config"]["error"]
    assert str(path) in health["config"]["error"]
    assert await model_ids(client) == ["local/m1"]

    write_config(path, {"providers": [openai_compatible("local", up.url)], "bogus": 1})
    await eventually(lambda: _error_contains(client, "bogus: unknown key"))
    assert await model_ids(client) == ["local/m1"]

    write_config(path, config)

    async def healthy() -> bool:
        return bool((await (await client.get("/health")).json())["status"] == "ok")

    await eventually(healthy)
    assert up.calls == 1


async def _error_contains(client: Any, text: str) -> bool:
    error = (await (await client.get("/health")).json())["config"]["error"]
    return error is not None and text in error


async def test_missing_variable_on_reload_keeps_the_old_config(
    tmp_path: Path, upstream: UpstreamFactory, daemon: DaemonFactory
):
    up = await upstream()
    up.serve_models(["m1"])
    path = tmp_path / "config.yaml"
    config = {"providers": [openai_compatible("local", up.url)]}
    client = await watching(path, config, daemon)
    reloader = client.app[COMPONENTS].reloader
    path.write_text(
        yaml.safe_dump(
            {"providers": [{**config["providers"][0], "headers": {"X-Org": "${NOT_SET_ANYWHERE}"}}]}
        )
    )
    assert await reloader.reload() is False
    assert "NOT_SET_ANYWHERE is not set" in (reloader.state.error or "")
    assert await model_ids(client) == ["local/m1"]


async def test_added_and_removed_instances_show_in_the_list(
    tmp_path: Path, upstream: UpstreamFactory, daemon: DaemonFactory
):
    first, second = await upstream(), await upstream()
    first.serve_models(["a"])
    second.serve_models(["b"])
    path = tmp_path / "config.yaml"
    one = {"providers": [openai_compatible("one", first.url)]}
    both = {
        "providers": [openai_compatible("one", first.url), openai_compatible("two", second.url)]
    }
    client = await watching(path, one, daemon)
    assert await model_ids(client) == ["one/a"]

    write_config(path, both)

    async def shows(expected: list[str]) -> bool:
        return await model_ids(client) == expected

    await eventually(lambda: shows(["one/a", "two/b"]))
    write_config(path, {"providers": [openai_compatible("two", second.url)]})
    await eventually(lambda: shows(["two/b"]))
    assert first.calls == 1  # "one" kept its list while it stayed


async def test_fifty_reloads_under_load_fail_no_request(
    tmp_path: Path, upstream: UpstreamFactory, daemon: DaemonFactory
):
    first, second = await upstream(), await upstream()
    first.serve_models(["a"])
    second.serve_models(["b"])
    path = tmp_path / "config.yaml"
    configs = [
        {"providers": [openai_compatible("one", first.url)]},
        {"providers": [openai_compatible("one", first.url), openai_compatible("two", second.url)]},
    ]
    client = await watching(path, configs[0], daemon)
    reloader = client.app[COMPONENTS].reloader
    stop = asyncio.Event()
    statuses: list[int] = []

    async def keep_asking() -> None:
        while not stop.is_set():
            response = await client.get("/v1/models")
            await response.read()
            statuses.append(response.status)

    async def answered_beyond(count: int) -> bool:
        return len(statuses) > count

    clients = [asyncio.create_task(keep_asking()) for _ in range(8)]
    for number in range(50):
        write_config(path, configs[(number + 1) % 2])  # each one differs from the last
        assert await reloader.reload()
        # At least one more request is answered after each reload before the next comes.
        beyond = functools.partial(answered_beyond, len(statuses))
        await eventually(beyond, f"a request answered after reload {number + 1}")
    stop.set()
    await asyncio.gather(*clients)
    assert len(statuses) > 50
    assert set(statuses) == {200}
    assert reloader.state.reloads == 50


async def test_sighup_reloads(tmp_path: Path, upstream: UpstreamFactory, daemon: DaemonFactory):
    up = await upstream()
    up.serve_models(["a"])
    path = tmp_path / "config.yaml"
    config = {"providers": [openai_compatible("one", up.url)]}
    write_config(path, config)
    client = await daemon(config, config_path=tmp_path / "elsewhere.yaml", handle_sighup=True)
    reloader = client.app[COMPONENTS].reloader
    reloader.path = path  # not watched: only the signal can bring the change in
    renamed = {"providers": [openai_compatible("renamed", up.url)]}
    path.write_text(yaml.safe_dump(renamed))
    os.kill(os.getpid(), signal.SIGHUP)

    async def renamed_shows() -> bool:
        return await model_ids(client) == ["renamed/a"]

    assert await eventually(renamed_shows, "the SIGHUP reload")
    assert reloader.state.reloads == 1


async def test_a_changed_port_needs_a_restart(
    tmp_path: Path, upstream: UpstreamFactory, daemon: DaemonFactory
):
    client, path, config = await one_instance_watched(tmp_path, upstream, daemon)
    assert await client.app[COMPONENTS].reloader.reload()
    write_config(path, {**config, "server": {"port": 9999}})
    assert await client.app[COMPONENTS].reloader.reload()
    health = await (await client.get("/health")).json()
    assert health["status"] == "degraded"
    assert health["config"]["restart_needed"] == ["server.port changed to 9999: restart to apply"]


async def test_a_changed_usage_ledger_needs_a_restart(
    tmp_path: Path, upstream: UpstreamFactory, daemon: DaemonFactory
):
    """The ledger is opened at start: turning it off (or moving it) says restart to apply,
    instead of looking applied."""
    client, path, config = await one_instance_watched(tmp_path, upstream, daemon)
    write_config(path, {**config, "usage": {"enabled": False}})
    assert await client.app[COMPONENTS].reloader.reload()
    health = await (await client.get("/health")).json()
    assert health["status"] == "degraded"
    assert health["config"]["restart_needed"] == ["usage changed: restart to apply"]
    write_config(path, config)
    assert await client.app[COMPONENTS].reloader.reload()
    health = await (await client.get("/health")).json()
    assert health["config"]["restart_needed"] == []


@pytest.mark.parametrize("body", [b"not json", b'{"instance": 3}', b'{"instance": "nope"}', b"[]"])
async def test_cache_clear_rejects_bad_bodies(
    body: bytes, upstream: UpstreamFactory, daemon: DaemonFactory
):
    up = await upstream()
    client = await daemon({"providers": [openai_compatible("one", up.url)]})
    response = await client.post("/api/cache/clear", data=body)
    assert response.status == 400
    assert (await response.json())["error"]["type"] == "invalid_request_error"


async def test_cache_clear_keeps_lists_as_stale(upstream: UpstreamFactory, daemon: DaemonFactory):
    first, second = await upstream(), await upstream()
    first.serve_models(["a"])
    second.serve_models(["b"])
    client = await daemon(
        {"providers": [openai_compatible("one", first.url), openai_compatible("two", second.url)]}
    )
    await model_ids(client)
    first.status = 500  # the refresh after clearing fails: the list must survive
    response = await client.post("/api/cache/clear", json={"instance": "one"})
    assert (await response.json()) == {"success": True, "cleared": ["one"]}
    body = await (await client.get("/v1/models")).json()
    assert {m["id"]: m["source"] for m in body["data"]} == {"one/a": "stale", "two/b": "live"}
    response = await client.post("/api/cache/clear")
    assert (await response.json())["cleared"] == ["one", "two"]
    providers = (await (await client.get("/api/providers")).json())["providers"]
    assert [p["name"] for p in providers] == ["one", "two"]
    assert providers[0]["base_url"] == first.url


async def test_token_and_cors_origins_apply_without_a_restart(
    tmp_path: Path, upstream: UpstreamFactory, daemon: DaemonFactory
):
    client, path, config = await one_instance_watched(tmp_path, upstream, daemon)
    origin = {"Origin": "http://app.test"}
    opened = await client.get("/v1/models", headers=origin)
    assert opened.status == 200
    assert "Access-Control-Allow-Origin" not in opened.headers

    server = {"auth_token": "rotated-token-77", "cors_origins": ["http://app.test"]}
    write_config(path, {**config, "server": server})
    assert await client.app[COMPONENTS].reloader.reload()
    assert (await client.get("/v1/models")).status == 401
    allowed = await client.get(
        "/v1/models", headers={**origin, "Authorization": "Bearer rotated-token-77"}
    )
    assert allowed.status == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == "http://app.test"

    write_config(path, config)  # and back: the token is gone again
    assert await client.app[COMPONENTS].reloader.reload()
    assert (await client.get("/v1/models")).status == 200


async def test_a_config_written_into_a_folder_made_after_start_is_loaded_and_watched(
    tmp_path: Path, upstream: UpstreamFactory, daemon: DaemonFactory
):
    """A first run: ~/.config/localrouter/ does not exist when the daemon starts."""
    up = await upstream()
    up.serve_models(["a"])
    path = tmp_path / "config-home" / "localrouter" / "config.yaml"
    client = await daemon({"providers": []}, config_path=path)

    async def origin() -> str:
        return str((await (await client.get("/health")).json())["config"]["origin"])

    assert await origin() == "<embedded default>"
    path.parent.mkdir(parents=True)
    config: dict[str, Any] = {"providers": [openai_compatible("one", up.url)]}
    write_config(path, config)

    def listed(wanted: list[str]) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return await model_ids(client) == wanted

        return check

    await eventually(listed(["one/a"]), "the new file being loaded")
    assert await origin() == str(path)

    config["providers"].append(openai_compatible("two", up.url))
    write_config(path, config)  # a later edit is watched too
    await eventually(listed(["one/a", "two/a"]), "the edit being applied")


async def test_counters_never_go_back_across_a_reload(
    tmp_path: Path, upstream: UpstreamFactory, daemon: DaemonFactory, clock: FakeClock
):
    client, path, config = await one_instance_watched(tmp_path, upstream, daemon)
    await model_ids(client)
    clock.advance(10_000)  # expired: the next request refreshes it
    await model_ids(client)
    await settled(client)

    async def counted() -> tuple[int, int, float]:
        """(the total, instance one's count, instance one's Prometheus counter)"""
        stats = await (await client.get("/api/cache/stats")).json()
        metrics = await (await client.get("/metrics")).text()
        prefix = 'localrouter_upstream_calls_total{instance="one"} '
        line = next(x for x in metrics.splitlines() if x.startswith(prefix))
        return (
            stats["upstream_calls"],
            stats["instances"].get("one", {}).get("upstream_calls"),
            float(line.removeprefix(prefix)),
        )

    async def reloads(count: int) -> Callable[[], Awaitable[bool]]:
        async def done() -> bool:
            health = await (await client.get("/health")).json()
            return bool(health["config"]["reloads"] == count)

        return done

    assert await counted() == (2, 2, 2.0)

    config["providers"][0]["timeout_seconds"] = 7  # a changed instance is rebuilt
    write_config(path, config)
    await eventually(await reloads(1), "the reload")
    total, one, prometheus = await counted()
    assert total >= 2
    assert one is not None
    assert one >= 2
    assert prometheus >= 2.0

    config["providers"] = [openai_compatible("other", config["providers"][0]["base_url"])]
    write_config(path, config)  # "one" is removed: the totals keep its calls
    await eventually(await reloads(2), "the second reload")
    total, one, prometheus = await counted()
    assert total >= 2
    assert one is None
    assert prometheus >= 2.0
