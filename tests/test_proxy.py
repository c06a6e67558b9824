"""Chat, completions and embeddings through the daemon, with the official openai client."""

from __future__ import annotations

import asyncio
import gc
import io
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from aiohttp import web

from tests.conftest import DaemonFactory

UPSTREAM_KEY = "sk-upstream-5be1c0de"
LOCAL_TOKEN = "local-token-9f2a"


@dataclass
class FakeOpenAI:
    """A loopback upstream speaking the OpenAI protocol, recording what it receives."""

    received: list[dict[str, Any]] = field(default_factory=list)
    fail_with: int | None = None
    delay: float = 0.0
    die_mid_stream: bool = False
    first_chunk_seen: asyncio.Event = field(default_factory=asyncio.Event)
    client_gone: asyncio.Event = field(default_factory=asyncio.Event)
    hold_stream: bool = False
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.received.append({"path": request.path, "headers": dict(request.headers), "body": body})
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_with:
            error = {
                "message": "Rate limit reached for requests",
                "type": "requests",
                "code": "rate_limit_exceeded",
            }
            return web.json_response({"error": error}, status=self.fail_with)
        if request.path.endswith("/embeddings"):
            return web.json_response(
                {
                    "object": "list",
                    "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}],
                    "model": body["model"],
                    "usage": {"prompt_tokens": 2, "total_tokens": 2},
                }
            )
        if body.get("stream"):
            return await self.stream(request, body)
        return web.json_response(completion(body["model"], "Hello there!"))

    async def stream(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for index, word in enumerate(["Hel", "lo", " world"]):
                await response.write(b"data: " + orjson.dumps(chunk(body["model"], word)) + b"\n\n")
                if index == 0 and self.hold_stream:
                    await asyncio.wait_for(self.first_chunk_seen.wait(), 5)  # not buffered
                if index == 1 and self.die_mid_stream:
                    request.transport.close()  # type: ignore[union-attr]
                    return response
            if self.client_gone_wait:
                await asyncio.sleep(5)
            await response.write(b"data: [DONE]\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            self.client_gone.set()
            raise
        return response

    client_gone_wait: bool = False


def completion(model: str, text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


def chunk(model: str, text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": model,
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }


@pytest.fixture
async def fake(aiohttp_server: Any) -> FakeOpenAI:
    upstream = FakeOpenAI()
    app = web.Application()
    app.router.add_post("/{tail:.*}", upstream.handle)
    app.router.add_get("/{tail:.*}", models_list)
    server = await aiohttp_server(app)
    upstream.url = str(server.make_url("")).rstrip("/")
    return upstream


async def models_list(request: web.Request) -> web.Response:
    return web.json_response({"data": [{"id": "gpt-4o-mini"}, {"id": "text-embedding-3-small"}]})


def instance(fake: FakeOpenAI, name: str = "up", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "openai",
        "base_url": f"{fake.url}/v1",
        "api_key": UPSTREAM_KEY,
        **extra,
    }


def sdk(client: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=str(client.make_url("/v1")), api_key=LOCAL_TOKEN, max_retries=0
    )


async def test_chat_forwards_with_only_the_model_rewritten(fake: FakeOpenAI, daemon: DaemonFactory):
    client = await daemon({"providers": [instance(fake)]})
    async with sdk(client) as api:
        answer = await api.chat.completions.create(
            model="up/gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            temperature=0.2,
            tools=[
                {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
            ],
        )
    assert answer.choices[0].message.content == "Hello there!"
    received = fake.received[-1]
    assert received["path"] == "/v1/chat/completions"
    assert received["body"] == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.2,
        "tools": [
            {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
        ],
    }
    assert received["headers"]["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert LOCAL_TOKEN not in str(received["headers"])


async def test_an_answered_request_is_freed_at_once(fake: FakeOpenAI, daemon: DaemonFactory):
    """Timers made during a request (the answer's deadline) stay queued, cancelled, until they
    would have fired; they must not keep the request and all it read alive meanwhile."""
    client = await daemon({"providers": [instance(fake)]})
    async with sdk(client) as api:
        for _ in range(5):
            await api.chat.completions.create(
                model="up/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
    gc.collect()
    alive = [
        found
        for found in gc.get_objects()
        if isinstance(found, web.Request)
        and found.path == "/v1/chat/completions"
        and found.app is client.app
    ]
    assert len(alive) <= 1  # the last one: its keep-alive connection holds it until the next


async def test_chat_streams_chunk_by_chunk(fake: FakeOpenAI, daemon: DaemonFactory):
    fake.hold_stream = True  # the upstream sends the rest only once the client has the first
    client = await daemon({"providers": [instance(fake)]})
    pieces = []
    async with sdk(client) as api:
        stream = await api.chat.completions.create(
            model="up/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        async for part in stream:
            pieces.append(part.choices[0].delta.content)
            fake.first_chunk_seen.set()
    assert pieces == ["Hel", "lo", " world"]
    assert fake.received[-1]["body"]["stream"] is True


async def test_a_stream_carries_cors_headers_for_a_listed_origin(
    fake: FakeOpenAI, daemon: DaemonFactory
):
    config = {"server": {"cors_origins": ["http://app.test"]}, "providers": [instance(fake)]}
    client = await daemon(config)
    body = {"model": "up/gpt-4o-mini", "messages": [], "stream": True}
    response = await client.post(
        "/v1/chat/completions", json=body, headers={"Origin": "http://app.test"}
    )
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["Access-Control-Allow-Origin"] == "http://app.test"
    assert b"data: [DONE]" in await response.read()


async def test_embeddings_and_completions(fake: FakeOpenAI, daemon: DaemonFactory):
    """/v1/embeddings and /v1/completions are forwarded to the same path upstream, with the instance
    prefix taken off the model."""
    client = await daemon({"providers": [instance(fake)]})
    async with sdk(client) as api:
        result = await api.embeddings.create(model="up/text-embedding-3-small", input="hello")
    assert result.data[0].embedding == [0.1, 0.2, 0.3]
    assert fake.received[-1]["path"] == "/v1/embeddings"
    assert fake.received[-1]["body"]["model"] == "text-embedding-3-small"
    response = await client.post("/v1/completions", json={"model": "up/gpt-4o-mini", "prompt": "x"})
    assert response.status == 200
    assert fake.received[-1]["path"] == "/v1/completions"


async def test_upstream_error_keeps_status_and_body(fake: FakeOpenAI, daemon: DaemonFactory):
    fake.fail_with = 429
    client = await daemon({"providers": [instance(fake)]})
    async with sdk(client) as api:
        with pytest.raises(openai.RateLimitError) as caught:
            await api.chat.completions.create(
                model="up/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
    assert caught.value.status_code == 429
    assert "Rate limit reached" in caught.value.message


async def test_bare_ids_go_to_the_first_instance_that_lists_them(
    fake: FakeOpenAI, daemon: DaemonFactory
):
    config = {"providers": [instance(fake, "first"), instance(fake, "second")]}
    client = await daemon(config)
    response = await client.post(
        "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": []}
    )
    assert response.status == 200
    assert fake.received[-1]["body"]["model"] == "gpt-4o-mini"
    # an unlisted id with an instance prefix still goes there (new and private models work)
    response = await client.post(
        "/v1/chat/completions", json={"model": "second/ft:gpt-4o:me:1", "messages": []}
    )
    assert response.status == 200
    assert fake.received[-1]["body"]["model"] == "ft:gpt-4o:me:1"


async def test_unknown_model_is_404_with_suggestions(fake: FakeOpenAI, daemon: DaemonFactory):
    client = await daemon({"providers": [instance(fake)]})
    async with sdk(client) as api:
        with pytest.raises(openai.NotFoundError) as caught:
            await api.chat.completions.create(model="gpt-4o-mimi", messages=[])
    assert "up/gpt-4o-mini" in caught.value.message or "gpt-4o-mini" in caught.value.message
    assert fake.received == []


async def test_image_models_are_not_chat_models(daemon: DaemonFactory, unused_tcp_port: int):
    closed = f"http://127.0.0.1:{unused_tcp_port}"
    client = await daemon({"providers": [{"name": "fal", "type": "fal", "base_url": closed}]})
    response = await client.post(
        "/v1/chat/completions", json={"model": "fal/fal-ai/flux/dev", "messages": []}
    )
    assert response.status == 400
    error = (await response.json())["error"]
    assert "no /chat/completions endpoint" in error["message"]
    assert error["param"] == "model"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "empty"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"messages": []}', "'model' is required"),
    ],
)
async def test_malformed_requests_are_400(
    fake: FakeOpenAI, daemon: DaemonFactory, body: bytes, message: str
):
    client = await daemon({"providers": [instance(fake)]})
    response = await client.post("/v1/chat/completions", data=body)
    assert response.status == 400
    assert message in (await response.json())["error"]["message"]


async def test_body_limit(fake: FakeOpenAI, daemon: DaemonFactory):
    """A request body over the size limit is refused with 413 request_too_large."""
    client = await daemon({"providers": [instance(fake)]})
    huge = b'{"model": "up/gpt-4o-mini", "prompt": "' + b"x" * (33 * 1024 * 1024) + b'"}'
    response = await client.post("/v1/completions", data=io.BytesIO(huge))
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "request_too_large"


async def test_unreachable_and_slow_upstreams_are_502_and_504(
    fake: FakeOpenAI, daemon: DaemonFactory, unused_tcp_port: int
):
    fake.delay = 2.0
    down = {
        "name": "down",
        "type": "openai",
        "base_url": f"http://127.0.0.1:{unused_tcp_port}/v1",
        "api_key": UPSTREAM_KEY,
    }
    client = await daemon({"providers": [down, instance(fake, "slow", chat_timeout_seconds=0.3)]})
    response = await client.post("/v1/chat/completions", json={"model": "down/m", "messages": []})
    assert response.status == 502
    error = (await response.json())["error"]
    assert "instance 'down'" in error["message"]
    assert UPSTREAM_KEY not in error["message"]
    response = await client.post("/v1/chat/completions", json={"model": "slow/m", "messages": []})
    assert response.status == 504
    assert "instance 'slow'" in (await response.json())["error"]["message"]


async def test_each_call_keeps_its_own_deadline_and_none_outlives_its_call(
    aiohttp_server: Any, daemon: DaemonFactory
):
    """One slow call is cut at the instance's chat_timeout_seconds while quick calls on the same
    instance, started after it, are answered; afterwards no deadline is left waiting."""

    async def answer(request: web.Request) -> web.Response:
        body = await request.json()
        if body["model"] == "slow":
            await asyncio.sleep(5)
        return web.json_response(completion(body["model"], "ok"))

    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    app.router.add_get("/v1/models", models_list)
    server = await aiohttp_server(app)
    upstream = {
        "name": "up",
        "type": "openai_compatible",
        "base_url": str(server.make_url("/v1")),
        "chat_timeout_seconds": 0.3,
    }
    client = await daemon({"providers": [upstream]})

    async def call(model: str) -> int:
        body = {"model": f"up/{model}", "messages": [{"role": "user", "content": "hi"}]}
        response = await client.post("/v1/chat/completions", json=body)
        await response.read()
        return response.status

    slow = asyncio.ensure_future(call("slow"))
    quick = [await call("quick") for _ in range(5)]
    assert quick == [200] * 5
    assert await slow == 504
    assert [await call("quick") for _ in range(3)] == [200] * 3


async def test_an_upstream_dying_mid_stream_ends_with_an_error_event(
    fake: FakeOpenAI, daemon: DaemonFactory
):
    fake.die_mid_stream = True
    client = await daemon({"providers": [instance(fake)]})
    pieces = []
    async with sdk(client) as api:
        stream = await api.chat.completions.create(model="up/gpt-4o-mini", messages=[], stream=True)

        async def read_all() -> None:
            async for part in stream:
                pieces.append(part.choices[0].delta.content)

        with pytest.raises(openai.APIError) as caught:
            await read_all()
    assert pieces == ["Hel", "lo"]
    assert "stopped in the middle" in caught.value.message


async def test_a_client_that_leaves_cancels_the_upstream_request(
    fake: FakeOpenAI, daemon: DaemonFactory
):
    fake.client_gone_wait = True
    client = await daemon({"providers": [instance(fake)]})
    url = client.make_url("/v1/chat/completions")
    body = {"model": "up/gpt-4o-mini", "messages": [], "stream": True}
    async with aiohttp.ClientSession() as session:
        response = await session.post(url, json=body)
        first = await response.content.readline()
        assert first.startswith(b"data: ")
        response.close()  # the client goes away mid-stream
    await asyncio.wait_for(fake.client_gone.wait(), 5)


@pytest.mark.parametrize(
    ("provider_type", "base_path", "chat_path", "auth"),
    [
        ("anthropic", "/v1", "/v1/chat/completions", True),
        ("gemini", "/v1beta", "/v1beta/openai/chat/completions", True),
        ("cohere", "/v1", "/compatibility/v1/chat/completions", True),
        ("ollama", "", "/v1/chat/completions", False),
        ("perplexity", "", "/chat/completions", True),
    ],
)
async def test_native_providers_are_reached_through_their_openai_compatible_endpoints(
    fake: FakeOpenAI,
    daemon: DaemonFactory,
    provider_type: str,
    base_path: str,
    chat_path: str,
    auth: bool,
):
    config: dict[str, Any] = {"name": "p", "type": provider_type, "base_url": fake.url + base_path}
    if auth:
        config["api_key"] = UPSTREAM_KEY
    client = await daemon({"providers": [config], "model_cache": {"use_catalog_fallback": False}})
    response = await client.post(
        "/v1/chat/completions", json={"model": "p/some-model", "messages": []}
    )
    assert response.status == 200, await response.text()
    received = fake.received[-1]
    assert received["path"] == chat_path
    assert received["body"]["model"] == "some-model"
    expected = f"Bearer {UPSTREAM_KEY}" if auth else None
    assert received["headers"].get("Authorization") == expected
