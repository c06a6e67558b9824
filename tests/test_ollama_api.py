"""Ollama's API over real sockets, with the official `ollama` package as the client: the list,
`show`, chat (whole and streamed, with a tool call round trip), generate and embed, translated
to an OpenAI-compatible upstream; the same on the `server.ollama_port` listener."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import ollama
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer, unused_port

from localrouter.app import COMPONENTS, create_app
from localrouter.base.errors import ConfigError
from localrouter.serve import bind, listen
from tests.conftest import DaemonFactory, FakeClock, settings_from
from tests.test_reload import write_config

KEY = "sk-ollama-upstream-key-5f3a9c"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@dataclass
class ChatServer:
    """An OpenAI upstream: gpt-4o (known to the catalog) and an embedding model. It answers a
    request with tools by calling get_weather, and a tool result with the weather."""

    asked: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    async def list_models(self, _: web.Request) -> web.Response:
        data = [
            {"id": model, "object": "model", "created": 1715367049, "owned_by": "system"}
            for model in ("gpt-4o", "text-embedding-3-small")
        ]
        return web.json_response({"object": "list", "data": data})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.asked.append(body)
        last = body["messages"][-1]
        if last["role"] == "tool":
            text, calls = f"It is {orjson.loads(last['content'])['sky']} in Paris.", []
        elif body.get("tools"):
            text, calls = "", [("call_up_1", "get_weather", '{"city": "Paris"}')]
        else:
            text, calls = "Hello there", []
        usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        finish = "tool_calls" if calls else "stop"
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                message["tool_calls"] = [
                    {"id": i, "type": "function", "function": {"name": n, "arguments": a}}
                    for i, n, a in calls
                ]
            choice = {"index": 0, "message": message, "finish_reason": finish}
            whole = {"id": "c1", "object": "chat.completion", "model": body["model"]}
            return web.json_response({**whole, "choices": [choice], "usage": usage})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def send(delta: dict[str, Any], finish_reason: str | None = None) -> None:
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
            chunk = {"id": "c1", "object": "chat.completion.chunk", "model": body["model"]}
            await response.write(b"data: " + orjson.dumps({**chunk, "choices": [choice]}) + b"\n\n")

        for piece in (text[:3], text[3:]) if text else ():
            await send({"content": piece})
        for call_id, name, arguments in calls:  # the arguments arrive in two fragments
            head = {"index": 0, "id": call_id, "type": "function"}
            await send({"tool_calls": [{**head, "function": {"name": name, "arguments": ""}}]})
            for part in (arguments[:9], arguments[9:]):
                await send({"tool_calls": [{"index": 0, "function": {"arguments": part}}]})
        await send({}, finish)
        last_chunk = {"id": "c1", "object": "chat.completion.chunk", "choices": [], "usage": usage}
        await response.write(b"data: " + orjson.dumps(last_chunk) + b"\n\ndata: [DONE]\n\n")
        await response.write_eof()
        return response

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.asked.append(body)
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [
            {"object": "embedding", "index": i, "embedding": [float(len(text)), 0.5]}
            for i, text in enumerate(texts)
        ]
        usage = {"prompt_tokens": 4, "total_tokens": 4}
        return web.json_response({"object": "list", "data": data, "usage": usage})


@pytest.fixture
async def upstream(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> ChatServer:
    fake = ChatServer()
    app = web.Application()
    app.router.add_get("/v1/models", fake.list_models)
    app.router.add_post("/v1/chat/completions", fake.chat)
    app.router.add_post("/v1/embeddings", fake.embeddings)
    server = await aiohttp_server(app)
    fake.url = str(server.make_url("/v1"))
    return fake


def config(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "providers": [{"name": "oa", "type": "openai", "base_url": url, "api_key": KEY}],
        **extra,
    }


async def ollama_work(api: ollama.AsyncClient, upstream: ChatServer) -> None:
    """Everything an Ollama client does, checked."""
    names = [model.model for model in (await api.list()).models]
    assert names == ["oa/gpt-4o:latest", "oa/text-embedding-3-small:latest"]

    shown = await api.show("oa/gpt-4o:latest")
    assert shown.capabilities is not None
    assert {"completion", "tools", "vision"} <= set(shown.capabilities)
    assert shown.modelinfo is not None
    assert shown.modelinfo["gpt.context_length"] == 128000  # from the catalog
    embedder = await api.show("oa/text-embedding-3-small")
    assert embedder.capabilities == ["embedding"]

    question = [{"role": "user", "content": "Weather in Paris?"}]
    answer = await api.chat("oa/gpt-4o:latest", messages=question, tools=[WEATHER_TOOL])
    assert answer.message.tool_calls is not None
    call = answer.message.tool_calls[0]
    assert (call.function.name, dict(call.function.arguments)) == ("get_weather", {"city": "Paris"})
    assert upstream.asked[-1]["model"] == "gpt-4o"
    assert upstream.asked[-1]["tools"][0]["function"]["name"] == "get_weather"
    follow_up = [
        *question,
        answer.message.model_dump(exclude_none=True),
        {"role": "tool", "content": '{"sky": "sunny"}', "tool_name": "get_weather"},
    ]
    final = await api.chat("oa/gpt-4o", messages=follow_up, tools=[WEATHER_TOOL])
    assert final.message.content == "It is sunny in Paris."
    assert final.done
    assert final.done_reason == "stop"
    assert (final.prompt_eval_count, final.eval_count) == (11, 7)
    sent = upstream.asked[-1]["messages"]
    assert sent[1]["tool_calls"][0]["function"]["arguments"] == '{"city":"Paris"}'
    assert sent[2]["tool_call_id"] == sent[1]["tool_calls"][0]["id"]

    parts = [part async for part in await api.chat("oa/gpt-4o", messages=question, stream=True)]
    assert "".join(part.message.content or "" for part in parts) == "Hello there"
    assert [part.done for part in parts] == [False, False, True]
    assert (parts[-1].done_reason, parts[-1].eval_count) == ("stop", 7)
    streamed_call = [
        part
        async for part in await api.chat(
            "oa/gpt-4o", messages=question, tools=[WEATHER_TOOL], stream=True
        )
    ]
    calls = [c for part in streamed_call for c in part.message.tool_calls or ()]
    assert [(c.function.name, dict(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"})
    ]

    generated = await api.generate("oa/gpt-4o", prompt="Say hello", system="Be brief")
    assert generated.response == "Hello there"
    assert upstream.asked[-1]["messages"][0] == {"role": "system", "content": "Be brief"}
    pieces = [p.response async for p in await api.generate("oa/gpt-4o", "Hi", stream=True)]
    assert "".join(pieces) == "Hello there"

    embedded = await api.embed("oa/text-embedding-3-small", input=["one", "three"])
    assert [list(vector) for vector in embedded.embeddings] == [[3.0, 0.5], [5.0, 0.5]]
    legacy = await api.embeddings("oa/text-embedding-3-small", prompt="four")
    assert list(legacy.embedding) == [4.0, 0.5]


async def test_the_ollama_client_lists_shows_chats_generates_and_embeds(
    upstream: ChatServer, daemon: DaemonFactory
):
    client = await daemon(config(upstream.url))
    async with ollama.AsyncClient(host=str(client.make_url(""))) as api:
        await ollama_work(api, upstream)
        assert (await api.ps()).models == []


@pytest.fixture
async def served_twice(
    upstream: ChatServer, clock: FakeClock
) -> AsyncIterator[tuple[str, str, ChatServer]]:
    """The daemon as `serve` runs it: its main port and an Ollama port."""
    main_port, ollama_port = unused_port(), unused_port()
    settings = settings_from(
        config(
            upstream.url,
            server={
                "port": main_port,
                "ollama_port": ollama_port,
                "ollama_client": "copilot",
                "auth_token": "admin-8c1d2e",
            },
            clients=[{"name": "copilot", "token": "copilot-7a6b5c", "allow": ["*gpt-4o*"]}],
        )
    )
    runner = web.AppRunner(create_app(settings, clock=clock))
    await runner.setup()
    await listen(runner, bind(settings))
    yield f"http://127.0.0.1:{main_port}", f"http://127.0.0.1:{ollama_port}", upstream
    await runner.cleanup()


async def test_the_ollama_port_acts_as_its_client_without_a_token(
    served_twice: tuple[str, str, ChatServer],
):
    main, ollama_url, upstream = served_twice
    async with ollama.AsyncClient(host=ollama_url) as api:
        names = [model.model for model in (await api.list()).models]
        assert names == ["oa/gpt-4o:latest"]  # the copilot client's allowlist
        answer = await api.chat("oa/gpt-4o", messages=[{"role": "user", "content": "hi"}])
        assert answer.message.content == "Hello there"
        with pytest.raises(ollama.ResponseError) as refused:
            await api.embed("oa/text-embedding-3-small", input="x")
        assert refused.value.status_code == 403
        assert "copilot" in refused.value.error
    async with ollama.AsyncClient(host=main) as api:  # no token on the main port: refused
        with pytest.raises(ollama.ResponseError) as unauthorized:
            await api.list()
        assert unauthorized.value.status_code == 401
    # A credential that is no token of ours is refused on both ports, even right after (the
    # guard remembers only real tokens); only a request with none acts as the Ollama port's
    # client (issue 33: a Basic header used to count as none there).
    for sent in ({"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Token abc"}):
        async with aiohttp.ClientSession(headers=sent) as session:
            for url in (ollama_url, main, ollama_url, main):
                async with session.get(f"{url}/api/tags") as answer:
                    assert answer.status == 401, (url, sent)
    async with aiohttp.ClientSession() as session, session.get(f"{ollama_url}/api/tags") as none:
        assert none.status == 200
    admin = {"Authorization": "Bearer admin-8c1d2e"}
    async with ollama.AsyncClient(host=ollama_url, headers=admin) as api:
        await ollama_work(api, upstream)  # the same work on the Ollama port, as the admin


async def test_models_are_not_pulled_or_deleted_here_and_errors_are_ollama_shaped(
    upstream: ChatServer, daemon: DaemonFactory
):
    client = await daemon(config(upstream.url))
    async with ollama.AsyncClient(host=str(client.make_url(""))) as api:
        with pytest.raises(ollama.ResponseError) as pulled:
            await api.pull("llama3.2")
        assert pulled.value.status_code == 501
        assert "cannot pull models" in pulled.value.error
        with pytest.raises(ollama.ResponseError) as deleted:
            await api.delete("oa/gpt-4o")
        assert "cannot delete models" in deleted.value.error
        with pytest.raises(ollama.ResponseError) as unknown:
            await api.chat("nowhere/model", messages=[{"role": "user", "content": "hi"}])
        assert unknown.value.status_code == 404
        assert "does not exist" in unknown.value.error
    version = await (await client.get("/api/version")).json()
    assert version["version"].count(".") == 2


async def test_an_ollama_instance_gets_the_request_as_it_is(
    aiohttp_server: Callable[..., Awaitable[TestServer]], daemon: DaemonFactory
):
    seen: list[dict[str, Any]] = []

    async def tags(_: web.Request) -> web.Response:
        model = {"name": "qwen3:8b", "model": "qwen3:8b", "details": {"family": "qwen3"}}
        return web.json_response({"models": [model]})

    async def chat(request: web.Request) -> web.StreamResponse:
        seen.append(await request.json())
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        for piece, done in (("native ", False), ("answer", False), ("", True)):
            line = {"model": "qwen3:8b", "message": {"role": "assistant", "content": piece}}
            await response.write(orjson.dumps({**line, "done": done}) + b"\n")
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/api/tags", tags)
    app.router.add_post("/api/chat", chat)
    server = await aiohttp_server(app)
    settings = {
        "providers": [{"name": "home", "type": "ollama", "base_url": str(server.make_url(""))}]
    }
    client = await daemon(settings)
    async with ollama.AsyncClient(host=str(client.make_url(""))) as api:
        parts = [
            part.message.content
            async for part in await api.chat(
                "home/qwen3:8b", messages=[{"role": "user", "content": "hi"}], stream=True
            )
        ]
    assert "".join(p or "" for p in parts) == "native answer"
    assert seen[0]["model"] == "qwen3:8b"  # only the model rewritten
    assert seen[0]["messages"] == [{"role": "user", "content": "hi"}]


def test_ollama_client_needs_a_port_and_a_known_client():
    with pytest.raises(ConfigError, match=r"server\.ollama_client: set server\.ollama_port"):
        settings_from({"server": {"ollama_client": "x"}})
    with pytest.raises(ConfigError, match="no client named 'x'"):
        settings_from({"server": {"ollama_client": "x", "ollama_port": 11434}})


async def test_the_ollama_client_reloads_live(
    upstream: ChatServer, clock: FakeClock, tmp_path: Path
):
    main_port, ollama_port = unused_port(), unused_port()
    clients = [
        {"name": "copilot", "token": "copilot-7a6b5c", "allow": ["*gpt-4o*"]},
        {"name": "zed", "token": "zed-token-9e8d7c", "allow": ["*embedding*"]},
    ]
    server = {"port": main_port, "ollama_port": ollama_port, "ollama_client": "copilot"}
    first = config(upstream.url, server=server, clients=clients)
    path = tmp_path / "config.yaml"
    write_config(path, first)
    app = create_app(settings_from(first), clock=clock, config_path=path)
    runner = web.AppRunner(app)
    await runner.setup()
    await listen(runner, bind(settings_from(first)))
    try:
        async with ollama.AsyncClient(host=f"http://127.0.0.1:{ollama_port}") as api:
            assert [m.model for m in (await api.list()).models] == ["oa/gpt-4o:latest"]
            write_config(path, {**first, "server": {**server, "ollama_client": "zed"}})
            assert await app[COMPONENTS].reloader.reload()
            names = [m.model for m in (await api.list()).models]
            assert names == ["oa/text-embedding-3-small:latest"]
    finally:
        await runner.cleanup()
