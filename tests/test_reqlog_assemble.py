"""A chat stream put back together for the request log: the text-only shortcut (every
content string found and decoded at once) gives what reading each event with the standard
library's json gives, on the shapes servers write; tool calls and reasoning take the reader
of every event."""

from __future__ import annotations

import json
from typing import Any

import pytest

from localrouter.reqlog.assemble import assemble


def sse(*chunks: Any, end: bytes = b"\n\n", separators: tuple[str, str] = (",", ":")) -> bytes:
    events = [b"data: " + json.dumps(chunk, separators=separators).encode() for chunk in chunks]
    return end.join([*events, b"data: [DONE]"]) + end


def delta(**fields: Any) -> dict[str, Any]:
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": fields}],
    }


def read_every_event(raw: bytes) -> str:
    """The oracle: each whole `data:` line parsed on its own, its deltas' content joined."""
    text = []
    for line in raw.splitlines(keepends=True):
        if line == line.rstrip(b"\r\n"):  # a line without its end was never dispatched
            continue
        line = line.strip()
        if not line.startswith(b"data:") or line[5:].strip() == b"[DONE]":
            continue
        chunk = json.loads(line[5:])
        for choice in chunk.get("choices") or ():
            content = choice.get("delta", {}).get("content")
            text.append(content if isinstance(content, str) else "")
    return "".join(text)


QUOTED_JSON = 'he said {"content":"not this"} and \\"content\\": "nor this"'
STREAMS = {
    "plain": sse(delta(role="assistant", content=""), *[delta(content="hi")] * 5),
    "escapes and unicode": sse(
        delta(content='a "quote", a \\ backslash,\n a newline, '),
        delta(content="caf\u00e9 \U0001f600 \u2028"),
    ),
    "ascii-escaped": sse(delta(content="caf\u00e9 \U0001f600")).replace("é".encode(), b"\\u00e9"),
    "json in the text": sse(delta(content=QUOTED_JSON), delta(content="!")),
    "spaces after colons": sse(
        delta(content="one"), delta(content=" two"), separators=(", ", ": ")
    ),
    "null content and logprobs": sse(
        delta(role="assistant", content=None),
        {
            "choices": [
                {
                    "delta": {"content": "x"},
                    "logprobs": {"content": [{"token": "x", "logprob": -0.1}]},
                }
            ]
        },
    ),
    "usage chunk": sse(delta(content="hi"), {"choices": [], "usage": {"prompt_tokens": 5}}),
    "crlf framing": sse(delta(content="a"), delta(content="b"), end=b"\r\n\r\n"),
    "comments between": sse(delta(content="a"), delta(content="b")).replace(
        b"\n\n", b"\n\n: keep-alive\n\n", 1
    ),
    "cr framing": sse(delta(content="a"), delta(content="b"), end=b"\r\r"),
    "content null at the end": sse(
        delta(content="done"), {"choices": [{"index": 0, "delta": {"content": None}}]}
    ),
    "role after content": sse({"choices": [{"delta": {"content": "x", "role": "assistant"}}]}),
    "annotations with content": sse(
        delta(content="Answer."),
        delta(annotations=[{"type": "url_citation", "url_citation": {"content": "PAGE TEXT"}}]),
    ),
    "a message beside the delta": sse(
        {"choices": [{"delta": {"content": "hi"}, "message": {"content": "hi"}}]}
    ),
    "an error with content": sse(delta(content="part"), {"error": {"content": "x", "code": 1}}),
    "two choices": sse(
        {
            "choices": [
                {"index": 0, "delta": {"content": "A"}},
                {"index": 1, "delta": {"content": "B"}},
            ]
        }
    ),
}


@pytest.mark.parametrize("raw", STREAMS.values(), ids=STREAMS.keys())
def test_a_text_streams_answer_is_its_content_in_order(raw: bytes) -> None:
    expected = read_every_event(raw)
    assert expected  # each case carries some text
    assert assemble("chat", raw) == {"stream": "chat", "text": expected}


@pytest.mark.parametrize(
    "cut", [0, 1, 4, 5], ids=["in-string", "after-string", "in-object", "at-line-end"]
)
def test_a_stream_cut_short_keeps_the_events_it_ended(cut: int) -> None:
    """Cut inside the last event (even just before its line's end): that event was never
    dispatched, so its text is not in the answer."""
    raw = sse(delta(content="kept "), delta(content="kept"), delta(content="lost"))
    raw = raw[: raw.index(b"[DONE]")]  # the stream's end not reached
    cut_raw = raw[: raw.rindex(b"lost") + len(b"lost") + cut]
    assert cut_raw.endswith((b"lost", b'"', b"]", b"}"))
    assert assemble("chat", cut_raw)["text"] == "kept kept"


def test_tool_calls_are_read_event_by_event() -> None:
    call = {"index": 0, "id": "call_1", "function": {"name": "get", "arguments": ""}}
    raw = sse(
        delta(content="Calling."),
        delta(tool_calls=[call]),
        delta(tool_calls=[{"index": 0, "function": {"arguments": '{"city":'}}]),
        delta(tool_calls=[{"index": 0, "function": {"arguments": '"Paris"}'}}]),
    )
    assert assemble("chat", raw) == {
        "stream": "chat",
        "text": "Calling.",
        "tool_calls": [{"id": "call_1", "name": "get", "arguments": '{"city":"Paris"}'}],
    }


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_is_read_event_by_event(field: str) -> None:
    raw = sse(delta(**{field: "think "}), delta(**{field: "more"}), delta(content="Done."))
    assert assemble("chat", raw) == {"stream": "chat", "text": "Done.", "reasoning": "think more"}


def test_an_event_that_does_not_decode_is_left_out_and_the_rest_kept() -> None:
    """A lone surrogate escape: orjson refuses that event; the others' text stays."""
    raw = sse(delta(content="before "), delta(content="X"), delta(content="after"))
    raw = raw.replace(b'"X"', b'"\\ud83d"')
    assert assemble("chat", raw)["text"] == "before after"
