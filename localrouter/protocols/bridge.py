"""What the protocol bridges (Anthropic Messages, OpenAI Responses) share on their translated
path (a `proxy.Reply` each, after one upstream Chat Completions call through `proxy.send`):
the whole answer parsed, or its chunks read line by line as they arrive and the other
protocol's events written as server-sent events."""

from __future__ import annotations

import asyncio
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
from localrouter.usage.recording import Call as RecordedCall
from localrouter.usage.recording import Keep
from localrouter.usage.tokens import from_chat_answer

log = structlog.get_logger(__name__)

Event = tuple[str, Json]

MAX_LINE_BYTES = 1024 * 1024  # one upstream SSE line; beyond it the stream is broken
LONG_EVENT_BYTES = 64 * 1024  # an event this long is written on its own (see `write_events`)


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


def whole_answer(call: RecordedCall | None, body: bytes | bytearray, where: Where) -> Json:
    """A whole answer's JSON object (its body read by the caller: no coroutine of its own,
    on every bridged answer), its usage taken for the request's record (`call`)."""
    answer = orjson.loads(body)
    if not isinstance(answer, dict):
        raise UpstreamError(f"{where} answered with something other than an object")
    if call is not None:
        seen(call, answer)
    return answer


def seen(call: RecordedCall, chunk: Json) -> None:
    """A Chat Completions chunk or answer, for the request's record: its usage when it
    reports one (the last chunk of a stream asked for it), and one more answer event."""
    call.answer_events += 1
    if "usage" in chunk or "timings" in chunk:
        call.reported(from_chat_answer(chunk))


def sse(events: list[Event]) -> bytes:
    """Server-sent events as Anthropic and OpenAI's Responses frame them: `event:`, `data:`.
    Joined once: each event's bytes are copied once, however long (a closing event can repeat
    megabytes of what an answer said)."""
    parts: list[bytes] = []
    for name, data in events:
        parts += (b"event: ", name.encode(), b"\ndata: ", orjson.dumps(data), b"\n\n")
    return b"".join(parts)


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


async def write_events(
    response: web.StreamResponse,
    events: list[Event],
    encode: Callable[[list[Event]], bytes],
    secrets: tuple[str, ...],
) -> None:
    """The events, framed by `encode` and redacted, in one write; but an event of
    LONG_EVENT_BYTES or more in a write of its own, after which the loop runs (closing events
    repeat all an answer said: Responses' three times over, megabytes at most; a write to a
    fast client does not wait), instead of joining and copying them all in one go."""
    short: list[bytes] = []
    for event in events:
        framed = encode([event])
        if len(framed) < LONG_EVENT_BYTES:
            short.append(framed)
            continue
        if short:
            await response.write(redact_bytes(b"".join(short), secrets))
            short = []
        await response.write(redact_bytes(framed, secrets))
        await asyncio.sleep(0)
    if short:
        await response.write(redact_bytes(b"".join(short), secrets))


async def translate_stream(
    request: web.Request,
    upstream: UpstreamResponse,
    http: UpstreamClient,
    translator: ChunkTranslator,
    where: Where,
    headers: Mapping[str, str],
    call: RecordedCall | None,
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
    try:
        await response.prepare(request)
        try:
            await _translated(upstream, response, translator, encode, http.secrets, call)
        except ConnectionResetError:
            raise  # the client left (aiohttp's is a ClientError too): not the upstream's fault
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("bridge.stream_broken", upstream=str(where), error=type(exc).__name__)
            text = f"{where} stopped in the middle of the answer ({type(exc).__name__})"
            await response.write(encode(translator.broken(text)))
        await response.write_eof()
    except ConnectionResetError:  # as the stream began, during it, or as it ended
        log.info("bridge.client_left", upstream=str(where))
        if call is not None:
            call.record.cancelled = True
    return response


async def _translated(
    upstream: UpstreamResponse,
    response: web.StreamResponse,
    translator: ChunkTranslator,
    encode: Callable[[list[Event]], bytes],
    secrets: tuple[str, ...],
    call: RecordedCall | None,
) -> None:
    keep = call is not None and call.keep is Keep.ALL
    held = b""
    async for received in upstream.content.iter_any():
        if keep:
            assert call is not None
            call.streamed(received, "chat")  # the upstream's chunks, for the request log
        lines = (held + received).split(b"\n")
        held = lines.pop()
        if len(held) > MAX_LINE_BYTES:
            raise ValueError("an event line longer than 1 MiB")
        events = []
        for line in lines:
            if (chunk := chat_chunk(line)) is not None:
                events += translator.feed(chunk)
                if call is not None:
                    seen(call, chunk)
        if events and call is not None and call.first_byte is None:
            call.first_bytes()
        await write_events(response, events, encode, secrets)
    if (chunk := chat_chunk(held)) is not None:
        await write_events(response, translator.feed(chunk), encode, secrets)
        if call is not None:
            seen(call, chunk)
    await write_events(response, translator.finish(), encode, secrets)
