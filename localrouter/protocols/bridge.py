"""What the protocol bridges (Anthropic Messages, OpenAI Responses) share on their translated
path (a `proxy.Reply` each, after one upstream Chat Completions call through `proxy.send`):
the whole answer parsed, or its chunks read line by line as they arrive and the other
protocol's events written as server-sent events."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import aiohttp
import orjson
import structlog
from aiohttp import hdrs, web

from localrouter.base.errors import UpstreamError
from localrouter.base.jsonload import Json
from localrouter.base.secrets import redact_bytes
from localrouter.http.guard import add_cors
from localrouter.upstream.client import UpstreamClient, UpstreamResponse, Where

log = structlog.get_logger(__name__)

Event = tuple[str, Json]

MAX_LINE_BYTES = 1024 * 1024  # one upstream SSE line; beyond it the stream is broken


def token_count(value: Any) -> int:
    """A token count an upstream reported, or 0 for anything that is not one (a bool is an
    int to Python, never a count)."""
    return value if type(value) is int and value > 0 else 0


def an_object(value: Any) -> Json:
    """`value` if it is a JSON object, else an empty one (for reading what a peer sent)."""
    return value if isinstance(value, dict) else {}


class ChunkTranslator(Protocol):
    """Chat Completions chunks in, another protocol's events out, as they arrive."""

    def feed(self, chunk: Json) -> list[Event]: ...

    def finish(self) -> list[Event]: ...

    def broken(self, message: str) -> list[Event]:
        """The events that end a stream whose upstream broke off."""
        ...


def whole_answer(body: bytes | bytearray, where: Where) -> Json:
    """A whole answer's JSON object (its body read by the caller: no coroutine of its own,
    on every bridged answer)."""
    answer = orjson.loads(body)
    if not isinstance(answer, dict):
        raise UpstreamError(f"{where} answered with something other than an object")
    return answer


def sse(events: list[Event]) -> bytes:
    """Server-sent events as Anthropic and OpenAI's Responses frame them: `event:`, `data:`."""
    return b"".join(
        b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
        for name, data in events
    )


def chat_chunk(line: bytes) -> Json | None:
    """The JSON object of an SSE `data:` line; None for anything else ([DONE], comments)."""
    line = line.strip()
    if not line.startswith(b"data:"):
        return None
    payload = line[5:].strip()
    if not payload or payload == b"[DONE]":
        return None
    chunk = orjson.loads(payload)  # a broken line is a broken stream: ValueError
    return chunk if isinstance(chunk, dict) else None


async def translate_stream(
    request: web.Request,
    upstream: UpstreamResponse,
    http: UpstreamClient,
    translator: ChunkTranslator,
    where: Where,
    headers: Mapping[str, str],
    *,
    encode: Callable[[list[Event]], bytes] = sse,
    content_type: str = "text/event-stream",
) -> web.StreamResponse:
    """Each upstream chunk, as it arrives, becomes the translator's events (framed by
    `encode`: server-sent events unless told otherwise); only an incomplete line is held. A
    broken upstream ends the stream with the translator's closing events."""
    response = web.StreamResponse(headers={**headers, hdrs.CONTENT_TYPE: content_type})
    response.headers[hdrs.CACHE_CONTROL] = "no-cache"
    add_cors(request, response)
    await response.prepare(request)
    held = b""
    try:
        async for received in upstream.content.iter_any():
            lines = (held + received).split(b"\n")
            held = lines.pop()
            if len(held) > MAX_LINE_BYTES:
                raise ValueError("an event line longer than 1 MiB")
            events = []
            for line in lines:
                if (chunk := chat_chunk(line)) is not None:
                    events += translator.feed(chunk)
            if events:
                await response.write(redact_bytes(encode(events), http.secrets))
        if (chunk := chat_chunk(held)) is not None:
            await response.write(redact_bytes(encode(translator.feed(chunk)), http.secrets))
        await response.write(redact_bytes(encode(translator.finish()), http.secrets))
    except ConnectionResetError:
        log.info("bridge.client_left", upstream=str(where))
        return response
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        log.warning("bridge.stream_broken", upstream=str(where), error=type(exc).__name__)
        text = f"{where} stopped in the middle of the answer ({type(exc).__name__})"
        await response.write(encode(translator.broken(text)))
    await response.write_eof()
    return response
