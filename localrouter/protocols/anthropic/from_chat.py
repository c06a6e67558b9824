"""A Chat Completions answer, as the Anthropic Messages answer that means the same: a whole
answer at once (`message`), or a stream chunk by chunk (`MessagesStream`), holding nothing
beyond the chunk in hand."""

from __future__ import annotations

from typing import Any

import orjson

from localrouter.base.errors import ANTHROPIC
from localrouter.base.jsonload import Json
from localrouter.protocols.bridge import an_object, token_count

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def message(chat: Json, model: str, *, thinking: bool = False) -> Json:
    """The Messages answer for a whole Chat Completions answer; `model` is the id the client
    asked for. `thinking`: the client asked for thinking, so the upstream's reasoning text
    comes back as a thinking block."""
    choices = chat.get("choices")
    choice = an_object(choices[0] if type(choices) is list and choices else None)
    said = an_object(choice.get("message"))
    content: list[Json] = []
    if thinking and (reasoning := reasoning_text(said)):
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    if type(text := said.get("content")) is str and text:
        content.append({"type": "text", "text": text})
    if calls := said.get("tool_calls"):
        content += _tool_uses(calls)
    chat_id = chat.get("id")
    reason, sequence = stop_reason(choice)
    return {
        "id": f"msg_{chat_id}" if type(chat_id) is str and chat_id else _NO_ID,  # message_id
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": usage(chat.get("usage")),
    }


def _tool_uses(calls: Any) -> list[Json]:
    uses: list[Json] = []
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            uses.append(
                {
                    "type": "tool_use",
                    "id": str(call.get("id") or ""),
                    "name": str(function.get("name") or ""),
                    "input": tool_input(function.get("arguments")),
                }
            )
    return uses


def stop(choice: Json) -> Json:
    reason, sequence = stop_reason(choice)
    return {"stop_reason": reason, "stop_sequence": sequence}


def stop_reason(choice: Json) -> tuple[str, str | None]:
    """Why the answer ended, and the stop sequence that ended it. Chat's `stop` covers stop
    sequences too; vLLM (`stop_reason`) and SGLang (`matched_stop`) name the sequence that
    matched, and then it is `stop_sequence`."""
    finish = choice.get("finish_reason")
    reason = STOP_REASONS.get(finish, "end_turn") if type(finish) is str else "end_turn"
    if reason == "end_turn":
        matched = choice.get("stop_reason", choice.get("matched_stop"))
        if type(matched) is str and matched:
            return "stop_sequence", matched
    return reason, None


def reasoning_text(said: Json) -> str:
    """The reasoning an upstream sent beside the answer: `reasoning_content` (DeepSeek, vLLM,
    llama.cpp, LM Studio) or `reasoning` (OpenRouter, Ollama, Groq)."""
    for name in ("reasoning_content", "reasoning"):
        if isinstance(text := said.get(name), str) and text:
            return text
    return ""


def usage(chat_usage: Any) -> Json:
    """Chat counts as Messages counts: cached prompt tokens are reported apart, as Anthropic
    does (its input_tokens excludes cache reads). Counts that are not counts are 0."""
    if type(chat_usage) is not dict:
        return {"input_tokens": 0, "output_tokens": 0}
    prompt = token_count(chat_usage.get("prompt_tokens"))
    output = token_count(chat_usage.get("completion_tokens"))
    cached = token_count(an_object(chat_usage.get("prompt_tokens_details")).get("cached_tokens"))
    if not cached:
        return {"input_tokens": prompt, "output_tokens": output}
    return {
        "input_tokens": max(prompt - cached, 0),
        "output_tokens": output,
        "cache_read_input_tokens": cached,
    }


def tool_input(arguments: Any) -> Json:
    """A tool call's arguments as the object Messages wants (a model may send broken JSON)."""
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = orjson.loads(arguments or "{}")
    except (orjson.JSONDecodeError, TypeError):
        return {"arguments": arguments}
    return parsed if isinstance(parsed, dict) else {"value": parsed}


_NO_ID = "msg_localrouter"


def message_id(chat_id: Any) -> str:
    return f"msg_{chat_id}" if isinstance(chat_id, str) and chat_id else _NO_ID


class MessagesStream:
    """Turns Chat Completions chunks into Messages events as they arrive.

    `feed(chunk)` gives the events one chunk means (text deltas, a tool call opening or
    growing), `finish()` the closing ones (the open block's stop, `message_delta` with the stop
    reason and the counts, `message_stop`). Each event is `(name, data)`; `sse` frames them.

    Upstreams stream parallel tool calls one after another. Arguments for a call whose block
    was already closed (calls interleaved chunk by chunk) cannot be added to it in Messages'
    protocol; they are dropped rather than held, as nothing is buffered."""

    def __init__(self, model: str, *, thinking: bool = False) -> None:
        self._model = model
        self._thinking = thinking
        self._started = False
        self._index = -1  # the open content block; -1: none yet
        self._open: str | None = None  # "thinking", "text" or "tool_use"
        self._tool_blocks: dict[int, int] = {}  # the upstream's tool-call index -> block index
        self._stop: Json = {"stop_reason": "end_turn", "stop_sequence": None}
        self._usage: Json = {"input_tokens": 0, "output_tokens": 0}

    def feed(self, chunk: Json) -> list[tuple[str, Json]]:
        events: list[tuple[str, Json]] = []
        if not self._started:
            self._started = True
            events += [("message_start", self._start(chunk)), _PING]
        if chunk.get("usage"):
            self._usage = usage(chunk["usage"])
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                events += self._delta(delta)
            if choice.get("finish_reason"):
                self._stop = stop(choice)
        return events

    def finish(self) -> list[tuple[str, Json]]:
        events = [] if self._started else [("message_start", self._start({})), _PING]
        events += self._close()
        events.append(
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": self._stop,
                    "usage": self._usage,
                },
            )
        )
        events.append(("message_stop", {"type": "message_stop"}))
        return events

    def _start(self, chunk: Json) -> Json:
        return {
            "type": "message_start",
            "message": {
                "id": message_id(chunk.get("id")),
                "type": "message",
                "role": "assistant",
                "model": self._model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            },
        }

    def _delta(self, delta: Json) -> list[tuple[str, Json]]:
        events: list[tuple[str, Json]] = []
        if self._thinking and (reasoning := reasoning_text(delta)):
            if self._open != "thinking":
                opening: Json = {"type": "thinking", "thinking": "", "signature": ""}
                events += self._open_block(opening, "thinking")
            events.append(self._block_delta({"type": "thinking_delta", "thinking": reasoning}))
        if isinstance(text := delta.get("content"), str) and text:
            if self._open != "text":
                events += self._open_block({"type": "text", "text": ""}, "text")
            events.append(self._block_delta({"type": "text_delta", "text": text}))
        for call in delta.get("tool_calls") or ():
            if not isinstance(call, dict):
                continue
            position = call.get("index", 0)
            named = call.get("function")
            function: Json = named if isinstance(named, dict) else {}
            if position not in self._tool_blocks:
                block: Json = {
                    "type": "tool_use",
                    "id": str(call.get("id") or f"toolu_{position}"),
                    "name": str(function.get("name") or ""),
                    "input": {},
                }
                events += self._open_block(block, "tool_use")
                self._tool_blocks[position] = self._index
            arguments = function.get("arguments")
            growing = self._tool_blocks[position] == self._index  # its block is the open one
            if isinstance(arguments, str) and arguments and growing:
                events.append(
                    self._block_delta({"type": "input_json_delta", "partial_json": arguments})
                )
        return events

    def _open_block(self, block: Json, kind: str) -> list[tuple[str, Json]]:
        events = self._close()
        self._index += 1
        self._open = kind
        start = {"type": "content_block_start", "index": self._index, "content_block": block}
        events.append(("content_block_start", start))
        return events

    def _block_delta(self, delta: Json) -> tuple[str, Json]:
        body = {"type": "content_block_delta", "index": self._index, "delta": delta}
        return "content_block_delta", body

    def broken(self, message: str) -> list[tuple[str, Json]]:
        return [("error", ANTHROPIC.message(message, 502, "upstream_stream_broken"))]

    def _close(self) -> list[tuple[str, Json]]:
        if self._open is None:
            return []
        self._open = None
        return [("content_block_stop", {"type": "content_block_stop", "index": self._index})]


_PING: tuple[str, Json] = ("ping", {"type": "ping"})  # after message_start, as Anthropic sends
