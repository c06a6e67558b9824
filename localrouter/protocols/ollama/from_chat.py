"""A Chat Completions answer, whole or streamed, as Ollama's `/api/chat` or `/api/generate`
answer: one object, or newline-delimited objects as the chunks arrive, the last one `done`
with `done_reason` and the token counts. Tool calls go out whole (Ollama's arguments are
objects), once their last fragment has arrived."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import orjson

from localrouter.base.jsonload import Json
from localrouter.protocols.bridge import Event, an_object

_DONE_REASONS = {"length": "length", "content_filter": "stop", "tool_calls": "stop"}


def now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class OllamaAnswer:
    """What one answer's pieces look like: `/api/chat` puts text in `message`, `/api/generate`
    in `response`."""

    def __init__(self, name: str, *, generate: bool) -> None:
        self.name, self.generate = name, generate
        self.started = time.monotonic_ns()

    def piece(self, text: str, thinking: str = "", calls: list[Json] | None = None) -> Json:
        piece: Json = {"model": self.name, "created_at": now_text()}
        if self.generate:
            piece["response"] = text
            if thinking:
                piece["thinking"] = thinking
        else:
            message: Json = {"role": "assistant", "content": text}
            if thinking:
                message["thinking"] = thinking
            if calls:
                message["tool_calls"] = calls
            piece["message"] = message
        piece["done"] = False
        return piece

    def last(self, piece: Json, finish_reason: Any, usage: Any) -> Json:
        usage = usage if isinstance(usage, dict) else {}
        elapsed = time.monotonic_ns() - self.started
        piece.update(
            done=True,
            done_reason=_DONE_REASONS.get(str(finish_reason), "stop"),
            total_duration=elapsed,
            load_duration=0,
            prompt_eval_count=_count(usage.get("prompt_tokens")),
            prompt_eval_duration=0,
            eval_count=_count(usage.get("completion_tokens")),
            eval_duration=elapsed,
        )
        return piece

    def whole(self, chat: Json) -> Json:
        """The whole answer of a call that was not streamed."""
        choices = chat.get("choices")
        choice = an_object(choices[0] if isinstance(choices, list) and choices else None)
        message = an_object(choice.get("message"))
        calls = [
            _ollama_call(call.get("function"))
            for call in message.get("tool_calls") or ()
            if isinstance(call, dict)
        ]
        piece = self.piece(_text(message.get("content")), _thinking(message), calls)
        return self.last(piece, choice.get("finish_reason"), chat.get("usage"))


class OllamaStream:
    """Chat Completions chunks in, Ollama's answer pieces out (a `bridge.ChunkTranslator`)."""

    def __init__(self, answer: OllamaAnswer) -> None:
        self.answer = answer
        self._calls: dict[int, Json] = {}  # by index: name and the arguments so far
        self._finish: Any = None
        self._usage: Any = None

    def feed(self, chunk: Json) -> list[Event]:
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        pieces: list[Event] = []
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = an_object(choice.get("delta"))
            for call in delta.get("tool_calls") or ():
                self._gather(call)
            text, thinking = _text(delta.get("content")), _thinking(delta)
            if text or thinking:
                pieces.append(("", self.answer.piece(text, thinking)))
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return pieces

    def finish(self) -> list[Event]:
        calls = [_ollama_call(call) for _, call in sorted(self._calls.items())]
        pieces: list[Event] = [("", self.answer.piece("", calls=calls))] if calls else []
        last = self.answer.last(self.answer.piece(""), self._finish, self._usage)
        return [*pieces, ("", last)]

    def broken(self, message: str) -> list[Event]:
        return [("", {"error": message})]

    def _gather(self, call: Any) -> None:
        if not isinstance(call, dict):
            return
        index = call.get("index", 0) if isinstance(call.get("index"), int) else 0
        gathered = self._calls.setdefault(index, {"name": "", "arguments": ""})
        function = an_object(call.get("function"))
        if isinstance(function.get("name"), str):
            gathered["name"] += function["name"]
        if isinstance(function.get("arguments"), str):
            gathered["arguments"] += function["arguments"]


def ndjson(events: list[Event]) -> bytes:
    """Ollama's stream framing: one JSON object a line."""
    return b"".join(orjson.dumps(data) + b"\n" for _, data in events)


def _ollama_call(given: Any) -> Json:
    function = an_object(given)
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = orjson.loads(arguments) if arguments.strip() else {}
        except orjson.JSONDecodeError:
            arguments = {"arguments": arguments}  # not JSON: kept, under a name
    if not isinstance(arguments, dict):
        arguments = {}
    return {"function": {"name": str(function.get("name", "")), "arguments": arguments}}


def _text(content: Any) -> str:
    return content if isinstance(content, str) else ""


def _thinking(message: Json) -> str:
    for name in ("reasoning_content", "reasoning"):
        if isinstance(message.get(name), str):
            return str(message[name])
    return ""


def _count(value: Any) -> int:
    return value if isinstance(value, int) else 0
