"""POST /v1/responses through the official openai SDK (`client.responses`), against loopback
upstreams: translated to Chat Completions and back, whole and streamed, function tools,
structured output, dropped built-in tools, errors; and passed through to a native one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import orjson
import pytest
from aiohttp import web

from tests.chat_streams import CREATED, Recorder, chat_chunks
from tests.conftest import DaemonFactory, openai_compatible

TOKEN = "lr-token-responses-83aa"
KEY = "sk-upstream-key-responses-1f0c"
USAGE = {
    "prompt_tokens": 30,
    "completion_tokens": 9,
    "total_tokens": 39,
    "prompt_tokens_details": {"cached_tokens": 10},
    "completion_tokens_details": {"reasoning_tokens": 4},
}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


class ChatModel(Recorder):
    """A Chat Completions upstream: calls get_weather when offered it and no result came back,
    answers JSON when a schema is asked for, else text; breaks mid-way for model `breaks`."""

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        if body["model"] == "limited":
            error = {"error": {"message": "slow down", "type": "rate_limit"}}
            return web.json_response(error, status=429)
        last = body["messages"][-1]
        said: dict[str, Any]
        if body.get("tools") and last["role"] != "tool":
            arguments = orjson.dumps({"city": "Paris"}).decode()
            call = {
                "id": "call_w1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": arguments},
            }
            said, finish = (
                {"role": "assistant", "content": None, "tool_calls": [call]},
                "tool_calls",
            )
        elif body.get("response_format", {}).get("type") == "json_schema":
            said, finish = {"role": "assistant", "content": '{"city": "Paris", "c": 21}'}, "stop"
        else:
            text = "Sunny, 21 C." if last["role"] == "tool" else "Hello from the lab!"
            said, finish = {"role": "assistant", "content": text}, "stop"
        chunks = chat_chunks(said, finish, USAGE)
        if not body.get("stream"):
            answer = {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": CREATED,
                "model": body["model"],
                "choices": [{"index": 0, "message": said, "finish_reason": finish}],
                "usage": USAGE,
            }
            return web.json_response(answer)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for chunk in chunks[:2] if body["model"] == "breaks" else chunks:
            await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        if body["model"] == "breaks":
            assert request.transport is not None
            request.transport.abort()
            return response
        await response.write(b"data: [DONE]\n\n")
        return response

    async def models(self, request: web.Request) -> web.Response:
        ids = ["qwen3-coder", "limited", "breaks"]
        return web.json_response({"data": [{"id": model_id} for model_id in ids]})


class NativeModel(Recorder):
    """Speaks Responses itself: records the request and answers with a canned Response."""

    async def responses(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        item = {
            "id": "msg_n1",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "Native hello.", "annotations": []}],
        }
        answer = {
            "id": "resp_native",
            "object": "response",
            "created_at": CREATED,
            "status": "completed",
            "model": body["model"],
            "output": [item],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
        }
        if not body.get("stream"):
            return web.json_response(answer)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        events = [
            ("response.created", {"response": {**answer, "status": "in_progress", "output": []}}),
            ("response.output_item.added", {"output_index": 0, "item": item}),
            ("response.output_item.done", {"output_index": 0, "item": item}),
            ("response.completed", {"response": answer}),
        ]
        for number, (name, data) in enumerate(events):
            event = {"type": name, "sequence_number": number, **data}
            await response.write(f"event: {name}\ndata: ".encode() + orjson.dumps(event) + b"\n\n")
        return response

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "gpt-5"}]})


@pytest.fixture
async def sdk(
    aiohttp_server: Any, daemon: DaemonFactory
) -> AsyncIterator[tuple[openai.AsyncOpenAI, ChatModel, NativeModel]]:
    chat, native = ChatModel(), NativeModel()
    chat_app = web.Application()
    chat_app.router.add_post("/v1/chat/completions", chat.chat)
    chat_app.router.add_get("/v1/models", chat.models)
    native_app = web.Application()
    native_app.router.add_post("/v1/responses", native.responses)
    native_app.router.add_get("/v1/models", native.models)
    chat_server, native_server = await aiohttp_server(chat_app), await aiohttp_server(native_app)
    config = {
        "server": {"auth_token": TOKEN},
        "providers": [
            openai_compatible("lab", str(chat_server.make_url("/v1")), api_key=KEY),
            {
                "name": "oa",
                "type": "openai",
                "base_url": str(native_server.make_url("/v1")),
                "api_key": KEY,
            },
        ],
    }
    client = await daemon(config)
    base = str(client.make_url("/v1"))
    async with openai.AsyncOpenAI(base_url=base, api_key=TOKEN, max_retries=0) as sdk_client:
        yield sdk_client, chat, native


async def test_a_response_is_translated_there_and_back(sdk: Any):
    client, chat, _ = sdk
    answer = await client.responses.create(
        model="lab/qwen3-coder",
        instructions="Be brief.",
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Hello?"},
                    {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0K"},
                ],
            }
        ],
        max_output_tokens=100,
        temperature=0.3,
    )
    assert answer.output_text == "Hello from the lab!"
    assert answer.status == "completed"
    assert answer.model == "lab/qwen3-coder"
    assert answer.usage is not None
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (30, 9)
    assert answer.usage.input_tokens_details.cached_tokens == 10
    assert answer.usage.output_tokens_details.reasoning_tokens == 4
    sent = chat.bodies[-1]
    assert sent["model"] == "qwen3-coder"
    assert sent["max_tokens"] == 100
    assert sent["temperature"] == 0.3
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["messages"][1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,iVBORw0K"},
    }
    assert chat.headers[-1]["Authorization"] == f"Bearer {KEY}"
    assert TOKEN not in str(chat.headers[-1])


async def test_a_stream_ends_with_the_whole_response(sdk: Any):
    client, _, _ = sdk
    for request in (
        {"model": "lab/qwen3-coder", "input": "Hi"},
        {"model": "lab/qwen3-coder", "input": "Weather in Paris?", "tools": [WEATHER]},
    ):
        whole = await client.responses.create(**request)
        async with client.responses.stream(**request) as stream:
            kinds = [event.type async for event in stream]
            streamed = await stream.get_final_response()
        assert _unnamed(streamed.model_dump()) == _unnamed(whole.model_dump())
        assert streamed.id != whole.id
        assert kinds[:2] == ["response.created", "response.in_progress"]
        assert kinds[-1] == "response.completed"
    assert whole.output[0].type == "function_call"
    assert "response.function_call_arguments.delta" in kinds


def _unnamed(value: Any) -> Any:
    """A Response without its ids (each response gets a new one) and without the `parsed`
    fields the SDK's stream helper adds."""
    if isinstance(value, dict):
        return {
            key: _unnamed(item)
            for key, item in value.items()
            if not key.startswith("parsed") and key != "id"
        }
    if isinstance(value, list):
        return [_unnamed(item) for item in value]
    return value


async def test_a_function_tool_round_trip(sdk: Any):
    """A function call makes the round trip through /v1/responses: the upstream's call comes back as
    a function_call item, and its output goes upstream as a tool message with the same call id."""
    client, chat, _ = sdk
    question = {"role": "user", "content": "Weather in Paris?"}
    first = await client.responses.create(
        model="lab/qwen3-coder", input=[question], tools=[WEATHER]
    )
    call = first.output[0]
    assert call.type == "function_call"
    assert (call.name, call.call_id, call.arguments) == (
        "get_weather",
        "call_w1",
        '{"city":"Paris"}',
    )
    result = {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21"}
    final = await client.responses.create(
        model="lab/qwen3-coder",
        input=[question, call.model_dump(exclude_none=True), result],
        tools=[WEATHER],
    )
    assert final.output_text == "Sunny, 21 C."
    sent = chat.bodies[-1]["messages"]
    assert sent[-2]["tool_calls"][0]["id"] == "call_w1"
    assert sent[-1] == {"role": "tool", "tool_call_id": "call_w1", "content": "sunny, 21"}


async def test_structured_output_maps_to_response_format(sdk: Any):
    client, chat, _ = sdk
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "c": {"type": "number"}}}
    answer = await client.responses.create(
        model="lab/qwen3-coder",
        input="Weather as JSON",
        text={
            "format": {"type": "json_schema", "name": "weather", "schema": schema, "strict": True}
        },
    )
    assert orjson.loads(answer.output_text) == {"city": "Paris", "c": 21}
    assert chat.bodies[-1]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "weather", "schema": schema, "strict": True},
    }


async def test_built_in_tools_are_dropped_and_said_so_unless_required(sdk: Any):
    client, chat, _ = sdk
    raw = await client.responses.with_raw_response.create(
        model="lab/qwen3-coder", input="Hi", tools=[{"type": "web_search"}]
    )
    assert raw.headers["x-localrouter-dropped-tools"] == "web_search"
    assert raw.parse().output_text == "Hello from the lab!"
    assert "tools" not in chat.bodies[-1]
    with pytest.raises(openai.BadRequestError) as refused:
        await client.responses.create(
            model="lab/qwen3-coder",
            input="Hi",
            tools=[{"type": "web_search"}],
            tool_choice={"type": "web_search"},
        )
    assert "web_search" in refused.value.message


async def test_errors_come_back_as_the_sdk_expects(sdk: Any):
    client, _, _ = sdk
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(model="nowhere/model", input="Hi")
    with pytest.raises(openai.RateLimitError) as limited:
        await client.responses.create(model="lab/limited", input="Hi")
    assert "slow down" in limited.value.message
    async with openai.AsyncOpenAI(
        base_url=str(client.base_url), api_key="wrong", max_retries=0
    ) as stranger:
        with pytest.raises(openai.AuthenticationError):
            await stranger.responses.create(model="lab/qwen3-coder", input="Hi")


async def test_an_upstream_that_breaks_mid_stream_fails_the_response(sdk: Any):
    client, _, _ = sdk
    kinds: list[str] = []

    async def read_all() -> None:
        async with client.responses.stream(model="lab/breaks", input="Hi") as stream:
            async for event in stream:
                kinds.append(event.type)

    with pytest.raises(openai.APIError) as broken:
        await read_all()
    assert "stopped in the middle of the answer" in broken.value.message
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.failed"


async def test_a_native_instance_gets_the_request_as_it_came(sdk: Any):
    client, chat, native = sdk
    calls = len(chat.bodies)
    request = {"model": "oa/gpt-5", "input": "Hi", "tools": [{"type": "web_search"}]}
    whole = await client.responses.create(**request)
    assert whole.output_text == "Native hello."
    assert native.bodies[-1] == {**request, "model": "gpt-5"}  # built-in tools kept
    assert native.headers[-1]["Authorization"] == f"Bearer {KEY}"
    async with client.responses.stream(**request) as stream:
        streamed = await stream.get_final_response()
    assert streamed.output_text == "Native hello."
    assert native.bodies[-1]["stream"] is True
    assert len(chat.bodies) == calls


async def test_previous_response_id_continues_a_stored_conversation(sdk: Any):
    client, chat, _ = sdk
    first = await client.responses.create(model="lab/qwen3-coder", input="Hi")
    second = await client.responses.create(
        model="lab/qwen3-coder", input="And again?", previous_response_id=first.id
    )
    assert second.output_text == "Hello from the lab!"
    assert [(m["role"], m["content"]) for m in chat.bodies[-1]["messages"]] == [
        ("user", "Hi"),
        ("assistant", "Hello from the lab!"),
        ("user", "And again?"),
    ]
    kept = await client.responses.retrieve(first.id)
    assert kept.model_dump() == first.model_dump()
    gone = await client.responses.delete(first.id)
    assert gone is None  # the SDK returns nothing for a 200 delete
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError) as unknown:
        await client.responses.create(
            model="lab/qwen3-coder", input="?", previous_response_id=first.id
        )
    assert "whole conversation" in unknown.value.message


async def test_store_false_leaves_nothing_behind(sdk: Any):
    client, _, _ = sdk
    async with client.responses.stream(model="lab/qwen3-coder", input="Hi", store=False) as stream:
        unkept = await stream.get_final_response()
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(unkept.id)
    async with client.responses.stream(model="lab/qwen3-coder", input="Hi") as stream:
        kept = await stream.get_final_response()
    assert (await client.responses.retrieve(kept.id)).output_text == "Hello from the lab!"
