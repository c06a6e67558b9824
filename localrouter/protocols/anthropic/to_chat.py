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
) -> Json:
    """The Chat Completions body for a Messages body (already checked to be an object).
    `reasoning`: the model takes a reasoning effort, so `thinking` maps to `reasoning_effort`.
    `max_output_tokens`: the model's listed output limit. `max_tokens` is a ceiling, and
    Claude Code asks 32,000 of every model; many upstreams refuse more than their limit.
    Each optional field is looked up once and translated only when present: this runs on
    every bridged request (bench/bridges.py)."""
    get = messages_request.get
    chat: Json = {"model": upstream_model, "messages": _messages(messages_request)}
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


def _messages(request: Json) -> list[Json]:
    """The conversation as Chat messages, settled into the shape chat templates accept
    (chat_turns.py: Claude Code's `system` entries inside `messages`, consecutive turns)."""
    out: list[Json] = []
    if (system := request.get("system")) is not None and (text := _system_text(system)):
        out.append({"role": "system", "content": text})
    for entry in request.get("messages") or ():
        if not isinstance(entry, dict):
            continue
        role, content = entry.get("role"), entry.get("content")
        if role == "user":
            if type(content) is str:  # the usual short turn, without a call
                out.append({"role": "user", "content": content})
            else:
                out.extend(_user(content))
        elif role == "assistant":
            out.extend(_assistant(content))
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


def _user(content: Any) -> list[Json]:
    """Tool results become `tool` messages (first, in order, as Chat wants them right after
    the assistant's calls); the rest is one user message of content parts."""
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
            results.append(
                {"role": "tool", "tool_call_id": str(block.get("tool_use_id", "")), "content": text}
            )
            if images:  # a tool message carries text only: images follow as user parts
                parts += images
                only_text = False
        elif kind == "text" and isinstance(written := block.get("text"), str):
            parts.append({"type": "text", "text": written})
        elif kind == "image" and (image := _image_part(block.get("source"))):
            parts.append(image)
            only_text = False
    if parts:
        user_content: Any = "\n\n".join([p["text"] for p in parts]) if only_text else parts
        results.append({"role": "user", "content": user_content})
    return results


def _assistant(content: Any) -> list[Json]:
    if isinstance(content, str):
        return [{"role": "assistant", "content": content}]
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
