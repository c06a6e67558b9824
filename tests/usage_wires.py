"""Loopback upstreams that speak each wire format as its reference documents it, for the usage
tests (tests/test_usage_*.py), and what those tests share: the prices, the counts each upstream
reports and what they come to in the ledger's convention, the daemon's config, and the
generation record read back over HTTP.

- OpenAI (Chat Completions, completions, embeddings, Responses): a stream carries usage only
  when asked (`stream_options.include_usage`); then every chunk has `"usage":null` and a last
  chunk with `"choices":[]` holds the counts. Not asked, no chunk has a usage field at all.
- Anthropic Messages: `message_start` holds the input counts (cache reads and writes apart),
  `message_delta` the output count.
- Responses: `response.completed` holds the counts.
- Ollama: the last line (`done: true`) holds `prompt_eval_count` and `eval_count`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import httpx
import ollama
import openai
import orjson
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from localrouter.app import COMPONENTS
from tests.conftest import eventually

CREATED = 1_800_000_000
FINGERPRINT = "fp_44709d6fcb"
UPSTREAM_KEY = "sk-usage-upstream-4b1d9e"
REQUEST_ID = "x-localrouter-request-id"
# USD per million tokens (config/usage.py): every priced instance of these tests.
PRICING = {"input": 3, "output": 15, "cache_read": 0.3, "cache_write": 3.75}
WORDS = ("Hel", "lo", " world")
TEXT = "".join(WORDS)
HELLO = [{"role": "user", "content": "Say hello."}]

# What each upstream reports, in its own wire format.
CHAT_USAGE = {
    "prompt_tokens": 1500,  # the 1000 cached ones included
    "completion_tokens": 200,  # the 64 reasoning ones included
    "total_tokens": 1700,
    "prompt_tokens_details": {"cached_tokens": 1000, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 64,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
COMPLETION_USAGE = {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42}
EMBEDDING_USAGE = {"prompt_tokens": 8, "total_tokens": 8}
RESPONSES_USAGE = {
    "input_tokens": 1500,
    "input_tokens_details": {"cached_tokens": 1000},
    "output_tokens": 200,
    "output_tokens_details": {"reasoning_tokens": 64},
    "total_tokens": 1700,
}
ANTHROPIC_START_USAGE = {  # input_tokens leaves out the cache reads and writes
    "input_tokens": 500,
    "cache_creation_input_tokens": 200,
    "cache_read_input_tokens": 1000,
    "output_tokens": 1,
}
ANTHROPIC_USAGE = {**ANTHROPIC_START_USAGE, "output_tokens": 200}
OLLAMA_COUNTS = {
    "total_duration": 4883583458,
    "load_duration": 1334875,
    "prompt_eval_count": 40,
    "prompt_eval_duration": 342546000,
    "eval_count": 10,
    "eval_duration": 4535599000,
}
OLLAMA_EMBED_COUNT = 6


@dataclass(frozen=True, slots=True)
class Expected:
    """A record's tokens in the ledger's convention (input inclusive of cache reads and
    writes) and its cost at PRICING, as /api/v1/generation shows them."""

    input: int
    output: int
    cache_read: int = 0
    cache_write: int = 0
    reasoning: int = 0
    cost: float | None = None

    def fields(self) -> dict[str, Any]:
        return {
            "tokens_prompt": self.input,
            "tokens_completion": self.output,
            "native_tokens_cached": self.cache_read,
            "cache_write_tokens": self.cache_write,
            "native_tokens_reasoning": self.reasoning,
            "total_cost": self.cost,
        }


# (500 uncached x 3 + 1000 cached x 0.3 + 200 out x 15) / 1e6; reasoning is output.
CHAT = Expected(1500, 200, cache_read=1000, reasoning=64, cost=0.0048)
COMPLETION = Expected(12, 30, cost=0.000486)  # (12 x 3 + 30 x 15) / 1e6
EMBEDDING = Expected(8, 0, cost=0.000024)
# 500 + 1000 read + 200 written: (500 x 3 + 1000 x 0.3 + 200 x 3.75 + 200 x 15) / 1e6
ANTHROPIC = Expected(1700, 200, cache_read=1000, cache_write=200, cost=0.00555)
OLLAMA = Expected(40, 10, cost=0.00027)
OLLAMA_EMBED = Expected(OLLAMA_EMBED_COUNT, 0, cost=0.000018)


def asked_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


async def sse(
    request: web.Request, events: list[bytes], *, stalls: bool = False
) -> web.StreamResponse:
    """Events as a text/event-stream, one write each; with `stalls`, the first three and then
    nothing until the reader leaves (the handler is cancelled then)."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
    await response.prepare(request)
    for event in events[:3] if stalls else events:
        await response.write(event)
    if stalls:
        await asyncio.Event().wait()  # never set: cancelled when the daemon hangs up
    await response.write_eof()
    return response


@dataclass
class OpenAIWire:
    """OpenAI's API: /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings and
    /v1/responses. Model `overloaded` answers 503; model `stalls` streams its first chunks,
    then nothing, never its usage, until the client leaves (`left` is set then); model
    `strict` refuses `stream_options` with a 400, as LM Studio does; model
    `crlf-buffered` ends its events' lines with CRLF (as servers built on sse-starlette do,
    llama-cpp-python's among them) and sends its whole stream in one write."""

    bodies: list[dict[str, Any]] = field(default_factory=list)
    left: asyncio.Event = field(default_factory=asyncio.Event)
    # When given, chat answers wait until it is set (calls in flight, for the limits' tests).
    gate: asyncio.Event | None = None
    # When given, /v1/models lists it as gpt-4o-mini's output limit (max_completion_tokens).
    output_limit: int | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_post("/v1/responses", self.responses)
        return app

    async def models(self, _: web.Request) -> web.Response:
        ids = ("gpt-4o-mini", "qwen3-coder", "text-embedding-3-small", "zz-private-finetune-7")
        data = [{"id": i, "object": "model", "created": CREATED, "owned_by": "system"} for i in ids]
        if self.output_limit is not None:
            data[0]["max_completion_tokens"] = self.output_limit
        return web.json_response({"object": "list", "data": data})

    async def _take(self, request: web.Request) -> dict[str, Any]:
        body: dict[str, Any] = await request.json()
        self.bodies.append(body)
        return body

    async def _stream(
        self, request: web.Request, body: dict[str, Any], chunks: list[dict[str, Any]], usage: Any
    ) -> web.StreamResponse:
        if asked_usage(body):
            last = {key: value for key, value in chunks[-1].items() if key != "choices"}
            chunks = [{**chunk, "usage": None} for chunk in chunks]
            chunks.append({**last, "choices": [], "usage": usage})
        end = b"\r\n\r\n" if body["model"] == "crlf-buffered" else b"\n\n"
        events = [b"data: " + orjson.dumps(chunk) + end for chunk in chunks] + [
            b"data: [DONE]" + end
        ]
        if body["model"] == "crlf-buffered":
            events = [b"".join(events)]
        stalls = body["model"] == "stalls"
        try:
            return await sse(request, events, stalls=stalls)
        except asyncio.CancelledError:
            self.left.set()
            raise

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._take(request)
        model = body["model"]
        if self.gate is not None:
            await self.gate.wait()
        if model == "overloaded":
            error = {"message": "The server is overloaded", "type": "server_error", "code": None}
            return web.json_response({"error": error}, status=503)
        if model == "strict" and "stream_options" in body:  # as LM Studio answers it
            return web.json_response({"error": "Unrecognized key(s): 'stream_options'"}, status=400)
        head = {
            "id": "chatcmpl-u1",
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
        }
        if not body.get("stream"):
            message = {"role": "assistant", "content": TEXT, "refusal": None, "annotations": []}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
            return web.json_response({**head, "choices": [choice], "usage": CHAT_USAGE})
        deltas = [
            ({"role": "assistant", "content": "", "refusal": None}, None),
            *(({"content": word}, None) for word in WORDS),
            ({}, "stop"),
        ]
        chunks = [
            {
                **head,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": end}],
            }
            for delta, end in deltas
        ]
        return await self._stream(request, body, chunks, CHAT_USAGE)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._take(request)
        head = {
            "id": "cmpl-u1",
            "object": "text_completion",
            "created": CREATED,
            "model": body["model"],
            "system_fingerprint": FINGERPRINT,
        }
        if not body.get("stream"):
            choice = {"text": TEXT, "index": 0, "logprobs": None, "finish_reason": "stop"}
            return web.json_response({**head, "choices": [choice], "usage": COMPLETION_USAGE})
        pieces = [(word, None) for word in WORDS] + [("", "stop")]
        chunks = [
            {
                **head,
                "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": end}],
            }
            for text, end in pieces
        ]
        return await self._stream(request, body, chunks, COMPLETION_USAGE)

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await self._take(request)
        row = {"object": "embedding", "index": 0, "embedding": [0.0023, -0.0093, 0.0156]}
        answer = {"object": "list", "data": [row], "model": body["model"], "usage": EMBEDDING_USAGE}
        return web.json_response(answer)

    async def responses(self, request: web.Request) -> web.StreamResponse:
        body = await self._take(request)
        model = body["model"]
        item_id = "msg_u1"
        part = {"type": "output_text", "annotations": [], "logprobs": [], "text": TEXT}
        item = {
            "id": item_id,
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [part],
        }
        done = response_object(model, "completed", [item], RESPONSES_USAGE)
        if not body.get("stream"):
            return web.json_response(done)
        at = {"item_id": item_id, "output_index": 0, "content_index": 0}
        started = response_object(model, "in_progress", [], None)
        events: list[tuple[str, dict[str, Any]]] = [
            ("response.created", {"response": started}),
            ("response.in_progress", {"response": started}),
            (
                "response.output_item.added",
                {"output_index": 0, "item": {**item, "status": "in_progress", "content": []}},
            ),
            ("response.content_part.added", {**at, "part": {**part, "text": ""}}),
            *(
                ("response.output_text.delta", {**at, "delta": word, "logprobs": []})
                for word in WORDS
            ),
            ("response.output_text.done", {**at, "text": TEXT, "logprobs": []}),
            ("response.content_part.done", {**at, "part": part}),
            ("response.output_item.done", {"output_index": 0, "item": item}),
            ("response.completed", {"response": done}),
        ]
        framed = [
            f"event: {name}\ndata: ".encode()
            + orjson.dumps({"type": name, "sequence_number": number, **data})
            + b"\n\n"
            for number, (name, data) in enumerate(events)
        ]
        return await sse(request, framed)


def response_object(
    model: str, status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None
) -> dict[str, Any]:
    """A Response as OpenAI's Responses API shows one, its usage at its end."""
    return {
        "id": "resp_u1",
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": {},
    }


@dataclass
class AnthropicWire:
    """Anthropic's API: /v1/models and /v1/messages, whole or as its events."""

    bodies: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/messages", self.messages)
        return app

    async def models(self, _: web.Request) -> web.Response:
        model = {
            "type": "model",
            "id": "claude-sonnet-4-5",
            "display_name": "Claude Sonnet 4.5",
            "created_at": "2025-09-29T00:00:00Z",
        }
        page = {"data": [model], "has_more": False, "first_id": model["id"], "last_id": model["id"]}
        return web.json_response(page)

    async def messages(self, request: web.Request) -> web.StreamResponse:
        body: dict[str, Any] = await request.json()
        self.bodies.append(body)
        whole = {
            "id": "msg_u1",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [{"type": "text", "text": TEXT}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": ANTHROPIC_USAGE,
        }
        if not body.get("stream"):
            return web.json_response(whole)
        start = {**whole, "content": [], "stop_reason": None, "usage": ANTHROPIC_START_USAGE}
        block = {"type": "text", "text": ""}
        events: list[tuple[str, dict[str, Any]]] = [
            ("message_start", {"message": start}),
            ("content_block_start", {"index": 0, "content_block": block}),
            ("ping", {}),
            *(
                ("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": w}})
                for w in WORDS
            ),
            ("content_block_stop", {"index": 0}),
            (
                "message_delta",
                {
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": ANTHROPIC_USAGE["output_tokens"]},
                },
            ),
            ("message_stop", {}),
        ]
        framed = [
            f"event: {name}\ndata: ".encode() + orjson.dumps({"type": name, **data}) + b"\n\n"
            for name, data in events
        ]
        return await sse(request, framed)


@dataclass
class OllamaWire:
    """Ollama's API: /api/tags, and /api/chat, /api/generate (streamed unless `stream: false`,
    as newline-delimited JSON) and /api/embed."""

    bodies: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/tags", self.tags)
        app.router.add_post("/api/chat", self.chat)
        app.router.add_post("/api/generate", self.generate)
        app.router.add_post("/api/embed", self.embed)
        return app

    async def tags(self, _: web.Request) -> web.Response:
        models = [
            {
                "name": name,
                "model": name,
                "modified_at": "2025-05-01T10:00:00.000000+02:00",
                "size": 5225388164,
                "digest": "a" * 64,
                "details": {"format": "gguf", "family": family, "parameter_size": size},
            }
            for name, family, size in (("qwen3:8b", "qwen3", "8.2B"), ("all-minilm", "bert", "23M"))
        ]
        return web.json_response({"models": models})

    async def _answer(
        self, request: web.Request, said: Callable[[str], dict[str, Any]], last: dict[str, Any]
    ) -> web.StreamResponse:
        body: dict[str, Any] = await request.json()
        self.bodies.append(body)
        head = {"model": body["model"], "created_at": "2025-05-01T10:00:00.000000Z"}
        done = {"done_reason": "stop", "done": True, **last, **OLLAMA_COUNTS}
        if body.get("stream", True) is False:
            return web.json_response({**head, **said(TEXT), **done})
        lines = [{**head, **said(word), "done": False} for word in WORDS]
        lines.append({**head, **said(""), **done})
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        for line in lines:
            await response.write(orjson.dumps(line) + b"\n")
        await response.write_eof()
        return response

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(
            request, lambda text: {"message": {"role": "assistant", "content": text}}, {}
        )

    async def generate(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, lambda text: {"response": text}, {"context": [1, 2, 3]})

    async def embed(self, request: web.Request) -> web.Response:
        body: dict[str, Any] = await request.json()
        self.bodies.append(body)
        answer = {
            "model": body["model"],
            "embeddings": [[0.010071029, -0.0017594862, 0.05007221]],
            "total_duration": 14143917,
            "load_duration": 1019500,
            "prompt_eval_count": OLLAMA_EMBED_COUNT,
        }
        return web.json_response(answer)


@dataclass
class Wires:
    """One upstream per wire format, on loopback."""

    openai: OpenAIWire
    anthropic: AnthropicWire
    ollama: OllamaWire
    openai_url: str  # with /v1
    anthropic_url: str  # with /v1
    ollama_url: str

    def instances(self, pricing: dict[str, float] | None = None) -> list[dict[str, Any]]:
        """`oa` (openai), `lab` (openai_compatible, the translated path), `claude`
        (anthropic) and `home` (ollama), each priced at `pricing` (PRICING unless given)."""
        prices = {"pricing": pricing or PRICING}
        return [
            {
                "name": "oa",
                "type": "openai",
                "base_url": self.openai_url,
                "api_key": UPSTREAM_KEY,
                **prices,
            },
            {"name": "lab", "type": "openai_compatible", "base_url": self.openai_url, **prices},
            {
                "name": "claude",
                "type": "anthropic",
                "base_url": self.anthropic_url,
                "api_key": UPSTREAM_KEY,
                **prices,
            },
            {"name": "home", "type": "ollama", "base_url": self.ollama_url, **prices},
        ]


async def start_wires(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Wires:
    fakes = OpenAIWire(), AnthropicWire(), OllamaWire()
    servers = [await aiohttp_server(fake.app()) for fake in fakes]
    urls = [str(server.make_url("")).rstrip("/") for server in servers]
    return Wires(*fakes, f"{urls[0]}/v1", f"{urls[1]}/v1", urls[2])


def ledger_config(tmp_path: Path, providers: list[dict[str, Any]], **more: Any) -> dict[str, Any]:
    """A daemon config with the usage ledger on, in `tmp_path`."""
    return {"providers": providers, "usage": {"path": str(tmp_path / "usage.sqlite3")}, **more}


Client = TestClient[web.Request, web.Application]


async def recorded(
    client: Client, request_id: str, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """The request's generation record (`data`) once it is written: a stream's record is
    finished just after its last byte left, so it is asked for again until it is there."""
    recorder = client.app[COMPONENTS].recorder

    async def read() -> dict[str, Any] | None:
        await recorder.flush()
        response = await client.get(
            "/api/v1/generation", params={"id": request_id}, headers=headers
        )
        if response.status == 404:
            return None
        assert response.status == 200, await response.text()
        data: dict[str, Any] = (await response.json())["data"]
        return data

    return await eventually(read, f"the record of {request_id}")


def check(data: dict[str, Any], expected: Expected, **fields: Any) -> None:
    """The record holds the upstream's reported counts as `expected`, a price from the config
    (or catalog), one attempt that answered 200, and `fields`."""
    wanted = {
        **expected.fields(),
        "usage_source": "reported",
        "cost_source": "catalog",
        "attempts": 1,
        "status": 200,
        "cancelled": False,
        **fields,
    }
    assert {key: data.get(key) for key in wanted} == wanted


def openai_sdk(client: Client, token: str = "unused-token") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key=token, max_retries=0)


def anthropic_sdk(client: Client, token: str = "unused-token") -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=str(client.make_url("")), api_key=token, max_retries=0)


def ollama_sdk(client: Client, ids: list[str], token: str | None = None) -> ollama.AsyncClient:
    """Ollama's client, which shows no headers: the request id of each answer lands in `ids`
    (`token`: sent as a bearer token, as clients behind an auth proxy send it)."""

    async def keep(response: httpx.Response) -> None:
        if (found := response.headers.get(REQUEST_ID)) is not None:
            ids.append(found)

    headers = {"Authorization": f"Bearer {token}"} if token is not None else None
    return ollama.AsyncClient(
        host=str(client.make_url("")), event_hooks={"response": [keep]}, headers=headers
    )
