"""The usage in a stream passed through as it is (the native paths), read from whole events
as they go by, in the upstream's own format; and, where the gateway asked a Chat Completions
stream for its usage that the client did not ask for, that usage taken out again, so that
the client gets the very events it would have got. Events are parsed only when they carry
usage: a cheap search first, JSON after."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from localrouter.base.secrets import NDJSON_ENDS, SSE_ENDS
from localrouter.usage.record import Tokens
from localrouter.usage.tokens import from_anthropic, from_chat_answer, from_ollama, from_responses

# How the usage marker shows in events that carry a count (not OpenAI's `"usage":null`).
_COUNTS = (b'"usage":{', b'"usage": {', b'"timings":{', b'"timings": {', b'"usageMetadata"')
# What an upstream adds to every chunk once asked for usage: taken out again for a client
# that did not ask (the forms servers write it in).
_NULL_USAGE = (b',"usage":null', b', "usage": null', b'"usage":null,', b'"usage": null, ')


def _loads(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None


def _data(event: bytes) -> bytes:
    """The `data:` payload of one server-sent event (its lines joined), or b""."""
    lines = [line[5:].strip() for line in event.splitlines() if line.startswith(b"data:")]
    return b"\n".join(lines)


class StreamUsage:
    """Watches a stream's whole events (`see` takes one or more, ends included) for the
    usage its format reports, and counts the events that carry an answer (for an estimate
    when no usage comes). `strip` takes out usage the client did not ask for (Chat
    Completions only)."""

    __slots__ = ("_markers", "_read", "answer_events", "separator", "strip", "tokens")

    def __init__(
        self,
        read: Callable[[Any], Tokens | None],
        *,
        separator: bytes,
        markers: tuple[bytes, ...] = _COUNTS,
        strip: bool = False,
    ) -> None:
        self._read = read
        self._markers = markers
        self.separator = separator
        self.strip = strip
        self.tokens: Tokens | None = None
        self.answer_events = 0

    def see(self, events: bytes | bytearray) -> bytes | bytearray:
        """Whole events in, the same events out (less injected usage, when stripping)."""
        separator = self.separator
        if separator == b"\n\n" and b"\r\n\r\n" in events:
            separator = b"\r\n\r\n"  # events framed with CRLF (servers on sse-starlette)
        self.answer_events += events.count(separator)
        if self.strip:
            for form in _NULL_USAGE:
                if form in events:
                    events = events.replace(form, b"")
        markers = self._markers
        if not any(marker in events for marker in markers):
            return events
        kept = []
        for event in bytes(events).split(separator):
            if not event.strip():
                kept.append(event)
                continue
            if any(marker in event for marker in markers):
                payload = _data(event) if self.separator != b"\n" else event
                found = self._read(_loads(payload))
                if found is not None:
                    self.tokens = self._merged(found)
                    if self.strip and _usage_only(payload):
                        continue
            kept.append(event)
        return separator.join(kept)

    def _merged(self, found: Tokens) -> Tokens:
        """Anthropic reports input at the start and output (cumulative) at the end."""
        earlier = self.tokens
        if earlier is None:
            return found
        return Tokens(
            input_tokens=found.input_tokens or earlier.input_tokens,
            output_tokens=found.output_tokens or earlier.output_tokens,
            cache_read_tokens=found.cache_read_tokens or earlier.cache_read_tokens,
            cache_write_tokens=found.cache_write_tokens or earlier.cache_write_tokens,
            reasoning_tokens=found.reasoning_tokens or earlier.reasoning_tokens,
        )


def _usage_only(payload: bytes) -> bool:
    """Whether a Chat Completions chunk is the usage-only one (no choices) that an
    include_usage request adds at the end."""
    chunk = _loads(payload)
    return isinstance(chunk, dict) and not chunk.get("choices")


def _anthropic_event(data: Any) -> Tokens | None:
    """message_start carries the input (under `message`), message_delta the output."""
    if not isinstance(data, dict):
        return None
    message = data.get("message")
    usage = message.get("usage") if isinstance(message, dict) else data.get("usage")
    return from_anthropic(usage)


def _responses_event(data: Any) -> Tokens | None:
    response = data.get("response") if isinstance(data, dict) else None
    return from_responses(response.get("usage")) if isinstance(response, dict) else None


def chat_stream(*, strip: bool) -> StreamUsage:
    return StreamUsage(from_chat_answer, separator=b"\n\n", strip=strip)


def anthropic_stream() -> StreamUsage:
    return StreamUsage(_anthropic_event, separator=b"\n\n")


def responses_stream() -> StreamUsage:
    return StreamUsage(_responses_event, separator=b"\n\n")


_OLLAMA_COUNTS = (b'"eval_count"', b'"prompt_eval_count"')


def ollama_stream() -> StreamUsage:
    return StreamUsage(from_ollama, separator=b"\n", markers=_OLLAMA_COUNTS)


@dataclass(frozen=True, slots=True)
class UsageFormat:
    """How one wire protocol reports usage: in a whole answer (parsed), and in a stream."""

    whole: Callable[[Any], Tokens | None]
    stream: Callable[[bool], StreamUsage]  # `strip`: take out usage the client did not ask for
    ends: tuple[bytes, ...]  # where its stream's events end
    name: str  # the wire format: chat, anthropic, responses, ollama


def _usage_of(read: Callable[[Any], Tokens | None]) -> Callable[[Any], Tokens | None]:
    return lambda answer: read(answer.get("usage")) if isinstance(answer, dict) else None


CHAT = UsageFormat(from_chat_answer, lambda strip: chat_stream(strip=strip), SSE_ENDS, "chat")
ANTHROPIC = UsageFormat(
    _usage_of(from_anthropic), lambda _: anthropic_stream(), SSE_ENDS, "anthropic"
)
RESPONSES = UsageFormat(
    _usage_of(from_responses), lambda _: responses_stream(), SSE_ENDS, "responses"
)
OLLAMA = UsageFormat(from_ollama, lambda _: ollama_stream(), NDJSON_ENDS, "ollama")


def whole_tokens(usage: UsageFormat, body: bytes | bytearray) -> Tokens | None:
    """The usage of a whole answer: its counts sit at its end, so only the tail from the first
    top-level count's key is parsed (the whole body when that is not an object of its own)."""
    at = body.rfind(b'"usage"')  # where nearly every server puts it
    if at < 0:
        starts = [at for key in _WHOLE_KEYS if (at := body.rfind(key)) >= 0]
        if not starts:
            return None
        at = min(starts)
    tail = _loads(b"{" + bytes(body[at:]))
    return usage.whole(tail if isinstance(tail, dict) else _loads(bytes(body)))


_WHOLE_KEYS = (b'"usage"', b'"timings"', b'"usageMetadata"', b'"prompt_eval_count"')
