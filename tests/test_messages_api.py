"""POST /v1/messages through the official anthropic SDK, against an OpenAI-compatible upstream
on loopback: translated there and back, whole and streamed, tools, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import orjson
import pytest
from aiohttp import web

from tests.chat_streams import Recorder, chat_chunks, streamed
from tests.conftest import DaemonFactory, openai_compatible

TOKEN = "lr-token-messages-5d1e"
KEY = "sk-upstream-key-77c0a1"
USAGE = {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49}


class ChatUpstream(Recorder):
    """Answers Chat Completions: a tool call when tools are offered and no result came back
    yet, else text; whole or streamed as asked. Records what it was sent."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        if body["model"] == "limited":
            error = {"error": {"message": "slow down", "type": "rate_limit"}}
            return web.json_response(error, status=429)
        if body["model"] == "breaks":  # one chunk of text, then the connection drops
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            said = {"role": "assistant", "content": "Half an ans"}
            await response.write(b"data: " + orjson.dumps(chat_chunks(said, "stop", USAGE)[1]))
            await response.write(b"\n\n")
            assert request.transport is not None
            request.transport.abort()
            return response
        last = body["messages"][-1]
        if body.get("tools") and last["role"] != "tool":
            call = {
                "id": "call_7",
                "type": "function",
                "function": {"name": "read_file", "arguments": '{"path": "notes.txt"}'},
            }
            said: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [call]}
            finish = "tool_calls"
        else:
            text = "The file says hi." if last["role"] == "tool" else "Hello from the lab!"
            said, finish = {"role": "assistant", "content": text}, "stop"
        if body["model"] == "thinker":  # reasons aloud, as vLLM and DeepSeek report it
            said["reasoning_content"] = "The user greets me; greet back."
        if not body.get("stream"):
            answer = {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [{"index": 0, "message": said, "finish_reason": finish}],
                "usage": USAGE,
            }
            return web.json_response(answer)
        return await streamed(request, chat_chunks(said, finish, USAGE))


async def _listed(request: web.Request) -> web.Response:
    thinker = {
        "id": "thinker",
        "supported_parameters": ["reasoning", "tools"],
        "max_completion_tokens": 8192,
    }
    return web.json_response({"data": [{"id": "qwen3-coder"}, {"id": "limited"}, thinker]})


@pytest.fixture
async def sdk(
    aiohttp_server: Any, daemon: DaemonFactory
) -> AsyncIterator[tuple[anthropic.AsyncAnthropic, ChatUpstream]]:
    fake = ChatUpstream()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake.handle)
    app.router.add_get("/v1/models", _listed)
    server = await aiohttp_server(app)
    config = {
        "server": {"auth_token": TOKEN},
        "providers": [openai_compatible("lab", str(server.make_url("/v1")), api_key=KEY)],
    }
    client = await daemon(config)
    async with anthropic.AsyncAnthropic(
        base_url=str(client.make_url("")), api_key=TOKEN, max_retries=0
    ) as sdk_client:
        yield sdk_client, fake


READ_FILE = {
    "name": "read_file",
    "description": "Read a file",
    "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}},
}


async def test_a_message_is_translated_there_and_back(sdk: Any):
    client, fake = sdk
    answer = await client.messages.create(
        model="lab/qwen3-coder",
        max_tokens=256,
        system="Be brief.",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Hello?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"},
                    },
                ],
            }
        ],
    )
    assert answer.content[0].type == "text"
    assert answer.content[0].text == "Hello from the lab!"
    assert answer.stop_reason == "end_turn"
    assert answer.model == "lab/qwen3-coder"
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (42, 7)
    sent = fake.bodies[-1]
    assert sent["model"] == "qwen3-coder"
    assert sent["max_tokens"] == 256
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["messages"][1]["content"][1]["image_url"]["url"] == "data:image/png;base64,iVBORw0K"
    assert fake.headers[-1]["Authorization"] == f"Bearer {KEY}"
    assert TOKEN not in str(fake.headers[-1])


async def test_a_stream_accumulates_to_the_whole_message(sdk: Any):
    client, _ = sdk
    request = {
        "model": "lab/qwen3-coder",
        "max_tokens": 64,
        "tools": [READ_FILE],
        "messages": [{"role": "user", "content": "What is in notes.txt?"}],
    }
    whole = await client.messages.create(**request)
    async with client.messages.stream(**request) as stream:
        streamed = await stream.get_final_message()
    assert streamed.model_dump() == whole.model_dump()
    assert whole.stop_reason == "tool_use"
    assert whole.content[0].type == "tool_use"
    assert whole.content[0].input == {"path": "notes.txt"}


async def test_thinking_asks_a_reasoning_model_for_effort_and_shows_its_reasoning(sdk: Any):
    client, fake = sdk
    request = {
        "model": "lab/thinker",
        "max_tokens": 64,
        "thinking": {"type": "enabled", "budget_tokens": 31999},
        "messages": [{"role": "user", "content": "Hi"}],
    }
    whole = await client.messages.create(**{**request, "max_tokens": 20000})
    assert fake.bodies[-1]["reasoning_effort"] == "high"
    assert fake.bodies[-1]["max_tokens"] == 8192  # a ceiling: lowered to the model's limit
    async with client.messages.stream(**request) as stream:
        streamed = await stream.get_final_message()
    assert streamed.model_dump() == whole.model_dump()
    assert [block.type for block in whole.content] == ["thinking", "text"]
    assert whole.content[0].thinking == "The user greets me; greet back."
    unasked = await client.messages.create(**{**request, "thinking": {"type": "disabled"}})
    assert [block.type for block in unasked.content] == ["text"]
    assert "reasoning_effort" not in fake.bodies[-1]
    await client.messages.create(**{**request, "model": "lab/qwen3-coder"})
    assert "reasoning_effort" not in fake.bodies[-1]  # not a reasoning model


async def test_an_upstream_that_breaks_mid_stream_ends_it_with_an_error_event(sdk: Any):
    client, _ = sdk
    request = {
        "model": "lab/breaks",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "Hi"}],
    }
    received: list[str] = []

    async def read_all() -> None:
        async with client.messages.stream(**request) as stream:
            async for event in stream:
                received.append(event.type)

    with pytest.raises(anthropic.APIStatusError) as broken:
        await read_all()
    assert received[:2] == ["message_start", "content_block_start"]  # what came is passed on
    assert broken.value.body["error"]["type"] == "api_error"
    assert "instance 'lab'" in broken.value.message
    assert "stopped in the middle of the answer" in broken.value.message


async def test_a_tool_round_trip(sdk: Any):
    """A tool call makes the round trip through /v1/messages: the upstream's call comes back as a
    tool_use block, and the tool_result goes upstream as a tool message with the same call id."""
    client, fake = sdk
    question = {"role": "user", "content": "What is in notes.txt?"}
    first = await client.messages.create(
        model="lab/qwen3-coder", max_tokens=64, tools=[READ_FILE], messages=[question]
    )
    call = first.content[0]
    assert call.type == "tool_use"
    final = await client.messages.create(
        model="lab/qwen3-coder",
        max_tokens=64,
        tools=[READ_FILE],
        messages=[
            question,
            {"role": "assistant", "content": [block.model_dump() for block in first.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "hi"}],
            },
        ],
    )
    assert final.content[0].text == "The file says hi."
    assert final.stop_reason == "end_turn"
    sent = fake.bodies[-1]["messages"]
    assert sent[-2]["tool_calls"][0]["id"] == call.id
    assert sent[-1] == {"role": "tool", "tool_call_id": call.id, "content": "hi"}


async def test_errors_come_back_as_the_sdk_expects(sdk: Any):
    client, _ = sdk
    ask = {"max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(anthropic.NotFoundError) as missing:
        await client.messages.create(model="nowhere/model", **ask)
    assert missing.value.body["error"]["type"] == "not_found_error"
    assert "nowhere/model" in missing.value.message
    with pytest.raises(anthropic.RateLimitError) as limited:
        await client.messages.create(model="lab/limited", **ask)
    assert "slow down" in limited.value.message
    async with anthropic.AsyncAnthropic(
        base_url=str(client.base_url), api_key="wrong", max_retries=0
    ) as stranger:
        with pytest.raises(anthropic.AuthenticationError):
            await stranger.messages.create(model="lab/qwen3-coder", **ask)


class AnthropicUpstream:
    """Speaks Messages itself: records what arrived, answers whole or as Anthropic's events."""

    def __init__(self) -> None:
        self.seen: list[tuple[dict[str, Any], dict[str, str], str]] = []

    async def models(self, request: web.Request) -> web.Response:
        listed = [
            {
                "type": "model",
                "id": "claude-native-1",
                "display_name": "Native",
                "created_at": "2025-05-01T00:00:00Z",
            }
        ]
        return web.json_response({"data": listed, "has_more": False})

    async def count(self, request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"input_tokens": 17 if body["model"] == "claude-native-1" else 0})

    async def messages(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.seen.append((body, dict(request.headers), request.query_string))
        if request.headers.get("x-api-key") != KEY:
            return web.json_response(
                {"type": "error", "error": {"type": "authentication_error", "message": "bad key"}},
                status=401,
            )
        whole = {
            "id": "msg_native",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [{"type": "text", "text": "native hello"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 3, "output_tokens": 2},
        }
        if not body.get("stream"):
            return web.json_response(whole)
        start = {**whole, "content": [], "stop_reason": None}
        events = [
            ("message_start", {"type": "message_start", "message": start}),
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            ("ping", {"type": "ping"}),
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": "native "},
                },
            ),
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": "hello"},
                },
            ),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": 2},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for name, data in events:
            await response.write(f"event: {name}\ndata: ".encode() + orjson.dumps(data) + b"\n\n")
        return response


@pytest.mark.parametrize(
    "config",
    [
        {"type": "anthropic"},
        {"type": "openai_compatible", "messages": "native"},  # an Anthropic-compatible server
    ],
)
async def test_a_native_instance_gets_the_request_as_it_came(
    config: dict[str, Any], aiohttp_server: Any, daemon: DaemonFactory
):
    fake = AnthropicUpstream()
    app = web.Application()
    app.router.add_get("/v1/models", fake.models)
    app.router.add_post("/v1/messages", fake.messages)
    app.router.add_post("/v1/messages/count_tokens", fake.count)
    server = await aiohttp_server(app)
    instance = {"name": "cl", "base_url": str(server.make_url("/v1")), "api_key": KEY, **config}
    client = await daemon({"server": {"auth_token": TOKEN}, "providers": [instance]})
    async with anthropic.AsyncAnthropic(
        base_url=str(client.make_url("")), api_key=TOKEN, max_retries=0
    ) as sdk_client:
        request = {
            "model": "cl/claude-native-1",
            "max_tokens": 32,
            "messages": [{"role": "user", "content": "hi"}],
            "thinking": {"type": "enabled", "budget_tokens": 1024},
        }
        whole = await sdk_client.messages.create(
            **request,
            extra_headers={
                "anthropic-beta": "context-management-2025-06-27",
                "anthropic-version": "2023-06-01",  # the client's version is what goes up
            },
            extra_query={"beta": "true"},
        )
        async with sdk_client.messages.stream(**request) as stream:
            streamed = await stream.get_final_message()
        counted = await sdk_client.messages.count_tokens(
            model="cl/claude-native-1", messages=request["messages"]
        )
    assert counted.input_tokens == 17  # the instance's own count
    assert whole.content[0].text == "native hello"
    assert streamed.model_dump() == whole.model_dump()
    body, headers, query = fake.seen[0]
    assert body["model"] == "claude-native-1"
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 1024}  # untouched
    assert headers["x-api-key"] == KEY
    assert headers["anthropic-beta"] == "context-management-2025-06-27"
    assert headers["anthropic-version"] == "2023-06-01"
    assert query == "beta=true"
    assert TOKEN not in str(headers)


async def test_count_tokens_is_a_local_estimate_elsewhere_and_never_fails(sdk: Any):
    client, fake = sdk
    calls = len(fake.bodies)
    messages = [{"role": "user", "content": "x" * 400}]
    raw = await client.messages.with_raw_response.count_tokens(
        model="lab/qwen3-coder", messages=messages
    )
    assert raw.headers["x-localrouter-estimate"] == "true"
    assert (await raw.parse()).input_tokens == 400 // 4 + 3  # 4 characters a token, 3 a message
    with_image = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "x" * 40},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "A" * 9000},
                },
            ],
        }
    ]
    counted = await client.messages.count_tokens(model="nowhere/model", messages=with_image)
    assert counted.input_tokens == 40 // 4 + 3 + 1600  # an image is a flat figure, not its bytes
    assert len(fake.bodies) == calls  # an estimate never calls the upstream


async def test_anthropic_clients_see_the_list_in_their_shape(sdk: Any):
    client, _ = sdk
    first = await client.models.list(limit=1)
    assert [model.id for model in first.data] == ["lab/limited"]
    assert first.has_more is True
    everything = [model.id async for model in client.models.list(limit=1)]  # pages by after_id
    assert everything == ["lab/limited", "lab/qwen3-coder", "lab/thinker"]
    default = await client.models.list()
    assert [model.id for model in default.data] == everything
    assert default.has_more is False
    one = await client.models.retrieve("lab/qwen3-coder")
    assert (one.type, one.id, one.display_name) == ("model", "lab/qwen3-coder", "lab/qwen3-coder")
    assert one.created_at.year == 1970  # the upstream gave no date
    bare = await client.models.retrieve("qwen3-coder")  # a bare id resolves as chat does
    assert bare.id == "lab/qwen3-coder"
    with pytest.raises(anthropic.NotFoundError):
        await client.models.retrieve("lab/nothing")
    with pytest.raises(anthropic.BadRequestError):
        await client.models.list(limit=0)
