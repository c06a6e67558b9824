"""Issue 34's capture over real sockets, for the OpenAI routes (chat, completions, embeddings)
with the official openai client, and what every route shares: a stream's bytes with the ledger
on and off, unpriced and free models, fallbacks, a client that leaves, a ledger that cannot be
written, who reads which record, the CSV and the metrics. Upstreams: tests/usage_wires.py.
The Messages, Responses and Ollama routes: tests/test_usage_{messages,responses,ollama}.py."""

from __future__ import annotations

import csv
import io
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
from aiohttp.test_utils import TestServer

from localrouter.app import COMPONENTS
from localrouter.usage.tokens import estimated
from tests.conftest import DaemonFactory, eventually, settled
from tests.usage_wires import (
    CHAT,
    COMPLETION,
    EMBEDDING,
    HELLO,
    OLLAMA,
    REQUEST_ID,
    TEXT,
    UPSTREAM_KEY,
    Expected,
    Wires,
    check,
    ledger_config,
    ollama_sdk,
    openai_sdk,
    recorded,
    start_wires,
)

ADMIN = "admin-usage-token-5e0c"
ALICE = "alice-usage-token-19ab"
BOB = "bob-usage-token-77cd"


@pytest.fixture
async def wires(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Wires:
    return await start_wires(aiohttp_server)


async def call(api: openai.AsyncOpenAI, route: str, model: str, stream: bool) -> tuple[str, str]:
    """One call of `route` as the openai client makes it: the request id and the text (an
    embedding's first value, as text) that came back."""
    if route == "chat/completions":
        raw = await api.chat.completions.with_raw_response.create(
            model=model, messages=HELLO, stream=stream
        )
        if stream:
            said = [part.choices[0].delta.content or "" async for part in raw.parse()]
            return raw.headers[REQUEST_ID], "".join(said)
        return raw.headers[REQUEST_ID], raw.parse().choices[0].message.content or ""
    if route == "completions":
        made = await api.completions.with_raw_response.create(
            model=model, prompt="Say hello.", stream=stream
        )
        if stream:
            said = [part.choices[0].text async for part in made.parse()]
            return made.headers[REQUEST_ID], "".join(said)
        return made.headers[REQUEST_ID], made.parse().choices[0].text
    embedded = await api.embeddings.with_raw_response.create(model=model, input="hello")
    return embedded.headers[REQUEST_ID], str(embedded.parse().data[0].embedding[0])


@pytest.mark.parametrize(
    ("route", "model", "stream", "expected", "said"),
    [
        ("chat/completions", "oa/gpt-4o-mini", False, CHAT, TEXT),
        ("chat/completions", "oa/gpt-4o-mini", True, CHAT, TEXT),
        ("chat/completions", "lab/qwen3-coder", True, CHAT, TEXT),  # openai_compatible
        ("completions", "oa/gpt-4o-mini", False, COMPLETION, TEXT),
        ("completions", "oa/gpt-4o-mini", True, COMPLETION, TEXT),
        ("embeddings", "oa/text-embedding-3-small", False, EMBEDDING, "0.0023"),
    ],
)
async def test_an_openai_route_records_the_upstreams_counts_at_the_models_price(
    wires: Wires,
    daemon: DaemonFactory,
    tmp_path: Path,
    route: str,
    model: str,
    stream: bool,
    expected: Expected,
    said: str,
):
    """Chat, completions and embeddings, whole and streamed (a stream the client did not ask
    usage of included): the record holds the upstream's counts (cache and reasoning
    included), reported, the instance/model that answered, its type, the route, one attempt,
    and the cost at the instance's configured prices."""
    client = await daemon(ledger_config(tmp_path, wires.instances()))
    async with openai_sdk(client) as api:
        request_id, answered = await call(api, route, model, stream)
    assert answered == said
    instance = model.partition("/")[0]
    check(
        await recorded(client, request_id),
        expected,
        id=request_id,
        model=model,
        requested_model=model,
        instance=instance,
        provider_name="openai" if instance == "oa" else "openai_compatible",
        origin=f"/v1/{route}",
        streamed=stream,
        client=None,
    )


@pytest.mark.parametrize(
    ("path", "model", "asked"),
    [
        ("/v1/chat/completions", "oa/gpt-4o-mini", {"messages": HELLO}),
        ("/v1/completions", "oa/gpt-4o-mini", {"prompt": "Say hello."}),
        (  # asked not to: the gateway asks, and takes the usage out again
            "/v1/chat/completions",
            "oa/gpt-4o-mini",
            {"messages": HELLO, "stream_options": {"include_usage": False}},
        ),
        ("/v1/chat/completions", "oa/crlf-buffered", {"messages": HELLO}),
    ],
    ids=["chat", "completions", "chat-include_usage-false", "chat-crlf-one-write"],
)
async def test_a_stream_that_did_not_ask_for_usage_gets_the_very_bytes_it_gets_without_the_ledger(
    wires: Wires,
    daemon: DaemonFactory,
    tmp_path: Path,
    path: str,
    model: str,
    asked: dict[str, Any],
):
    """With the ledger on, the upstream is asked for usage and sends `"usage":null` in every
    chunk and a usage-only last chunk; the client, who did not ask, receives exactly the body
    a daemon without the ledger relays from the same upstream (which then sends no usage at
    all), and the ledger still has the reported counts."""
    providers = wires.instances()[:1]
    on = await daemon(ledger_config(tmp_path, providers))
    off = await daemon({"providers": providers, "usage": {"enabled": False}})
    body = {"model": model, **asked, "stream": True}
    with_ledger = await on.post(path, json=body)
    recorded_body = await with_ledger.read()
    assert wires.openai.bodies[-1]["stream_options"] == {"include_usage": True}
    without_ledger = await off.post(path, json=body)
    plain_body = await without_ledger.read()
    assert wires.openai.bodies[-1].get("stream_options") == asked.get("stream_options")
    assert (with_ledger.status, without_ledger.status) == (200, 200)
    assert recorded_body == plain_body
    assert b"usage" not in recorded_body
    assert recorded_body.endswith(b"data: [DONE]\n\n") or recorded_body.endswith(b"[DONE]\r\n\r\n")
    expected = CHAT if path == "/v1/chat/completions" else COMPLETION
    check(await recorded(on, with_ledger.headers[REQUEST_ID]), expected, streamed=True)


async def test_a_stream_that_asked_for_usage_gets_the_usage_chunk(
    wires: Wires, daemon: DaemonFactory, tmp_path: Path
):
    """A client that asks stream_options.include_usage gets the upstream's stream as it is:
    `usage: null` on every chunk and the usage-only last chunk (the same bytes as without the
    ledger), and the ledger records those counts."""
    providers = wires.instances()[:1]
    on = await daemon(ledger_config(tmp_path, providers))
    off = await daemon({"providers": providers, "usage": {"enabled": False}})
    async with openai_sdk(on) as api:
        raw = await api.chat.completions.with_raw_response.create(
            model="oa/gpt-4o-mini",
            messages=HELLO,
            stream=True,
            stream_options={"include_usage": True},
        )
        parts = [part async for part in raw.parse()]
    assert [part.usage for part in parts[:-1]] == [None] * (len(parts) - 1)
    last = parts[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (1500, 200)
    assert last.usage.prompt_tokens_details is not None
    assert last.usage.prompt_tokens_details.cached_tokens == 1000
    body = {
        "model": "oa/gpt-4o-mini",
        "messages": HELLO,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    relayed = [
        await (await daemon_.post("/v1/chat/completions", json=body)).read()
        for daemon_ in (on, off)
    ]
    assert relayed[0] == relayed[1]
    assert relayed[0].count(b'"usage":null') == 5
    check(await recorded(on, raw.headers[REQUEST_ID]), CHAT, streamed=True)


@pytest.mark.parametrize(
    ("path", "asked"),
    [
        ("/v1/chat/completions", {"messages": HELLO}),
        ("/v1/messages", {"messages": HELLO, "max_tokens": 64}),
        ("/v1/responses", {"input": "Say hello."}),
        ("/api/chat", {"messages": HELLO}),
        ("/api/generate", {"prompt": "Say hello."}),
    ],
)
async def test_an_instance_that_refuses_stream_options_is_never_sent_them(
    wires: Wires, daemon: DaemonFactory, tmp_path: Path, path: str, asked: dict[str, Any]
):
    """An LM Studio instance (stream_usage off by default: it answers stream_options with a
    400) is not asked for a stream's usage on any route, forwarded or translated: the stream
    answers, and its record's usage is estimated from what went by."""
    studio = {"name": "studio", "type": "lmstudio", "base_url": wires.openai_url}
    client = await daemon(ledger_config(tmp_path, [studio]))
    response = await client.post(path, json={"model": "studio/strict", **asked, "stream": True})
    assert response.status == 200, await response.text()
    assert "Hel" in await response.text()
    assert "stream_options" not in wires.openai.bodies[-1]
    data = await recorded(client, response.headers[REQUEST_ID])
    assert (data["usage_source"], data["cost_source"], data["streamed"]) == (
        "estimated",
        "free",
        True,
    )
    assert data["tokens_prompt"] > 0
    assert data["tokens_completion"] > 0


async def test_a_request_body_sent_in_chunks_counts_toward_the_estimated_input(
    wires: Wires, daemon: DaemonFactory, tmp_path: Path
):
    """A body sent with Transfer-Encoding: chunked has no Content-Length: its size, which an
    estimate counts input tokens from, is the body the daemon read."""
    studio = {"name": "studio", "type": "lmstudio", "base_url": wires.openai_url}
    client = await daemon(ledger_config(tmp_path, [studio]))
    body = orjson.dumps({"model": "studio/strict", "messages": HELLO, "stream": True})

    async def in_chunks() -> AsyncIterator[bytes]:
        yield body[:10]
        yield body[10:]

    response = await client.post(
        "/v1/chat/completions", data=in_chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status == 200, await response.text()
    assert "Hel" in await response.text()
    data = await recorded(client, response.headers[REQUEST_ID])
    assert data["usage_source"] == "estimated"
    assert data["tokens_prompt"] == estimated(len(body))


async def test_unknown_prices_are_unpriced_local_instances_free_and_catalog_prices_used(
    wires: Wires, daemon: DaemonFactory, tmp_path: Path
):
    """With no price in the config: a cloud instance's model the catalog does not know costs
    null (`unpriced`, counted in /api/usage's unpriced_requests), never 0; one the catalog
    knows is priced at the catalog's prices; an openai_compatible and an ollama instance on
    127.0.0.1 are free (0.0)."""
    providers = [
        {"name": "cloud", "type": "openai", "base_url": wires.openai_url, "api_key": UPSTREAM_KEY},
        {"name": "local", "type": "openai_compatible", "base_url": wires.openai_url},
        {"name": "home", "type": "ollama", "base_url": wires.ollama_url},
    ]
    client = await daemon(ledger_config(tmp_path, providers))
    await settled(client)  # the lists, with the catalog's prices, are in
    async with openai_sdk(client) as api:
        unpriced, _ = await call(api, "chat/completions", "cloud/zz-private-finetune-7", False)
        catalogued, _ = await call(api, "completions", "cloud/gpt-4o-mini", False)
        free, _ = await call(api, "chat/completions", "local/qwen3-coder", False)
    ids: list[str] = []
    async with ollama_sdk(client, ids) as api:
        await api.chat("home/qwen3:8b", messages=HELLO, stream=False)
    free_ollama = ids[-1]
    check(await recorded(client, unpriced), CHAT, cost_source="unpriced", total_cost=None)
    check(await recorded(client, free), CHAT, cost_source="free", total_cost=0.0)
    check(await recorded(client, free_ollama), OLLAMA, cost_source="free", total_cost=0.0)
    listed = await (await client.get("/api/v1/models")).json()
    prices = next(m["pricing"] for m in listed["data"] if m["id"] == "cloud/gpt-4o-mini")
    catalog_cost = 12 * float(prices["prompt"]) + 30 * float(prices["completion"])
    assert catalog_cost > 0
    catalog = await recorded(client, catalogued)
    check(catalog, COMPLETION, total_cost=pytest.approx(catalog_cost, rel=1e-9))
    usage = await (await client.get("/api/usage", params={"group_by": "instance"})).json()
    by_instance = {row["instance"]: row for row in usage["data"]}
    assert {name: row["unpriced_requests"] for name, row in by_instance.items()} == {
        "cloud": 1,
        "home": 0,
        "local": 0,
    }
    assert by_instance["cloud"]["requests"] == 2
    assert by_instance["local"]["cost_usd"] == 0.0


async def test_a_fallback_records_the_model_that_answered_and_the_attempts(
    wires: Wires, daemon: DaemonFactory, tmp_path: Path
):
    """`lab/overloaded` answers 503, its fallback `oa/gpt-4o-mini` answers: the record names
    the model asked and the one that answered (its instance and type), two attempts, and the
    answer's counts at the fallback's price."""
    config = ledger_config(
        tmp_path, wires.instances(), models={"fallbacks": {"lab/overloaded": ["oa/gpt-4o-mini"]}}
    )
    client = await daemon(config)
    async with openai_sdk(client) as api:
        request_id, said = await call(api, "chat/completions", "lab/overloaded", True)
    assert said == TEXT
    assert [body["model"] for body in wires.openai.bodies] == ["overloaded", "gpt-4o-mini"]
    check(
        await recorded(client, request_id),
        CHAT,
        requested_model="lab/overloaded",
        model="oa/gpt-4o-mini",
        instance="oa",
        provider_name="openai",
        attempts=2,
        streamed=True,
    )


async def test_a_stream_the_client_leaves_is_recorded_cancelled_with_estimated_usage(
    wires: Wires, daemon: DaemonFactory, tmp_path: Path
):
    """The client closes a chat stream after its first words; the upstream never sent usage.
    The record says cancelled, its usage `estimated`, with nonzero input (from the request's
    size) and output (from the chunks that went by), priced at those estimates."""
    client = await daemon(ledger_config(tmp_path, wires.instances()))
    async with openai_sdk(client) as api:
        raw = await api.chat.completions.with_raw_response.create(
            model="oa/stalls", messages=HELLO, stream=True
        )
        stream = raw.parse()
        async for part in stream:
            if part.choices[0].delta.content:
                break
        await stream.close()

    async def upstream_left() -> bool:
        return wires.openai.left.is_set()

    await eventually(upstream_left, "the upstream call's end")
    data = await recorded(client, raw.headers[REQUEST_ID])
    assert data["cancelled"] is True
    assert data["usage_source"] == "estimated"
    assert data["tokens_prompt"] > 0
    assert data["tokens_completion"] > 0
    assert (data["model"], data["streamed"], data["cost_source"]) == ("oa/stalls", True, "catalog")
    estimate = (data["tokens_prompt"] * 3 + data["tokens_completion"] * 15) / 1e6
    assert data["total_cost"] == pytest.approx(estimate, rel=1e-9)


def full(path: Path) -> None:
    """Every insert into the ledger's open file fails from now on, as on a full disk."""
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TRIGGER full BEFORE INSERT ON requests "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
    db.close()


@pytest.mark.parametrize(
    "broken", ["under-a-file", "a-directory", "not-a-database", "full"], ids=str
)
async def test_a_ledger_that_cannot_be_written_never_fails_a_call(
    wires: Wires, daemon: DaemonFactory, tmp_path: Path, broken: str
):
    """usage.path under a regular file (no directory can be made there, even as root), a
    directory in the file's place, a file that is not a database, or a ledger whose every
    write fails (a full disk): whole and streamed calls answer 200 as usual, their records
    are dropped and counted, and the usage endpoints still answer, with nothing."""
    path = tmp_path / "usage.sqlite3"
    if broken == "under-a-file":
        (tmp_path / "a-file").write_text("not a directory\n")
        path = tmp_path / "a-file" / "usage.sqlite3"
    elif broken == "a-directory":
        path.mkdir()
    elif broken == "not-a-database":
        path.write_bytes(b"these are not the pages of a database\n" * 200)
    providers = wires.instances()[:1]
    client = await daemon({"providers": providers, "usage": {"path": str(path)}})
    parts = client.app[COMPONENTS]
    assert parts.ledger.available == (broken == "full")
    if broken == "full":
        full(path)
    async with openai_sdk(client) as api:
        _, whole = await call(api, "chat/completions", "oa/gpt-4o-mini", False)
        request_id, streamed = await call(api, "chat/completions", "oa/gpt-4o-mini", True)
        _, embedded = await call(api, "embeddings", "oa/text-embedding-3-small", False)
    assert (whole, streamed, embedded) == (TEXT, TEXT, "0.0023")

    async def all_dropped() -> bool:
        await parts.recorder.flush()
        return parts.ledger.dropped == 3

    await eventually(all_dropped, "three records dropped")
    assert parts.ledger.written == 0
    usage = await client.get("/api/usage")
    assert usage.status == 200
    assert [row["requests"] for row in (await usage.json())["data"]] in ([], [0])
    missing = await client.get("/api/v1/generation", params={"id": request_id})
    assert missing.status == 404


async def test_a_client_reads_only_its_own_generations_and_the_admin_reads_all(
    wires: Wires, daemon: DaemonFactory, tmp_path: Path
):
    """Clients alice and bob, and the admin: each client reads its own generation, another's is
    a 404 (as if it did not exist); the admin reads both; /api/usage is the admin's only (403
    for a client), and shows each client's requests; /api/v1/key shows a client its spend."""
    clients = [{"name": "alice", "token": ALICE}, {"name": "bob", "token": BOB}]
    config = ledger_config(
        tmp_path, wires.instances(), server={"auth_token": ADMIN}, clients=clients
    )
    client = await daemon(config)
    ids = {}
    for name, token in (("alice", ALICE), ("bob", BOB)):
        async with openai_sdk(client, token) as api:
            ids[name], _ = await call(api, "chat/completions", "oa/gpt-4o-mini", False)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    for name in ("alice", "bob"):
        check(await recorded(client, ids[name], admin), CHAT, client=name)

    async def status(request_id: str, token: str) -> int:
        headers = {"Authorization": f"Bearer {token}"}
        response = await client.get(
            "/api/v1/generation", params={"id": request_id}, headers=headers
        )
        return response.status

    assert await status(ids["alice"], ALICE) == 200
    assert await status(ids["bob"], BOB) == 200
    assert await status(ids["bob"], ALICE) == 404
    assert await status(ids["alice"], BOB) == 404
    refused = await client.get("/api/usage", headers={"Authorization": f"Bearer {ALICE}"})
    assert refused.status == 403
    key = await client.get("/api/v1/key", headers={"Authorization": f"Bearer {ALICE}"})
    spent = (await key.json())["data"]
    assert (spent["label"], spent["usage"], spent["usage_daily"]) == ("alice", 0.0048, 0.0048)
    usage = await client.get("/api/usage", params={"group_by": "client"}, headers=admin)
    rows = (await usage.json())["data"]
    assert [(row["client"], row["requests"], row["cost_usd"]) for row in rows] == [
        ("alice", 1, 0.0048),
        ("bob", 1, 0.0048),
    ]


async def test_usage_as_csv_has_a_header_line_and_the_rows_of_the_json(
    wires: Wires, daemon: DaemonFactory, tmp_path: Path
):
    """`/api/usage?group_by=client,model&format=csv` is text/csv: a header line of the JSON
    rows' keys, then the same rows (a null as an empty field)."""
    providers = [
        *wires.instances(),
        {"name": "cloud", "type": "openai", "base_url": wires.openai_url, "api_key": UPSTREAM_KEY},
    ]
    client = await daemon(ledger_config(tmp_path, providers))
    models = ("oa/gpt-4o-mini", "oa/gpt-4o-mini", "lab/qwen3-coder", "cloud/zz-private-finetune-7")
    async with openai_sdk(client) as api:
        ids = [(await call(api, "chat/completions", model, False))[0] for model in models]
    for request_id in ids:
        await recorded(client, request_id)
    query = {"group_by": "client,model"}
    rows = (await (await client.get("/api/usage", params=query)).json())["data"]
    assert [(row["model"], row["requests"]) for row in rows] == [
        ("cloud/zz-private-finetune-7", 1),
        ("lab/qwen3-coder", 1),
        ("oa/gpt-4o-mini", 2),
    ]
    response = await client.get("/api/usage", params={**query, "format": "csv"})
    assert response.status == 200
    assert response.content_type == "text/csv"
    text = await response.text()
    header = text.splitlines()[0]
    assert header.split(",")[:2] == ["client", "model"]
    assert header.split(",") == list(rows[0])
    as_text = [
        {key: "" if value is None else str(value) for key, value in row.items()} for row in rows
    ]
    assert list(csv.DictReader(io.StringIO(text))) == as_text


async def test_metrics_count_tokens_cost_and_unpriced_requests(
    wires: Wires, daemon: DaemonFactory, tmp_path: Path
):
    """After a priced chat and an unpriced one, /metrics shows localrouter_tokens_total by
    client, model and type, localrouter_cost_usd_total by client and model, and
    localrouter_unpriced_requests_total."""
    providers = [
        *wires.instances(),
        {"name": "cloud", "type": "openai", "base_url": wires.openai_url, "api_key": UPSTREAM_KEY},
    ]
    client = await daemon(ledger_config(tmp_path, providers))
    async with openai_sdk(client) as api:
        priced, _ = await call(api, "chat/completions", "oa/gpt-4o-mini", False)
        unpriced, _ = await call(api, "chat/completions", "cloud/zz-private-finetune-7", False)
    for request_id in (priced, unpriced):
        await recorded(client, request_id)  # counted as it was settled, before it was written
    text = await (await client.get("/metrics")).text()
    lines = set(text.splitlines())
    for kind, count in (("input", 1500), ("output", 200), ("cache_read", 1000), ("reasoning", 64)):
        labels = f'client="",model="oa/gpt-4o-mini",type="{kind}"'
        assert f"localrouter_tokens_total{{{labels}}} {count:.1f}" in lines
    assert 'localrouter_cost_usd_total{client="",model="oa/gpt-4o-mini"} 0.0048' in lines
    assert "localrouter_unpriced_requests_total 1.0" in lines
    labels = 'client="",model="cloud/zz-private-finetune-7",type="input"'
    assert f"localrouter_tokens_total{{{labels}}} 1500.0" in lines
