"""A stream's answer put back together from the events that carried it, in each wire format:
its text, its reasoning and its tool calls, not every event (the request log keeps this)."""

from __future__ import annotations

import re
from typing import Any

import orjson

from localrouter.base.jsonload import Json


class Answer:
    def __init__(self) -> None:
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.calls: dict[object, dict[str, str]] = {}  # by index or id, in arrival order

    def call(self, key: object, call_id: object = None, name: object = None) -> dict[str, str]:
        found = self.calls.setdefault(key, {"id": "", "name": "", "arguments": ""})
        if isinstance(call_id, str) and call_id:
            found["id"] = call_id
        if isinstance(name, str) and name:
            found["name"] = name
        return found

    def shown(self, kind: str) -> Json:
        shown: Json = {"stream": kind, "text": "".join(self.text)}
        if self.reasoning:
            shown["reasoning"] = "".join(self.reasoning)
        if self.calls:
            shown["tool_calls"] = list(self.calls.values())
        return shown


def assemble(kind: str, raw: bytes) -> Json:
    """The answer a stream of `kind` (chat, anthropic, responses, ollama) carried in `raw`
    (its bytes as they went by, perhaps cut short: a broken last event is left out)."""
    if kind != "ollama":  # an event is dispatched at its line's end (\n, \r\n or \r)
        raw = raw[: max(raw.rfind(b"\n"), raw.rfind(b"\r")) + 1]
    if kind == "chat" and (text := _chat_text(raw)) is not None:
        return {"stream": kind, "text": text}
    answer = Answer()
    read = _READERS.get(kind, _chat)
    for event in _events(_payloads(raw, kind == "ollama")):
        if isinstance(event, dict):
            read(answer, event)
    return answer.shown(kind)


# A chat delta's text (its JSON string's inside), where a delta holds it first or after its
# role. In valid JSON a quote inside a string is always escaped, so `"content"` with its own
# quotes is a key (or a value of that word): when the stream has one anywhere else (a
# message, an annotation, a null), the general path reads it.
_DELTA_CONTENT = re.compile(
    rb'"delta"\s*:\s*\{\s*(?:"role"\s*:\s*"[a-z]*"\s*,\s*)?'
    rb'"content"\s*:\s*"([^"\\]*(?:\\.[^"\\]*)*)"'
)


def _chat_text(raw: bytes) -> str | None:
    """A chat stream's text when it carries nothing else (most do): every delta's content
    found and decoded at once, not event by event. None when it has tool calls, reasoning,
    content anywhere else, or a string that does not decode (the general path reads it)."""
    if b'"tool_calls"' in raw or b'"reasoning' in raw:
        return None
    found = _DELTA_CONTENT.findall(raw)
    if len(found) != raw.count(b'"content"'):
        return None
    try:
        text: str = orjson.loads(b'"' + b"".join(found) + b'"')
    except orjson.JSONDecodeError:
        return None
    return text


def _payloads(raw: bytes, lines: bool) -> list[bytes]:
    if lines:
        return [line for line in raw.split(b"\n") if line.strip()]
    found = []
    for line in raw.splitlines():
        if line.startswith(b"data:"):
            payload = line[5:].strip()
            if payload and payload != b"[DONE]":
                found.append(payload)
    return found


def _events(payloads: list[bytes]) -> list[Any]:
    """The payloads parsed: in one go (one call, not one per event), else one by one, the
    broken ones (a stream cut short at the cap) left out."""
    try:
        parsed: list[Any] = orjson.loads(b"[" + b",".join(payloads) + b"]")
    except orjson.JSONDecodeError:
        parsed = []
        for payload in payloads:
            try:
                parsed.append(orjson.loads(payload))
            except orjson.JSONDecodeError:
                continue
    return parsed


def _dict(value: Any) -> Json:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _chat(answer: Answer, chunk: Json) -> None:
    for choice in chunk.get("choices") or ():
        delta = _dict(_dict(choice).get("delta"))
        if isinstance(content := delta.get("content"), str):
            answer.text.append(content)
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if reasoning:
            answer.reasoning.append(_text(reasoning))
        for call in delta.get("tool_calls") or ():
            call = _dict(call)
            function = _dict(call.get("function"))
            found = answer.call(
                call.get("index", call.get("id")), call.get("id"), function.get("name")
            )
            found["arguments"] += _text(function.get("arguments"))


def _anthropic(answer: Answer, event: Json) -> None:
    kind = event.get("type")
    if kind == "content_block_start":
        block = _dict(event.get("content_block"))
        if block.get("type") == "tool_use":
            answer.call(event.get("index"), block.get("id"), block.get("name"))
    elif kind == "content_block_delta":
        delta = _dict(event.get("delta"))
        answer.text.append(_text(delta.get("text")))
        answer.reasoning.append(_text(delta.get("thinking")))
        if delta.get("type") == "input_json_delta":
            answer.call(event.get("index"))["arguments"] += _text(delta.get("partial_json"))


def _responses(answer: Answer, event: Json) -> None:
    kind = event.get("type")
    if kind == "response.output_text.delta":
        answer.text.append(_text(event.get("delta")))
    elif kind in ("response.reasoning_text.delta", "response.reasoning_summary_text.delta"):
        answer.reasoning.append(_text(event.get("delta")))
    elif kind == "response.output_item.added":
        item = _dict(event.get("item"))
        if item.get("type") == "function_call":
            answer.call(item.get("id"), item.get("call_id"), item.get("name"))
    elif kind == "response.function_call_arguments.delta":
        answer.call(event.get("item_id"))["arguments"] += _text(event.get("delta"))


def _ollama(answer: Answer, line: Json) -> None:
    message = _dict(line.get("message"))
    answer.text.append(_text(message.get("content")) or _text(line.get("response")))
    answer.reasoning.append(_text(message.get("thinking")) or _text(line.get("thinking")))
    for index, call in enumerate(message.get("tool_calls") or ()):
        function = _dict(_dict(call).get("function"))
        found = answer.call((len(answer.calls), index), None, function.get("name"))
        arguments = function.get("arguments")
        found["arguments"] = orjson.dumps(arguments).decode() if arguments is not None else ""


_READERS = {"chat": _chat, "anthropic": _anthropic, "responses": _responses, "ollama": _ollama}
