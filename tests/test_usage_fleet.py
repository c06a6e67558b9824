"""In a fleet, each daemon keeps its own ledger and adds its daily totals to Redis, so that any
daemon reads the fleet's totals (`/api/usage?scope=fleet`). Two in-process daemons, one real
redis-server, one fake upstream (issue 34)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from localrouter.app import COMPONENTS
from tests.conftest import DaemonFactory, eventually
from tests.fleet_processes import RedisServer
from tests.test_fleet_foreign_data import connected
from tests.test_proxy import FakeOpenAI, fake

__all__ = ["fake"]  # the upstream fixture, shared with test_proxy.py


def config(redis_server: RedisServer, upstream: FakeOpenAI, ledger: Path) -> dict[str, Any]:
    return {
        "server": {"models_deadline_seconds": 60},
        "providers": [
            {
                "name": "up",
                "type": "openai_compatible",
                "base_url": f"{upstream.url}/v1",
                "pricing": {"input": 1.0, "output": 2.0},
            }
        ],
        "fleet": {"redis_url": redis_server.url, "key_prefix": "usage-test:"},
        "usage": {"path": str(ledger)},
    }


async def chat(client: Any) -> None:
    body = {"model": "up/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    answer = await client.post("/v1/chat/completions", json=body)
    assert answer.status == 200, await answer.text()


async def usage(client: Any, scope: str) -> dict[str, Any]:
    answer = await client.get(f"/api/usage?scope={scope}&group_by=model")
    assert answer.status == 200, await answer.text()
    rows: list[dict[str, Any]] = (await answer.json())["data"]
    assert len(rows) == 1, rows
    return rows[0]


async def test_two_daemons_usage_adds_up_in_the_fleets_totals(
    tmp_path: Path, redis_server: RedisServer, fake: FakeOpenAI, daemon: DaemonFactory
) -> None:
    """Two calls through one daemon and three through the other: each reads its own two or
    three locally, and five (tokens and cost too) from the fleet."""
    one = await connected(daemon, config(redis_server, fake, tmp_path / "one.sqlite3"))
    two = await connected(daemon, config(redis_server, fake, tmp_path / "two.sqlite3"))
    for client, calls in ((one, 2), (two, 3)):
        for _ in range(calls):
            await chat(client)
        await client.app[COMPONENTS].recorder.flush()
    assert (await usage(one, "local"))["requests"] == 2
    assert (await usage(two, "local"))["requests"] == 3

    async def all_five() -> bool:
        return bool((await usage(two, "fleet"))["requests"] == 5)

    await eventually(all_five, "both daemons' totals in Redis")
    fleet = await usage(one, "fleet")
    assert fleet["model"] == "up/gpt-4o-mini"
    assert fleet["input_tokens"] == 5 * 3  # FakeOpenAI reports 3 prompt tokens an answer
    assert fleet["output_tokens"] == 5 * 2
    assert fleet["cost_usd"] == pytest.approx(5 * (3 * 1e-06 + 2 * 2e-06))


async def test_scope_fleet_without_a_fleet_says_so(
    tmp_path: Path, fake: FakeOpenAI, daemon: DaemonFactory
) -> None:
    """Without fleet.redis_url, scope=fleet is a 400 naming the key that turns it on."""
    client = await daemon(
        {
            "providers": [
                {"name": "up", "type": "openai_compatible", "base_url": f"{fake.url}/v1"}
            ],
            "usage": {"path": str(tmp_path / "u.sqlite3")},
        }
    )
    answer = await client.get("/api/usage?scope=fleet")
    assert answer.status == 400
    assert "fleet.redis_url" in (await answer.json())["error"]["message"]
