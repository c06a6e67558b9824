"""An Anthropic Messages request, as the Chat Completions request that means the same.

What has a counterpart maps across (system, text and image blocks, tool use and results with
their ids, tools, tool_choice, stop sequences, sampling, the user id, and `thinking` as a
reasoning effort for models that take one); what has none (thinking blocks, cache_control,
context_management, server tools, unknown fields) is dropped, never an error. Real clients
stretch the spec, and what they mean is honoured: Claude Code puts `role: "system"` entries
inside `messages` for non-Claude models, a billing header in `system`, and may send tools
with no schema.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from localrouter.base.jsonload import Json
from localrouter.protocols.turns import settle

_TOOL_CHOICE = {"auto": "auto", "any": "required", "none": "none"}
_NUMBER = (int, float)


def chat_request(
    messages_request: Json,
    upstream_model: str,
    *,
    reasoning: bool = False,
    max_output_tokens: int | None = None,
    cache_markers: bool = False,
) -> Json:
    """The Chat Completions body for a Messages body (already checked to be an object).
    `reasoning`: the model takes a reasoning effort, so `thinking` maps to `reasoning_effort`.
    `max_output_tokens`: the model's listed output limit. `max_tokens` is a ceiling, and
    Claude Code asks 32,000 of every model; many upstreams refuse more than their limit.
    Each optional field is looked up once and translated only when present: this runs on
    every bridged request (bench/bridges.py)."""
    get = messages_request.get
    mark = _marker(upstream_model) if cache_markers else None
    chat: Json = {"model": upstream_model, "messages": _messages(messages_request, mark)}
    if reasoning and (effort := reasoning_effort(messages_request)):
        chat["reasoning_effort"] = effort
    if isinstance(max_tokens := get("max_tokens"), int):
        chat["max_tokens"] = min(max_tokens, max_output_tokens or max_tokens)
    if isinstance(value := get("temperature"), _NUMBER):
        chat["temperature"] = value
    if isinstance(value := get("top_p"), _NUMBER):
        chat["top_p"] = value
    if (stops := get("stop_sequences")) is not None and (stops := _texts(stops)):
        chat["stop"] = stops
    if isinstance(metadata := get("metadata"), dict) and isinstance(
        user := metadata.get("user_id"), str
    ):
        chat["user"] = user
    if (tools := get("tools")) is not None and (tools := _tools(tools)):
        chat["tools"] = tools
        chat.update(_tool_choice(get("tool_choice")))
    if get("stream") is True:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}  # real counts for message_delta
    return chat


def wants_thinking(request: Json) -> bool:
    thinking = request.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")


def reasoning_effort(request: Json) -> str | None:
    """The effort `thinking` asks for: a budget's size (Claude Code's "think" asks 4,000
    tokens, "ultrathink" 31,999), or with adaptive thinking the `output_config.effort` it
    sends; None when thinking is off or left to the model."""
    thinking = request.get("thinking")
    if not isinstance(thinking, dict):
        return None
    if thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int):
            return "medium"
        return "low" if budget < 4000 else "medium" if budget < 16000 else "high"
    if thinking.get("type") == "adaptive":
        config = request.get("output_config")
        effort = config.get("effort") if isinstance(config, dict) else None
        return _EFFORTS.get(effort) if isinstance(effort, str) else None
    return None


_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "max": "high"}


# Where an upstream honours Anthropic's prompt-cache markers on Chat content parts
# (OpenRouter does, for Anthropic and Gemini models): a block's marker as that part keeps it,
# or None. A 1-hour ttl is Anthropic's alone: for another model the ttl goes, not the marker.
Mark = Callable[[Json], Json | None]


def _marker(upstream_model: str) -> Mark:
    anthropic = upstream_model.startswith("anthropic/") or "claude" in upstream_model

    def mark(block: Json) -> Json | None:
        marker = block.get("cache_control")
        if not isinstance(marker, dict):
            return None
        if "ttl" in marker and not anthropic:
            return {key: value for key, value in marker.items() if key != "ttl"}
        return marker

    return mark


def _part(text: str, block: Json, mark: Mark | None) -> Json:
    """A text part, with the block's cache marker where it is kept."""
    part: Json = {"type": "text", "text": text}
    if mark is not None and (marker := mark(block)) is not None:
        part["cache_control"] = marker
    return part


def _messages(request: Json, mark: Mark | None = None) -> list[Json]:
    """The conversation as Chat messages, settled into the shape chat templates accept
    (chat_turns.py: Claude Code's `system` entries inside `messages`, consecutive turns);
    with `mark`, cache markers kept on the parts they were on."""
    out: list[Json] = []
    system = request.get("system")
    if mark is not None and isinstance(system, list) and _marked(system):
        parts = [
            _part(block["text"], block, mark)
            for block in system
            if isinstance(block, dict)
            and isinstance(block.get("text"), str)
            and not block["text"].startswith(_BILLING_HEADER)
        ]
        out.append({"role": "system", "content": parts})
    elif system is not None and (text := _system_text(system)):
        out.append({"role": "system", "content": text})
    for entry in request.get("messages") or ():
        if not isinstance(entry, dict):
            continue
        role, content = entry.get("role"), entry.get("content")
        if role == "user":
            if type(content) is str:  # the usual short turn, without a call
                out.append({"role": "user", "content": content})
            else:
                out.extend(_user(content, mark))
        elif role == "assistant":
            out.extend(_assistant(content, mark))
        elif role == "system":
            out.append({"role": "system", "content": _text_of(content)})
    if len(out) == 1 and out[0]["role"] != "system":
        return out  # one turn: settled already (settle's own shortcut, without its call)
    return settle(out)


# Claude Code's first system block is a billing header for Anthropic, not an instruction.
_BILLING_HEADER = "x-anthropic-billing-header:"


def _system_text(system: Any) -> str:
    if isinstance(system, list):
        system = [
            block
            for block in system
            if not (isinstance(block, dict) and str(block.get("text")).startswith(_BILLING_HEADER))
        ]
    return _text_of(system)


def _marked(blocks: list[Any]) -> bool:
    return any(isinstance(block, dict) and "cache_control" in block for block in blocks)


def _user(content: Any, mark: Mark | None = None) -> list[Json]:
    """Tool results become `tool` messages (first, in order, as Chat wants them right after
    the assistant's calls); the rest is one user message of content parts (joined into one
    text when it is only text and nothing marks a part for a prompt cache)."""
    if mark is not None and not (isinstance(content, list) and _marked(content)):
        mark = None  # no marker here: the unmarked translation
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    results: list[Json] = []
    parts: list[Json] = []
    only_text = True
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "tool_result":
            text, images = _result_content(block.get("content"))
            if block.get("is_error") is True:
                text = f"Error: {text}" if text else "Error"
            said: Any = text
            if mark is not None and mark(block) is not None:
                said = [_part(text, block, mark)]
            results.append(
                {"role": "tool", "tool_call_id": str(block.get("tool_use_id", "")), "content": said}
            )
            if images:  # a tool message carries text only: images follow as user parts
                parts += images
                only_text = False
        elif kind == "text" and isinstance(written := block.get("text"), str):
            parts.append(_part(written, block, mark))
            if mark is not None and "cache_control" in parts[-1]:
                only_text = False  # kept as parts, so that the marker stays on its part
        elif kind == "image" and (image := _image_part(block.get("source"))):
            parts.append(image)
            only_text = False
    if parts:
        user_content: Any = "\n\n".join([p["text"] for p in parts]) if only_text else parts
        results.append({"role": "user", "content": user_content})
    return results


def _assistant(content: Any, mark: Mark | None = None) -> list[Json]:
    if isinstance(content, str):
        return [{"role": "assistant", "content": content}]
    if mark is not None and _marked(content):
        return _marked_assistant(content, mark)
    texts: list[str] = []
    calls: list[Json] = []
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif block.get("type") == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append(
                {
                    "id": str(block.get("id", "")),
                    "type": "function",
                    "function": {"name": str(block.get("name", "")), "arguments": arguments},
                }
            )
        # thinking and redacted_thinking blocks have no Chat counterpart: dropped
    message: Json = {"role": "assistant", "content": "\n\n".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    return [message] if texts or calls else []


def _marked_assistant(content: list[Any], mark: Mark) -> list[Json]:
    """An assistant turn whose text blocks carry cache markers: its text as parts."""
    plain = _assistant(
        [b for b in content if not (isinstance(b, dict) and b.get("type") == "text")]
    )
    message = plain[0] if plain else {"role": "assistant", "content": None}
    parts = [
        _part(block["text"], block, mark)
        for block in content
        if isinstance(block, dict)
        and block.get("type") == "text"
        and isinstance(block.get("text"), str)
    ]
    return [{**message, "content": parts or None}] if parts or plain else []


def _result_content(content: Any) -> tuple[str, list[Json]]:
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    images: list[Json] = []
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif block.get("type") == "image" and (image := _image_part(block.get("source"))):
            images.append(image)
    return "\n\n".join(texts), images


def _image_part(source: Any) -> Json | None:
    if not isinstance(source, dict):
        return None
    if source.get("type") == "base64" and isinstance(source.get("data"), str):
        media = source.get("media_type") or "image/png"
        return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{source['data']}"}}
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    return None


def _tools(tools: Any) -> list[Json]:
    """Client tools with a name become functions; server tools (web_search, ...), which carry
    a `type` other than "custom" and no schema, have no Chat counterpart and are dropped."""
    out: list[Json] = []
    for tool in tools if isinstance(tools, list) else ():
        # Claude Code sends two dozen tools with every request: the usual shape is checked in
        # a few steps (bench/bridges.py), anything else the long way.
        try:
            name, schema, description = tool["name"], tool["input_schema"], tool["description"]
        except (KeyError, TypeError):
            function = _function(tool)
        else:
            usual = type(name) is str and type(schema) is dict and type(description) is str
            if usual and ("type" not in tool or tool["type"] == "custom"):
                function = {"name": name, "description": description, "parameters": schema}
            else:
                function = _function(tool)
        if function is not None:
            out.append({"type": "function", "function": function})
    return out


def _function(tool: Any) -> Json | None:
    if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
        return None
    if tool.get("type") not in (None, "custom"):
        return None
    schema = tool.get("input_schema")
    function: Json = {
        "name": tool["name"],
        "parameters": schema if isinstance(schema, dict) else {"type": "object"},
    }
    if isinstance(tool.get("description"), str):
        function["description"] = tool["description"]
    return function


def _tool_choice(choice: Any) -> Json:
    if not isinstance(choice, dict):
        return {}
    kind = choice.get("type")
    found: Json = {}
    if kind in _TOOL_CHOICE:
        found["tool_choice"] = _TOOL_CHOICE[kind]
    elif kind == "tool" and isinstance(choice.get("name"), str):
        found["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    if choice.get("disable_parallel_tool_use") is True:
        found["parallel_tool_calls"] = False
    return found


def _text_of(content: Any) -> str:
    """A string, or the text blocks of a list joined by blank lines."""
    if isinstance(content, str):
        return content
    blocks = content if isinstance(content, list) else []
    return "\n\n".join(
        [
            text
            for block in blocks
            if isinstance(block, dict)
            and block.get("type") == "text"
            and isinstance(text := block.get("text"), str)
        ]
    )


def _texts(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []
