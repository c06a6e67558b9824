"""An Ollama `/api/chat` or `/api/generate` request as a Chat Completions request.

Messages keep their roles; base64 `images` become image parts; an assistant's `tool_calls`
(arguments as objects, no ids) get ids, which the `tool` messages after it answer in order.
`format` is `json` or a JSON schema; `options` map to the sampling parameters Chat Completions
has; `think` asks a reasoning model for reasoning. Ollama streams unless told not to."""

from __future__ import annotations

from typing import Any

import orjson

from localrouter.base.errors import BadRequest
from localrouter.base.jsonload import Json
from localrouter.protocols.bridge import an_object

# options -> Chat Completions parameters of the same meaning
_OPTIONS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "num_predict": "max_tokens",
    "stop": "stop",
    "seed": "seed",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}
_IMAGE_TYPES = (("iVBOR", "image/png"), ("/9j/", "image/jpeg"), ("R0lGOD", "image/gif"))


def streams(body: Json) -> bool:
    return body.get("stream") is not False  # Ollama's default is a stream


def chat_request(body: Json, upstream_id: str, *, reasoning: bool) -> Json:
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise BadRequest("'messages' is required: a list of messages.", param="messages")
    return _request(body, upstream_id, _messages(messages), reasoning=reasoning)


def generate_request(body: Json, upstream_id: str, *, reasoning: bool) -> Json:
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise BadRequest("'prompt' is required: a string.", param="prompt")
    messages: list[Json] = []
    if isinstance(system := body.get("system"), str) and system:
        messages.append({"role": "system", "content": system})
    messages.append(_message({"role": "user", "content": prompt, "images": body.get("images")}))
    return _request(body, upstream_id, messages, reasoning=reasoning)


def _request(body: Json, upstream_id: str, messages: list[Json], *, reasoning: bool) -> Json:
    chat: Json = {"model": upstream_id, "messages": messages}
    options = body.get("options")
    if isinstance(options, dict):
        for name, parameter in _OPTIONS.items():
            if options.get(name) is not None:
                chat[parameter] = options[name]
    if isinstance(tools := body.get("tools"), list) and tools:
        chat["tools"] = [tool for tool in tools if isinstance(tool, dict)]
    fmt = body.get("format")
    if fmt == "json":
        chat["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        schema = {"name": "response", "schema": fmt}
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    think = body.get("think")
    if reasoning and think:
        chat["reasoning_effort"] = think if think in ("low", "medium", "high") else "medium"
    if streams(body):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


def _messages(messages: list[Any]) -> list[Json]:
    translated: list[Json] = []
    pending: list[str] = []  # ids of the last assistant's tool calls not answered yet
    for position, given in enumerate(messages):
        if not isinstance(given, dict):
            continue
        message = _message(given)
        if given.get("role") == "assistant" and isinstance(given.get("tool_calls"), list):
            calls = [call for call in given["tool_calls"] if isinstance(call, dict)]
            message["tool_calls"] = [
                _tool_call(call, f"call_{position}_{index}") for index, call in enumerate(calls)
            ]
            pending = [call["id"] for call in message["tool_calls"]]
        elif given.get("role") == "tool":
            message["tool_call_id"] = pending.pop(0) if pending else f"call_{position}"
        translated.append(message)
    return translated


def _message(given: Json) -> Json:
    role = given.get("role") if given.get("role") in ("system", "user", "assistant") else "tool"
    text = given.get("content") if isinstance(given.get("content"), str) else ""
    images = given.get("images")
    if role != "user" or not isinstance(images, list) or not images:
        return {"role": role, "content": text}
    parts: list[Json] = [{"type": "text", "text": text}] if text else []
    for image in images:
        if isinstance(image, str) and image:
            url = f"data:{_image_type(image)};base64,{image}"
            parts.append({"type": "image_url", "image_url": {"url": url}})
    return {"role": role, "content": parts}


def _tool_call(call: Json, call_id: str) -> Json:
    function = an_object(call.get("function"))
    arguments = function.get("arguments", {})
    return {
        "id": call_id,
        "type": "function",
        "function": {
            "name": str(function.get("name", "")),
            "arguments": arguments
            if isinstance(arguments, str)
            else orjson.dumps(arguments).decode(),
        },
    }


def _image_type(data: str) -> str:
    for prefix, kind in _IMAGE_TYPES:
        if data.startswith(prefix):
            return kind
    return "image/webp" if data.startswith("UklGR") else "image/png"
