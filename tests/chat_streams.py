"""Chat Completions answers as upstreams stream them, for the loopback upstreams of tests."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

CREATED = 1_800_000_000  # the upstream's answer time, the same whole or streamed


def chat_chunks(said: dict[str, Any], finish: str, usage: dict[str, int]) -> list[dict[str, Any]]:
    """A Chat Completions answer (`said`, the assistant message) as an upstream streams it:
    the role, reasoning and text in pieces, each tool call opened then its arguments in two
    pieces, the finish reason, and the usage in a last chunk with no choices."""

    def chunk(delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "choices": [{"index": 0, "delta": delta, "finish_reason": reason}],
        }

    out = [chunk({"role": "assistant", "content": ""})]
    if reasoning := said.get("reasoning_content"):
        out += [
            chunk({"reasoning_content": reasoning[:9]}),
            chunk({"reasoning_content": reasoning[9:]}),
        ]
    if said.get("content"):
        text = said["content"]
        out += [chunk({"content": text[:5]}), chunk({"content": text[5:]})]
    for index, call in enumerate(said.get("tool_calls") or ()):
        arguments = call["function"]["arguments"]
        opening = {
            "index": index,
            "id": call["id"],
            "type": "function",
            "function": {"name": call["function"]["name"], "arguments": ""},
        }
        out.append(chunk({"tool_calls": [opening]}))
        for part in (arguments[:8], arguments[8:]):
            out.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": part}}]}))
    out.append(chunk({}, finish))
    out.append(
        {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [], "usage": usage}
    )
    return out


class Recorder:
    """What a loopback upstream was sent: the bodies and headers, in order."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []

    async def record(self, request: web.Request) -> dict[str, Any]:
        body: dict[str, Any] = await request.json()
        self.bodies.append(body)
        self.headers.append({str(name): value for name, value in request.headers.items()})
        return body


async def streamed(request: web.Request, chunks: list[dict[str, Any]]) -> web.StreamResponse:
    """Chunks as server-sent events, then [DONE]."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for chunk in chunks:
        await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
    await response.write(b"data: [DONE]\n\n")
    return response
