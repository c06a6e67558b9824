"""A loopback upstream for the `/api/v1` tests: an OpenAI-compatible server whose answers are
complete as OpenRouter's SDK validates them (`system_fingerprint` in a whole answer; `id`,
`created` and `model` in every streamed chunk), that records what it is sent, and that can be
told to refuse or to break a stream off."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

CREATED = 1_800_000_000
ANSWER = "Hello from upstream."
PIECES = ("Hello ", "from ", "upstream.")


@dataclass
class ChatUpstream:
    models: tuple[str, ...] = ("qwen3-coder", "nomic-embed")
    refusal: tuple[int, dict[str, Any]] | None = None  # (status, body) for every call
    break_stream: bool = False  # close the connection after the first chunk
    bodies: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/models", self.list_models)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.complete)
        app.router.add_post("/v1/embeddings", self.embed)
        return app

    async def list_models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": m} for m in self.models]})

    async def _record(self, request: web.Request) -> dict[str, Any]:
        body: dict[str, Any] = await request.json()
        self.bodies.append(body)
        self.paths.append(request.path)
        return body

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        if self.refusal is not None:
            return web.json_response(self.refusal[1], status=self.refusal[0])
        if body.get("stream"):
            return await self._stream(request, body["model"])
        message = {"role": "assistant", "content": ANSWER}
        return web.json_response(
            {
                "id": "chatcmpl-or-1",
                "object": "chat.completion",
                "created": CREATED,
                "model": body["model"],
                "system_fingerprint": None,
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9},
            }
        )

    async def _stream(self, request: web.Request, model: str) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        deltas: list[tuple[dict[str, Any], str | None]] = [
            ({"role": "assistant", "content": PIECES[0]}, None),
            *(({"content": piece}, None) for piece in PIECES[1:]),
            ({}, "stop"),
        ]
        for index, (delta, finish) in enumerate(deltas):
            chunk = {
                "id": "chatcmpl-or-2",
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
            if index == 0 and self.break_stream:
                assert request.transport is not None
                request.transport.close()
                return response
        await response.write(b"data: [DONE]\n\n")
        return response

    async def complete(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        choice = {"index": 0, "text": ANSWER, "finish_reason": "stop", "logprobs": None}
        return web.json_response(
            {
                "id": "cmpl-or-1",
                "object": "text_completion",
                "created": CREATED,
                "model": body["model"],
                "choices": [choice],
                "usage": {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6},
            }
        )

    async def embed(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        return web.json_response(
            {
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.5, 0.25]}],
                "model": body["model"],
                "usage": {"prompt_tokens": 2, "total_tokens": 2},
            }
        )
