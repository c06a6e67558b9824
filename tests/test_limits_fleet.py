"""One dollar budget kept by a fleet: three real daemons and one real redis-server.

Each call reserves its expected cost in Redis before it is made and settles to its real cost
after; so the fleet spends the budget once, not once per daemon. With Redis stopped, each
daemon goes on with its own counts: traffic flows, /health says degraded, and each daemon
holds its own traffic to the whole budget.

The numbers are chosen so that every outcome is exact: a request of BODY_BYTES bytes with
max_tokens MAX_TOKENS reserves (30 + 20) tokens at PRICE, 0.005 USD; the upstream reports 30
prompt and 10 completion tokens, so a call really costs 0.004 USD. No sum of whole calls
plus a reservation ever lands on the budget, so no comparison hangs on a rounding error.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import eventually
from tests.fleet_processes import DaemonProcess, RedisServer

BUDGET = 0.05  # clients[agent].limits.usd_per_day
PRICE = 100.0  # USD per million tokens, input and output alike
BODY_BYTES = 120  # the input is estimated at BODY_BYTES / 4 = 30 tokens
MAX_TOKENS = 20
RESERVED = (BODY_BYTES // 4 + MAX_TOKENS) * PRICE / 1e6  # what each call reserves: 0.005
PROMPT_TOKENS, COMPLETION_TOKENS = 30, 10  # what the upstream reports for every answer
COST = (PROMPT_TOKENS + COMPLETION_TOKENS) * PRICE / 1e6  # what each call really costs: 0.004
WHOLE_CALLS = int(BUDGET / COST)  # 12 calls fit the budget, 0.048 of it
EXACT = 1e-9  # float sums of these prices; every real margin is at least 0.001

MODEL = "up/m"
CLIENT_TOKEN = "agent-token-0123456789"
ADMIN_TOKEN = "admin-token-0123456789"
CLIENT = {"Authorization": f"Bearer {CLIENT_TOKEN}", "Content-Type": "application/json"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CONCURRENT = 4  # calls in flight at once in each round of the shared phase


def request_body() -> bytes:
    """A chat request of exactly BODY_BYTES bytes (its reservation's input estimate)."""

    def body(text: str) -> bytes:
        message = {"role": "user", "content": text}
        return orjson.dumps({"model": MODEL, "max_tokens": MAX_TOKENS, "messages": [message]})

    padding = BODY_BYTES - len(body(""))
    assert padding > 0
    return body("x" * padding)


BODY = request_body()


class PricedUpstream:
    """An OpenAI-compatible provider on loopback whose every answer reports the same usage,
    and which counts the calls that reached it."""

    def __init__(self) -> None:
        self.chats = 0
        self.server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/v1"))

    async def models(self, _: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})

    async def chat(self, _: web.Request) -> web.Response:
        self.chats += 1
        message = {"role": "assistant", "content": "ok"}
        usage = {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        }
        return web.json_response(
            {
                "id": f"c{self.chats}",
                "object": "chat.completion",
                "created": 1,
                "model": "m",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": usage,
            }
        )


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: dict[str, Any]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as client:
        yield client


@pytest.fixture
async def upstream(
    aiohttp_server: Callable[[web.Application], Awaitable[TestServer]],
) -> PricedUpstream:
    priced = PricedUpstream()
    app = web.Application()
    app.router.add_get("/v1/models", priced.models)
    app.router.add_post("/v1/chat/completions", priced.chat)
    priced.server = await aiohttp_server(app)
    return priced


def fleet_config(
    redis_server: RedisServer, upstream: PricedUpstream, limits: dict[str, Any]
) -> dict[str, Any]:
    """A daemon's config: the priced instance, the fleet on `redis_server`, the admin token,
    and the client `agent` held to `limits`."""
    return {
        "server": {"models_deadline_seconds": 60, "auth_token": ADMIN_TOKEN},
        "providers": [
            {
                "name": "up",
                "type": "openai_compatible",
                "base_url": upstream.url,
                "pricing": {"input": PRICE, "output": PRICE},
            }
        ],
        "fleet": {"redis_url": redis_server.url, "key_prefix": "limits-test:"},
        "clients": [{"name": "agent", "token": CLIENT_TOKEN, "limits": limits}],
    }


@pytest.fixture
async def daemons(
    tmp_path: Path,
    redis_server: RedisServer,
    upstream: PricedUpstream,
    session: aiohttp.ClientSession,
) -> AsyncIterator[list[DaemonProcess]]:
    """Three daemons with one config: the agent's budget, the priced instance, the fleet."""
    config = fleet_config(redis_server, upstream, {"usd_per_day": BUDGET})
    config["limits"] = {"usd_per_day": None, "timezone": "UTC"}
    started = [DaemonProcess(tmp_path / f"daemon-{i}", config, {}) for i in range(3)]
    try:
        for daemon in started:
            daemon.start()
        for daemon in started:
            await daemon.ready(session)
            await eventually(partial(_connected, session, daemon), "the daemon on Redis")
        yield started
    finally:
        for daemon in started:
            daemon.stop()


async def _health(session: aiohttp.ClientSession, daemon: DaemonProcess) -> dict[str, Any]:
    async with session.get(f"{daemon.url}/health") as reply:
        assert reply.status == 200, await reply.text()
        health: dict[str, Any] = await reply.json()
        return health


async def _connected(session: aiohttp.ClientSession, daemon: DaemonProcess) -> bool:
    return bool((await _health(session, daemon))["fleet"]["connected"])


async def _degraded(session: aiohttp.ClientSession, daemon: DaemonProcess) -> bool:
    health = await _health(session, daemon)
    reasons: list[str] = health["reasons"]
    return health["status"] == "degraded" and any("redis" in reason for reason in reasons)


async def chat(session: aiohttp.ClientSession, daemon: DaemonProcess) -> Answer:
    async with session.post(
        f"{daemon.url}/v1/chat/completions", data=BODY, headers=CLIENT
    ) as reply:
        return Answer(reply.status, dict(reply.headers), await reply.json())


def assert_budget_refusal(answer: Answer) -> None:
    """The refusal of a spent budget: 429 insufficient_quota, and no retry invited."""
    assert answer.status == 429, answer
    error = answer.body["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "budget_exceeded"), answer
    assert answer.headers.get("x-should-retry") == "false", answer.headers
    assert "Retry-After" not in answer.headers, answer.headers


async def budget_row(session: aiohttp.ClientSession, daemon: DaemonProcess) -> dict[str, Any]:
    """The agent's usd_per_day row of /api/limits, with the answer's overall `counted`."""
    async with session.get(f"{daemon.url}/api/limits", headers=ADMIN) as reply:
        assert reply.status == 200, await reply.text()
        shown = await reply.json()
    [row] = [r for r in shown["data"] if (r["client"], r["limit"]) == ("agent", "usd_per_day")]
    assert row["value"] == BUDGET
    return {**row, "overall": shown["counted"]}


async def fleet_count(session: aiohttp.ClientSession, daemon: DaemonProcess, calls: int) -> None:
    """Wait for the fleet's count in Redis to be `calls` calls at their real cost: settling is
    batched in the background, and a reservation is larger than a real cost, so exactly
    calls * COST means that every call has settled."""
    seen: dict[str, Any] = {}

    async def settled() -> bool:
        seen.update(await budget_row(session, daemon))
        return bool(seen["counted"] == "fleet" and abs(seen["used"] - calls * COST) < EXACT)

    try:
        await eventually(settled, f"{calls} calls settled in Redis")
    except AssertionError as failed:
        trouble = redis_trouble([daemon])
        raise AssertionError(f"{failed}; last seen on {daemon.url}: {seen}\n{trouble}") from None


async def own_count(session: aiohttp.ClientSession, daemon: DaemonProcess) -> float:
    """This daemon's own count once none of its calls holds a reservation any more."""

    async def settled() -> dict[str, Any]:
        row = await budget_row(session, daemon)
        return row if row["reserved"] == 0 else {}

    row = await eventually(settled, f"the calls on {daemon.url} settled")
    assert (row["counted"], row["overall"]) == ("daemon", "daemon (redis unreachable)"), row
    used: float = row["used"]
    return used


def redis_trouble(daemons: list[DaemonProcess]) -> str:
    """What the daemons logged of losing Redis: a daemon starved past fleet.OP_SECONDS (a
    very busy machine) counts alone for a while, which would explain a failure here."""
    lines = [line for d in daemons for line in d.log().splitlines() if "fleet.redis_" in line]
    return "\n".join(lines) or "no Redis trouble logged"


async def test_one_budget_across_three_daemons_then_each_alone_without_redis(
    redis_server: RedisServer,
    upstream: PricedUpstream,
    daemons: list[DaemonProcess],
    session: aiohttp.ClientSession,
) -> None:
    """The fleet spends the budget once (to within one reservation), and a daemon that served
    one call refuses as soon as the others spent the rest: it counts in Redis, not alone.
    With Redis gone, nothing is refused for that; each daemon counts its own calls only (what
    it served, settled, stays its count) and admits exactly while its own spend plus one
    reservation fits the budget, which lets the quiet one spend what the fleet refused. With
    Redis back but empty, no daemon spends its budget a second time."""
    busy, other, quiet = daemons
    served = {daemon.port: 0 for daemon in daemons}

    # Redis up: the quiet daemon serves one call, the two others the rest, four at a time.
    answer = await chat(session, quiet)
    assert answer.status == 200, answer
    served[quiet.port] += 1
    await fleet_count(session, quiet, 1)
    for round_ in range(WHOLE_CALLS):
        targets = [busy, other] * (CONCURRENT // 2)
        answers = await asyncio.gather(*(chat(session, daemon) for daemon in targets))
        for daemon, answer in zip(targets, answers, strict=True):
            if answer.status == 200:
                served[daemon.port] += 1
            else:
                assert_budget_refusal(answer)
        total = sum(served.values())
        await fleet_count(session, daemons[round_ % 3], total)
        if total * COST + RESERVED > BUDGET:  # settled, the fleet has no room for one more
            break
    else:
        raise AssertionError(f"the budget never ran out: {served}\n{redis_trouble(daemons)}")
    spent = total * COST
    assert BUDGET - RESERVED < spent <= BUDGET + RESERVED, (served, redis_trouble(daemons))
    # Sharper here, each real cost being under its reservation: never past the budget, and
    # refused only when no whole call fits any more.
    assert total == WHOLE_CALLS, (served, redis_trouble(daemons))
    for daemon in (quiet, busy, other):  # the quiet one too, with 0.004 spent through it
        assert_budget_refusal(await chat(session, daemon))
    assert served[quiet.port] == 1
    assert upstream.chats == total  # a refused call never reached the upstream

    # Redis stopped: each daemon alone, from its own settled count.
    redis_server.kill()
    for daemon in daemons:
        await eventually(partial(_degraded, session, daemon), "/health degraded")

    async def alone(daemon: DaemonProcess) -> int:
        """Call `daemon` one call at a time until it refuses; the calls it admitted."""
        own = served[daemon.port]
        admitted = 0
        while True:
            spent = (own + admitted) * COST  # what it served, before Redis went and since
            assert await own_count(session, daemon) == pytest.approx(spent, abs=EXACT)
            answer = await chat(session, daemon)
            if spent + RESERVED <= BUDGET:
                assert answer.status == 200, (answer, spent)
                admitted += 1
            else:
                assert_budget_refusal(answer)
                return admitted

    before = upstream.chats
    admitted = await asyncio.gather(*(alone(daemon) for daemon in daemons))
    assert upstream.chats == before + sum(admitted)
    for daemon, more in zip(daemons, admitted, strict=True):
        # Its own calls, before and since, add up to the most one daemon may spend alone.
        own = (served[daemon.port] + more) * COST
        assert BUDGET - RESERVED < own <= BUDGET, (daemon.port, served, admitted)
    assert admitted[2] == WHOLE_CALLS - 1  # the quiet one: from its own 0.004 to 0.048
    assert all(more > 0 for more in admitted), admitted  # each admits what the fleet refused

    # Redis back, empty (it kept nothing on disk): the fleet's counts start from nothing, and
    # a daemon's own never count less than what it spent, so each still refuses.
    await redis_server.start()
    for daemon in daemons:
        await eventually(partial(_connected, session, daemon), "the fleet reconnected")
        assert_budget_refusal(await chat(session, daemon))
    assert upstream.chats == before + sum(admitted)


async def pause_redis(redis_server: RedisServer, milliseconds: int) -> None:
    """Redis holds every client's commands for `milliseconds` (CLIENT PAUSE), then runs
    them: as a Redis busy or stalled a moment would."""
    reader, writer = await asyncio.open_connection("127.0.0.1", redis_server.port)
    writer.write(f"CLIENT PAUSE {milliseconds} ALL\r\n".encode())
    await writer.drain()
    assert await reader.readline() == b"+OK\r\n"
    writer.close()
    await writer.wait_closed()


async def test_a_client_leaving_while_redis_is_asked_holds_no_slot(
    tmp_path: Path,
    redis_server: RedisServer,
    upstream: PricedUpstream,
    session: aiohttp.ClientSession,
) -> None:
    """max_parallel 1 in a fleet: a client that leaves while its admission waits on Redis
    (paused) holds no slot, neither in this daemon's counts nor in Redis's, whether Redis
    drops the admission with the closed connection (a pause longer than a Redis call may
    take) or runs it once the pause ends (a shorter one): the next call is admitted."""
    config = fleet_config(redis_server, upstream, {"max_parallel": 1})
    daemon = DaemonProcess(tmp_path / "daemon", config, {})
    daemon.start()
    try:
        await daemon.ready(session)
        await eventually(partial(_connected, session, daemon), "the daemon on Redis")
        assert (await chat(session, daemon)).status == 200  # the list is fetched, the slot free

        async def admitted() -> bool:
            answer = await chat(session, daemon)
            assert answer.status in (200, 429), answer
            return answer.status == 200

        async def nothing_held_in_redis() -> bool:
            async with session.get(f"{daemon.url}/api/limits", headers=ADMIN) as reply:
                shown = await reply.json()
            [row] = [r for r in shown["data"] if r["limit"] == "max_parallel"]
            return bool(row["counted"] == "fleet" and row["used"] == 0)

        for pause, leave_after in ((1500, 0.3), (350, 0.1)):
            await pause_redis(redis_server, pause)
            leaving = aiohttp.ClientTimeout(total=leave_after)
            with pytest.raises(TimeoutError):
                await session.post(
                    f"{daemon.url}/v1/chat/completions", data=BODY, headers=CLIENT, timeout=leaving
                )
            assert await redis_server.answers(), "Redis after its pause"
            await eventually(partial(_connected, session, daemon), "the fleet answering")
            await eventually(nothing_held_in_redis, f"no slot held in Redis after {pause} ms")
            await eventually(admitted, f"a call admitted after a {pause} ms pause")
    finally:
        daemon.stop()
    assert "Traceback" not in daemon.log(), daemon.log()
