"""Issue 37's request log over real sockets: every call route writes its record (with what the
upstream answered, the error and the path taken) and its bodies as `request_log.bodies` says,
cut at the cap; no secret is stored or shown; cursor paging holds while requests arrive;
retention of bodies and rows by the test's clock; a client sees its own requests only. The
live stream: tests/test_request_log_stream.py."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
from aiohttp.test_utils import TestServer

from localrouter.app import COMPONENTS
from localrouter.reqlog.capture import opened
from tests.conftest import DaemonFactory, FakeClock
from tests.usage_wires import (
    HELLO,
    TEXT,
    UPSTREAM_KEY,
    Wires,
    anthropic_sdk,
    ledger_config,
    ollama_sdk,
    openai_sdk,
    start_wires,
)

ADMIN = "admin-reqlog-token-2b7e"
ALICE = "alice-reqlog-token-5c1d"
BOB = "bob-reqlog-token-90af"
SECRETS = (ADMIN, ALICE, BOB, UPSTREAM_KEY)

Client = Any


@pytest.fixture
async def wires(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Wires:
    return await start_wires(aiohttp_server)


def logged(tmp_path: Path, wires: Wires, **request_log: Any) -> dict[str, Any]:
    """The usage wires' instances, the admin's token, clients alice and bob, and
    `request_log:` as given."""
    clients = [{"name": "alice", "token": ALICE}, {"name": "bob", "token": BOB}]
    return ledger_config(
        tmp_path,
        wires.instances(),
        server={"auth_token": ADMIN},
        clients=clients,
        request_log=request_log,
    )


async def read(client: Client, path: str, token: str = ADMIN) -> Any:
    await client.app[COMPONENTS].recorder.flush()
    answer = await client.get(path, headers={"Authorization": f"Bearer {token}"})
    assert answer.status == 200, await answer.text()
    return await answer.json()


async def one(client: Client, request_id: str, token: str = ADMIN) -> dict[str, Any]:
    data: dict[str, Any] = (await read(client, f"/api/requests/{request_id}", token))["data"]
    return data


async def openai_chat(client: Client, stream: bool, model: str = "oa/gpt-4o-mini") -> str:
    async with openai_sdk(client, ALICE) as api:
        raw = await api.chat.completions.with_raw_response.create(
            model=model, messages=HELLO, stream=stream
        )
        if stream:
            said = "".join([part.choices[0].delta.content or "" async for part in raw.parse()])
        else:
            said = raw.parse().choices[0].message.content or ""
        assert said == TEXT
        return raw.headers["x-localrouter-request-id"]


async def messages(client: Client, model: str, stream: bool) -> str:
    async with anthropic_sdk(client, ALICE) as api:
        raw = await api.messages.with_raw_response.create(
            model=model, max_tokens=64, messages=HELLO, stream=stream
        )
        parsed = await raw.parse()
        if stream:
            async for _ in parsed:
                pass
        return raw.headers["x-localrouter-request-id"]


async def responses(client: Client, stream: bool) -> str:
    async with openai_sdk(client, ALICE) as api:
        raw = await api.responses.with_raw_response.create(
            model="lab/qwen3-coder", input="Say hello.", stream=stream
        )
        if stream:
            async for _ in raw.parse():
                pass
        return raw.headers["x-localrouter-request-id"]


async def ollama_chat(client: Client, stream: bool) -> str:
    ids: list[str] = []
    async with ollama_sdk(client, ids, ALICE) as api:
        if stream:
            async for _ in await api.chat(model="home/qwen3:8b", messages=HELLO, stream=True):
                pass
        else:
            await api.chat(model="home/qwen3:8b", messages=HELLO)
    return ids[-1]


Call = Callable[[Client, bool], Awaitable[str]]


@pytest.mark.parametrize(
    ("call", "path", "wire"),
    [
        (openai_chat, "native", "chat"),
        (lambda client, stream: openai_chat(client, stream, "lab/qwen3-coder"), "native", "chat"),
        (
            lambda client, stream: messages(client, "claude/claude-sonnet-4-5", stream),
            "native",
            "anthropic",
        ),
        (lambda client, stream: messages(client, "lab/qwen3-coder", stream), "translated", "chat"),
        (responses, "translated", "chat"),
        (ollama_chat, "native", "ollama"),
    ],
    ids=[
        "chat",
        "chat-compatible",
        "messages-native",
        "messages-translated",
        "responses",
        "ollama",
    ],
)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_every_call_route_writes_its_record_and_its_bodies(
    daemon: DaemonFactory,
    tmp_path: Path,
    wires: Wires,
    call: Call,
    path: str,
    wire: str,
    stream: bool,
) -> None:
    """bodies: all: the record says what the upstream answered and the path taken; the
    request is kept as the client sent it, its credentials redacted in the headers; a whole
    answer as the client got it, a stream as the answer it carried (its text)."""
    client = await daemon(logged(tmp_path, wires, bodies="all"))
    request_id = await call(client, stream)
    record = await one(client, request_id)
    assert (record["status"], record["upstream_status"], record["path"]) == (200, 200, path)
    assert record["client"] == "alice"
    bodies = record["bodies"]
    assert bodies["request"]["stream"] is stream or (wire == "ollama" and not stream)
    assert bodies["headers"]["Authorization"] == "***"
    assert not bodies["request_truncated"]
    assert not bodies["response_truncated"]
    if stream:
        assert bodies["response_kind"] == f"stream:{wire}"
        assert bodies["response"]["text"] == TEXT
    else:
        assert bodies["response_kind"] == "body"
        assert TEXT in orjson.dumps(bodies["response"]).decode()


async def test_embeddings_and_completions_write_their_records(
    daemon: DaemonFactory, tmp_path: Path, wires: Wires
) -> None:
    client = await daemon(logged(tmp_path, wires, bodies="all"))
    async with openai_sdk(client, ALICE) as api:
        embedded = await api.embeddings.with_raw_response.create(
            model="oa/text-embedding-3-small", input="hello"
        )
        completed = await api.completions.with_raw_response.create(
            model="oa/gpt-4o-mini", prompt="Say hello."
        )
    for raw, route in ((embedded, "/v1/embeddings"), (completed, "/v1/completions")):
        record = await one(client, raw.headers["x-localrouter-request-id"])
        assert record["route"] == route
        assert record["bodies"]["response_kind"] == "body"


async def test_errors_keeps_only_failed_calls_bodies_and_off_keeps_none(
    daemon: DaemonFactory, tmp_path: Path, wires: Wires
) -> None:
    """bodies: errors keeps the bodies of a call the upstream refused (its error's message on
    the record too), not of one that answered; with bodies off (the default, and YAML's bare
    `off`) the record is there without bodies."""
    client = await daemon(logged(tmp_path, wires, bodies="errors"))
    answered = await openai_chat(client, False)
    async with openai_sdk(client, ALICE) as api:
        with pytest.raises(openai.InternalServerError) as refused:
            await api.chat.completions.create(model="oa/overloaded", messages=HELLO)
    failed = refused.value.response.headers["x-localrouter-request-id"]
    assert (await one(client, answered))["bodies"] is None
    record = await one(client, failed)
    assert (record["status"], record["upstream_status"]) == (503, 503)
    assert record["error"] == "The server is overloaded"
    assert record["bodies"]["response"]["error"]["message"] == "The server is overloaded"

    client = await daemon(logged(tmp_path, wires, bodies=False))  # `bodies: off` in YAML
    record = await one(client, await openai_chat(client, True))
    assert record["bodies"] is None
    assert record["upstream_status"] == 200


async def test_our_own_refusal_is_recorded_with_its_message(
    daemon: DaemonFactory, tmp_path: Path, wires: Wires
) -> None:
    client = await daemon(logged(tmp_path, wires, bodies="errors"))
    async with openai_sdk(client, ALICE) as api:
        with pytest.raises(openai.NotFoundError) as refused:
            await api.chat.completions.create(model="nowhere/none", messages=HELLO)
    record = await one(client, refused.value.response.headers["x-localrouter-request-id"])
    assert record["status"] == 404
    assert record["upstream_status"] is None
    body: Any = refused.value.body
    assert record["error"] == body["message"]
    assert record["error"].startswith("The model 'nowhere/none' does not exist")


async def test_bodies_are_cut_at_the_cap_and_marked(
    daemon: DaemonFactory, tmp_path: Path, wires: Wires
) -> None:
    """max_body_bytes 40: the request and a whole answer are cut to 40 bytes (cut JSON is
    shown as its text); a stream's bytes are kept up to four times that, and the answer they
    carried is marked cut when they were."""
    client = await daemon(logged(tmp_path, wires, bodies="all", max_body_bytes=40))
    bodies = (await one(client, await openai_chat(client, False)))["bodies"]
    assert (bodies["request_truncated"], bodies["response_truncated"]) == (True, True)
    assert len(bodies["request"].encode()) == 40
    assert len(bodies["response"].encode()) == 40
    bodies = (await one(client, await openai_chat(client, True)))["bodies"]
    assert (bodies["request_truncated"], bodies["response_truncated"]) == (True, True)
    assert TEXT.startswith(bodies["response"]["text"])


async def test_no_secret_is_stored_or_shown(
    daemon: DaemonFactory, tmp_path: Path, wires: Wires
) -> None:
    """A client that pastes every configured secret into its prompt and its headers: none is
    in the ledger's file (bodies opened), nor in what the API shows."""
    client = await daemon(logged(tmp_path, wires, bodies="all"))
    pasted = [{"role": "user", "content": " ".join(SECRETS)}]
    async with openai_sdk(client, ALICE) as api:
        raw = await api.chat.completions.with_raw_response.create(
            model="oa/gpt-4o-mini",
            messages=pasted,  # type: ignore[arg-type]
            extra_headers={"x-pasted": UPSTREAM_KEY, "Cookie": f"session={BOB}"},
        )
    request_id = raw.headers["x-localrouter-request-id"]
    shown = orjson.dumps(await one(client, request_id)).decode()
    shown += orjson.dumps(await read(client, "/api/requests")).decode()
    assert "***" in shown
    await client.app[COMPONENTS].ledger.flush()
    stored = _stored_text(tmp_path / "usage.sqlite3")
    assert "*** *** *** ***" in stored  # the pasted prompt is kept, every secret redacted
    for secret in SECRETS:
        assert secret not in shown
        assert secret not in stored


def _stored_text(path: Path) -> str:
    """Everything in the ledger's file, compressed bodies opened."""
    with sqlite3.connect(path) as db:
        text = [repr(row) for row in db.execute("SELECT * FROM requests")]
        for row in db.execute("SELECT request, headers, response FROM bodies"):
            text += [opened(blob).decode() for blob in row if blob is not None]
    db.close()
    return "\n".join(text)


async def test_cursor_paging_holds_while_requests_arrive(
    daemon: DaemonFactory, tmp_path: Path, wires: Wires, clock: FakeClock
) -> None:
    """Five requests, read two at a time, newest first; three more arrive between pages: the
    pages still give the first five exactly once, in order."""
    client = await daemon(logged(tmp_path, wires))
    first = []
    for _ in range(5):
        clock.advance(1)
        first.append(await openai_chat(client, False))
    page = await read(client, "/api/requests?limit=2")
    seen = [row["id"] for row in page["data"]]
    for _ in range(3):
        clock.advance(1)
        await openai_chat(client, False)
    while page["next_cursor"] is not None:
        page = await read(client, f"/api/requests?limit=2&cursor={page['next_cursor']}")
        seen += [row["id"] for row in page["data"]]
    assert seen == first[::-1]
    newest = await read(client, "/api/requests?limit=3")
    assert len(newest["data"]) == 3
    assert not set(first) & {row["id"] for row in newest["data"]}


async def test_the_log_narrows_by_client_model_status_and_route(
    daemon: DaemonFactory, tmp_path: Path, wires: Wires
) -> None:
    client = await daemon(logged(tmp_path, wires))
    await openai_chat(client, False)
    await openai_chat(client, False, "lab/qwen3-coder")
    await messages(client, "lab/qwen3-coder", False)
    async with openai_sdk(client, ALICE) as api:
        with pytest.raises(openai.InternalServerError):
            await api.chat.completions.create(model="oa/overloaded", messages=HELLO)

    async def ids(query: str) -> list[str]:
        return [row["model"] for row in (await read(client, f"/api/requests?{query}"))["data"]]

    assert await ids("model=lab/qwen3-coder") == ["lab/qwen3-coder"] * 2
    assert await ids("route=/v1/messages") == ["lab/qwen3-coder"]
    assert await ids("status=failed") == ["oa/overloaded"]
    assert await ids("status=503") == ["oa/overloaded"]
    assert await ids("instance=oa") == ["oa/overloaded", "oa/gpt-4o-mini"]
    assert await ids("client=bob") == []
    refused = await client.get(
        "/api/requests?status=bad", headers={"Authorization": f"Bearer {ADMIN}"}
    )
    assert refused.status == 400


async def test_a_client_sees_only_its_own_requests(
    daemon: DaemonFactory, tmp_path: Path, wires: Wires
) -> None:
    client = await daemon(logged(tmp_path, wires, bodies="all"))
    alices = await openai_chat(client, False)
    async with openai_sdk(client, BOB) as api:
        raw = await api.chat.completions.with_raw_response.create(
            model="oa/gpt-4o-mini", messages=HELLO
        )
    bobs = raw.headers["x-localrouter-request-id"]
    listed = await read(client, "/api/requests?client=alice", BOB)  # asks for another's
    assert [row["id"] for row in listed["data"]] == [bobs]
    assert {row["id"] for row in (await read(client, "/api/requests"))["data"]} == {alices, bobs}
    assert (await one(client, bobs, BOB))["id"] == bobs
    other = await client.get(f"/api/requests/{alices}", headers={"Authorization": f"Bearer {BOB}"})
    assert other.status == 404


async def test_bodies_and_rows_are_kept_each_for_their_own_days(
    daemon: DaemonFactory, tmp_path: Path, wires: Wires, clock: FakeClock
) -> None:
    """Bodies for body_retention_days (2 here), the rows for usage.retention_days (5): by
    the test's clock, a write after 3 days drops the bodies and keeps the row; after 6 days
    the row is gone too."""
    config = logged(tmp_path, wires, bodies="all", body_retention_days=2)
    config["usage"]["retention_days"] = 5
    client = await daemon(config)
    kept = await openai_chat(client, False)
    assert (await one(client, kept))["bodies"] is not None
    clock.advance(3 * 86400)
    await openai_chat(client, False)  # a write: retention runs with it
    record = await one(client, kept)
    assert record["bodies"] is None
    clock.advance(3 * 86400)
    await openai_chat(client, False)
    await client.app[COMPONENTS].recorder.flush()
    gone = await client.get(f"/api/requests/{kept}", headers={"Authorization": f"Bearer {ADMIN}"})
    assert gone.status == 404


async def test_long_bodies_are_kept_compressed_and_shown_whole(
    daemon: DaemonFactory, tmp_path: Path, wires: Wires
) -> None:
    """A body of 1 KiB or more is deflated in the file (a shorter one is kept as it is: a
    compressor costs more than it saves there); the API shows it whole either way."""
    client = await daemon(logged(tmp_path, wires, bodies="all"))
    long_prompt = [{"role": "user", "content": "word " * 4000}]
    async with openai_sdk(client, ALICE) as api:
        raw = await api.chat.completions.with_raw_response.create(
            model="oa/gpt-4o-mini",
            messages=long_prompt,  # type: ignore[arg-type]
        )
    record = await one(client, raw.headers["x-localrouter-request-id"])
    assert record["bodies"]["request"]["messages"] == long_prompt
    await client.app[COMPONENTS].ledger.flush()
    with sqlite3.connect(tmp_path / "usage.sqlite3") as db:
        request, response = db.execute("SELECT request, response FROM bodies").fetchone()
    db.close()
    assert request[:1] == b"z"
    assert len(request) < 4000
    assert response[:1] == b"r"  # the short answer
