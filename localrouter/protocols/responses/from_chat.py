"""A Chat Completions answer, as the OpenAI Responses answer that means the same: a Response
object (`response`), or its stream of events chunk by chunk (`ResponsesStream`), whose
`response.completed` carries the same Response object the whole answer would have been, up to
said.MAX_OUTPUT_BYTES of output (then `response.incomplete`)."""

from __future__ import annotations

import itertools
import secrets
import time
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from localrouter.base.jsonload import Json
from localrouter.protocols.bridge import Event, token_count
from localrouter.protocols.responses.said import MAX_OUTPUT_BYTES, Said, Text

log = structlog.get_logger(__name__)

# Response ids: random per process, counted within it (cheaper than a uuid4 per response).
_PROCESS = secrets.token_hex(8)
_COUNTER = itertools.count()

_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


@dataclass(slots=True)
class Echo:
    """What a Response repeats of its request (`echoed`), and how it is named."""

    response_id: str
    model: str  # the id the client asked for
    created_at: int
    fields: Json

    @classmethod
    def of(cls, fields: Json, model: str, chat: Json | None = None) -> Echo:
        """A new id (upstream ids repeat: some local servers send the same one every time,
        and stored responses are found by it), and the upstream's time where it gives one."""
        created = (chat or {}).get("created")
        when = created if isinstance(created, int) and created > 0 else int(time.time())
        return cls(f"resp_{_PROCESS}{next(_COUNTER):08x}", model, when, fields)


def echoed(request: Json) -> Json:
    """What a Response object repeats of its request: worked out once per request, since a
    stream repeats it in three events."""
    return {
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "metadata": request.get("metadata") or {},
        "parallel_tool_calls": request.get("parallel_tool_calls", True) is not False,
        "previous_response_id": request.get("previous_response_id"),
        "temperature": request.get("temperature"),
        "top_p": request.get("top_p"),
        "tool_choice": request.get("tool_choice") or "auto",
        "tools": [tool for tool in request.get("tools") or () if isinstance(tool, dict)],
        "text": request.get("text") or {"format": {"type": "text"}},
        "store": request.get("store", True) is not False,
    }


def response_object(
    echo: Echo, output: list[Json], status: str, usage: Json | None, **extra: Any
) -> Json:
    incomplete = extra.pop("incomplete_reason", None)
    return {
        "id": echo.response_id,
        "object": "response",
        "created_at": echo.created_at,
        "status": status,
        "model": echo.model,
        "output": output,
        "error": extra.pop("error", None),
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        **echo.fields,
        "usage": usage,
    }


def usage(chat_usage: Any) -> Json | None:
    if not isinstance(chat_usage, dict):
        return None
    prompt = token_count(chat_usage.get("prompt_tokens"))
    completion = token_count(chat_usage.get("completion_tokens"))
    prompt_details = chat_usage.get("prompt_tokens_details")
    completion_details = chat_usage.get("completion_tokens_details")
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": token_count(_get(prompt_details, "cached_tokens")),
        },
        "output_tokens": completion,
        "output_tokens_details": {
            "reasoning_tokens": token_count(_get(completion_details, "reasoning_tokens")),
        },
        "total_tokens": token_count(chat_usage.get("total_tokens")) or prompt + completion,
    }


def response(chat: Json, echo: Echo) -> Json:
    """The Response object for a whole Chat Completions answer."""
    choices = chat.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    choice = choice if isinstance(choice, dict) else {}
    said = choice.get("message")
    said = said if isinstance(said, dict) else {}
    output: list[Json] = []
    if isinstance(text := said.get("content"), str) and text:
        output.append(_message_item(_item_id("msg", echo, 0), text))
    for call in said.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            call_id = str(call.get("id") or f"call_{len(output)}")
            arguments = function.get("arguments")
            output.append(
                _call_item(
                    _item_id("fc", echo, len(output)),
                    call_id,
                    str(function.get("name") or ""),
                    arguments if isinstance(arguments, str) else "{}",
                )
            )
    reason = _INCOMPLETE.get(str(choice.get("finish_reason")))
    status = "incomplete" if reason else "completed"
    return response_object(echo, output, status, usage(chat.get("usage")), incomplete_reason=reason)


def _message_item(item_id: str, text: Text, status: str = "completed") -> Json:
    return {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [_text_part(text)] if status == "completed" else [],
    }


def _text_part(text: Text) -> Json:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _call_item(
    item_id: str, call_id: str, name: str, arguments: Text, status: str = "completed"
) -> Json:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def _item_id(prefix: str, echo: Echo, index: int) -> str:
    return f"{prefix}_{echo.response_id.removeprefix('resp_')}_{index}"


def _get(found: Any, name: str) -> Any:
    return found.get(name) if isinstance(found, dict) else None


class ResponsesStream:
    """Turns Chat Completions chunks into Responses events as they arrive, numbered by
    `sequence_number`. Text and each tool call are output items; calls may grow interleaved
    (each event names its item). What the items say is kept (`Said`), up to `max_output_bytes`
    for all: the closing events and `response.completed` carry it. A delta past that is not
    sent: the open items close with what was, the Response ends `incomplete`
    (`max_output_tokens`), and the rest of the upstream's answer is dropped."""

    def __init__(self, echo: Echo, max_output_bytes: int = MAX_OUTPUT_BYTES) -> None:
        self._echo = echo
        self._sequence = 0
        self._started = False
        self._ended = False
        self._output: list[Json] = []  # finished (as sent) and open items, by output_index
        self._said = Said(max_output_bytes)  # what the open items have said
        self._text: int | None = None  # output_index of the open message item
        self._calls: dict[int, int] = {}  # the upstream's tool-call index -> output_index
        self._open_calls: set[int] = set()
        self._finish: Any = None
        self._usage: Json | None = None
        self._final: Json | None = None  # the Response `response.completed` carried

    def feed(self, chunk: Json) -> list[Event]:
        if self._ended:
            return []  # past the output cap
        events: list[Event] = []
        if not self._started:
            events += self._start(chunk)
        if chunk.get("usage"):
            self._usage = usage(chunk["usage"])
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                events += self._delta(delta)
                if self._ended:
                    return events
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return events

    def finish(self) -> list[Event]:
        if self._ended:
            return []
        self._ended = True
        events = [] if self._started else self._start({})
        events += self._close_text()
        for index in sorted(self._open_calls):
            events += self._close_call(index)
        reason = _INCOMPLETE.get(str(self._finish))
        status = "incomplete" if reason else "completed"
        final = response_object(
            self._echo, self._output, status, self._usage, incomplete_reason=reason
        )
        self._final = final
        events.append(self._event(f"response.{status}", {"response": final}))
        return events

    def final_body(self) -> bytes | None:
        """The Response `response.completed` (or `.incomplete`) carried, serialised; None
        before, or when the stream broke."""
        return None if self._final is None else orjson.dumps(self._final)

    def broken(self, message: str) -> list[Event]:
        if self._ended:
            return []
        self._ended = True
        error = {"code": "server_error", "message": message}
        output = [self._so_far(index) for index in range(len(self._output))]
        failed = response_object(self._echo, output, "failed", self._usage, error=error)
        events = [] if self._started else self._start({})
        events.append(self._event("response.failed", {"response": failed}))
        # The event's own fields, and the same as `error`, which is what the SDK raises from.
        fields: Json = {"code": "upstream_error", "message": message, "param": None}
        error_event = {**fields, "error": {"type": "upstream_error", **fields}}
        events.append(self._event("error", error_event))
        return events

    def _so_far(self, index: int) -> Json:
        """An item as it stands when the stream breaks: an open call with its arguments so
        far, an open message with no content yet."""
        item = self._output[index]
        if index in self._open_calls:
            return {**item, "arguments": self._said.take(index)}
        return item

    def _start(self, chunk: Json) -> list[Event]:
        self._started = True
        if isinstance(created := chunk.get("created"), int) and created > 0:
            echo = self._echo
            self._echo = Echo(echo.response_id, echo.model, created, echo.fields)
        opening = response_object(self._echo, [], "in_progress", None)
        return [
            self._event("response.created", {"response": opening}),
            self._event("response.in_progress", {"response": opening}),
        ]

    def _delta(self, delta: Json) -> list[Event]:
        events: list[Event] = []
        if isinstance(text := delta.get("content"), str) and text:
            if self._text is None:
                events += self._open_text()
            assert self._text is not None
            if not self._said.add(self._text, text):
                return events + self._capped()
            events.append(
                self._event(
                    "response.output_text.delta",
                    {
                        "item_id": self._output[self._text]["id"],
                        "output_index": self._text,
                        "content_index": 0,
                        "delta": text,
                        "logprobs": [],
                    },
                )
            )
        for call in delta.get("tool_calls") or ():
            if not isinstance(call, dict):
                continue
            position = call.get("index", 0)
            named = call.get("function")
            function: Json = named if isinstance(named, dict) else {}
            if position not in self._calls:
                events += self._close_text()
                index = len(self._output)
                item = _call_item(
                    _item_id("fc", self._echo, index),
                    str(call.get("id") or f"call_{index}"),
                    str(function.get("name") or ""),
                    "",
                    status="in_progress",
                )
                self._output.append(item)
                self._said.open(index)
                self._calls[position] = index
                self._open_calls.add(index)
                events.append(self._added(index))
            index = self._calls[position]
            arguments = function.get("arguments")
            if isinstance(arguments, str) and arguments and index in self._open_calls:
                if not self._said.add(index, arguments):
                    return events + self._capped()
                events.append(
                    self._event(
                        "response.function_call_arguments.delta",
                        {
                            "item_id": self._output[index]["id"],
                            "output_index": index,
                            "delta": arguments,
                        },
                    )
                )
        return events

    def _capped(self) -> list[Event]:
        log.warning("responses.output_capped", max_bytes=self._said.max_bytes)
        self._finish = "length"  # as an answer that reached its maximum output ends
        return self.finish()

    def _open_text(self) -> list[Event]:
        index = len(self._output)
        self._output.append(_message_item(_item_id("msg", self._echo, index), "", "in_progress"))
        self._said.open(index)
        self._text = index
        part = {
            "item_id": self._output[index]["id"],
            "output_index": index,
            "content_index": 0,
            "part": _text_part(""),
        }
        return [self._added(index), self._event("response.content_part.added", part)]

    def _close_text(self) -> list[Event]:
        if self._text is None:
            return []
        index, self._text = self._text, None
        text = self._said.take(index)
        item = self._output[index] = _message_item(self._output[index]["id"], text)
        where = {"item_id": item["id"], "output_index": index, "content_index": 0}
        return [
            self._event("response.output_text.done", {**where, "text": text, "logprobs": []}),
            self._event("response.content_part.done", {**where, "part": _text_part(text)}),
            self._event("response.output_item.done", {"output_index": index, "item": item}),
        ]

    def _close_call(self, index: int) -> list[Event]:
        self._open_calls.discard(index)
        arguments = self._said.take(index)
        item = {**self._output[index], "status": "completed", "arguments": arguments}
        self._output[index] = item
        done = {"item_id": item["id"], "output_index": index, "arguments": arguments}
        return [
            self._event("response.function_call_arguments.done", done),
            self._event("response.output_item.done", {"output_index": index, "item": item}),
        ]

    def _added(self, index: int) -> Event:
        item = dict(self._output[index])
        return self._event("response.output_item.added", {"output_index": index, "item": item})

    def _event(self, name: str, data: Json) -> Event:
        event = (name, {"type": name, "sequence_number": self._sequence, **data})
        self._sequence += 1
        return event
