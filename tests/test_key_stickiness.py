"""A session sticks to one key of a pool (each key has its own prompt cache upstream): its turns
all use the key that first served it while that key is usable, a 429 on it moves the session to
another key once, and requests of no session take the keys in turn. The ledger shows which key
position served each call (issue 35)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
from aiohttp import web

from localrouter.app import COMPONENTS
from tests.conftest import DaemonFactory
from tests.test_proxy import completion

KEYS = ["sk-pool-key-one-111111", "sk-pool-key-two-222222"]


class KeyedUpstream:
    """An OpenAI-compatible upstream that notes the key of every chat, and can rest one."""

    def __init__(self) -> None:
        self.keys: list[int] = []
        self.limited: set[int] = set()  # keys answered 429 once, then forgotten

    async def chat(self, request: web.Request) -> web.Response:
        key = KEYS.index(request.headers["Authorization"].removeprefix("Bearer "))
        body = await request.json()
        self.keys.append(key)
        if key in self.limited:
            self.limited.discard(key)
            error = {"error": {"message": "rate limited", "type": "requests"}}
            return web.json_response(error, status=429, headers={"Retry-After": "30"})
        return web.json_response(completion(body["model"], f"key {key}"))

    async def models(self, _: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})


async def started(
    aiohttp_server: Any, daemon: DaemonFactory, tmp_path: Path, *, ledger: bool = True
) -> tuple[Any, KeyedUpstream]:
    upstream = KeyedUpstream()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", upstream.chat)
    app.router.add_get("/v1/models", upstream.models)
    server = await aiohttp_server(app)
    pool = {
        "name": "pool",
        "type": "openai_compatible",
        "base_url": str(server.make_url("/v1")),
        "api_keys": KEYS,
    }
    usage = {"path": str(tmp_path / "u.sqlite3")} if ledger else {"enabled": False}
    client = await daemon({"providers": [pool], "usage": usage})
    return client, upstream


def sdk(client: Any, session: str | None) -> openai.AsyncOpenAI:
    headers = {"x-localrouter-session": session} if session else {}
    return openai.AsyncOpenAI(
        base_url=str(client.make_url("/v1")),
        api_key="unused",
        default_headers=headers,
        max_retries=0,
    )


async def turn(api: openai.AsyncOpenAI) -> str:
    raw = await api.chat.completions.with_raw_response.create(
        model="pool/m", messages=[{"role": "user", "content": "next turn"}]
    )
    return raw.headers["x-localrouter-request-id"]


async def test_a_sessions_turns_stay_on_one_key_while_others_alternate(
    aiohttp_server: Any, daemon: DaemonFactory, tmp_path: Path
) -> None:
    """Session A's 20 turns use one key; requests of no session alternate between the two;
    session B sticks to its own key; the ledger records each call's key position."""
    client, upstream = await started(aiohttp_server, daemon, tmp_path)
    async with (
        sdk(client, "session-a") as a,
        sdk(client, None) as anyone,
        sdk(client, "session-b") as b,
    ):
        ids = []
        for _ in range(20):  # two others between turns: taken in turn, A would alternate
            ids.append(await turn(a))
            await turn(anyone)
            await turn(anyone)
        first_b = len(upstream.keys)
        for _ in range(5):
            await turn(b)
    a_keys = upstream.keys[0:60:3]
    anyone_keys = [key for index, key in enumerate(upstream.keys[:60]) if index % 3]
    assert len(set(a_keys)) == 1
    assert set(anyone_keys) == {0, 1}
    assert len(set(upstream.keys[first_b:])) == 1
    await client.app[COMPONENTS].recorder.flush()
    for request_id in ids:
        row = await client.app[COMPONENTS].ledger.generation(request_id)
        assert row is not None
        assert row["key_position"] == a_keys[0]
        assert row["session"] == "session-a"


async def test_a_429_on_a_sessions_key_moves_the_session_once(
    aiohttp_server: Any, daemon: DaemonFactory, tmp_path: Path
) -> None:
    """The session's key answers 429: that turn is retried on the other key, and every later
    turn stays there (the first key rests for 30 s by the test's clock, which stands still)."""
    client, upstream = await started(aiohttp_server, daemon, tmp_path)
    async with sdk(client, "session-a") as a:
        await turn(a)
        home = upstream.keys[0]
        upstream.limited.add(home)
        moved_id = await turn(a)
        for _ in range(5):
            await turn(a)
    other = 1 - home
    assert upstream.keys == [home, home, *[other] * 6]
    await client.app[COMPONENTS].recorder.flush()
    row = await client.app[COMPONENTS].ledger.generation(moved_id)
    assert row is not None
    assert (row["key_position"], row["attempts"]) == (other, 2)


async def test_without_the_ledger_a_session_keeps_its_key_and_every_answer_its_own_id(
    aiohttp_server: Any, daemon: DaemonFactory, tmp_path: Path
) -> None:
    """With nothing reading a call's record (no ledger, limits or tracing) none is made: the
    session still sticks to one key, and every answer and refusal still has a request id of
    its own."""
    client, upstream = await started(aiohttp_server, daemon, tmp_path, ledger=False)
    async with sdk(client, "session-a") as a, sdk(client, None) as anyone:
        ids = []
        for _ in range(5):
            ids.append(await turn(a))
            ids.append(await turn(anyone))
    assert len(set(upstream.keys[0::2])) == 1
    assert set(upstream.keys[1::2]) == {0, 1}
    refused = await client.post("/v1/chat/completions", json={"model": "nowhere/m", "messages": []})
    assert refused.status == 404
    ids.append(refused.headers["x-localrouter-request-id"])
    assert len(set(ids)) == 11
    assert all(request_id.startswith("gen-") for request_id in ids)
