"""An OpenAI Responses request, as the Chat Completions request that means the same.

`instructions` and `input` (a string, or items: messages with text and image parts, function
calls and their outputs with their `call_id`) become messages, settled into the shape chat
templates accept (chat_turns.py; Codex sends several developer and user messages in a row).
Function tools, `tool_choice`, `parallel_tool_calls`, `max_output_tokens`, sampling,
`text.format` and, for models that take one, `reasoning.effort` map across. Reasoning items are
dropped. Tools the upstream cannot run (web_search, file_search, computer_use, Codex's
namespace, ...) are dropped and named, so the answer can say so; a request that requires one
is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from localrouter.base.errors import BadRequest
from localrouter.base.jsonload import Json
from localrouter.protocols.turns import settle

_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
_EFFORTS = ("minimal", "low", "medium", "high")


@dataclass(slots=True)
class ChatRequest:
    body: Json
    dropped_tools: list[str] = field(default_factory=list)  # tool types the upstream can't run


def chat_request(
    request: Json,
    upstream_model: str,
    *,
    reasoning: bool = False,
    max_output_tokens: int | None = None,
) -> ChatRequest:
    """The Chat Completions body for a Responses body (already checked to be an object)."""
    messages = _messages(request.get("input"))
    if isinstance(instructions := request.get("instructions"), str) and instructions:
        messages.insert(0, {"role": "system", "content": instructions})
    messages = settle(messages)
    chat: Json = {"model": upstream_model, "messages": messages}
    tools, dropped = _tools(request.get("tools"))
    if tools:
        chat["tools"] = tools
    if (choice := _tool_choice(request.get("tool_choice"), dropped)) is not None:
        chat["tool_choice"] = choice
    if tools and isinstance(parallel := request.get("parallel_tool_calls"), bool):
        chat["parallel_tool_calls"] = parallel
    if isinstance(limit := request.get("max_output_tokens"), int):
        chat["max_tokens"] = min(limit, max_output_tokens or limit)
    for name in ("temperature", "top_p"):
        if isinstance(value := request.get(name), (int, float)):
            chat[name] = value
    if (response_format := _response_format(request.get("text"))) is not None:
        chat["response_format"] = response_format
    effort = request.get("reasoning")
    effort = effort.get("effort") if isinstance(effort, dict) else None
    if reasoning and effort in _EFFORTS:
        chat["reasoning_effort"] = effort
    for name in ("user", "safety_identifier"):
        if isinstance(user := request.get(name), str) and user:
            chat["user"] = user
            break
    if request.get("stream") is True:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return ChatRequest(chat, dropped)


def _messages(items: Any) -> list[Json]:
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    out: list[Json] = []
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, dict):
            continue
        kind = item.get("type", "message")
        if kind == "message" and (role := _ROLES.get(str(item.get("role")))) is not None:
            content = _content(item.get("content"), role)
            if content:
                out.append({"role": role, "content": content})
        elif kind == "function_call":
            call = {
                "id": str(item.get("call_id") or item.get("id") or ""),
                "type": "function",
                "function": {
                    "name": str(item.get("name") or ""),
                    "arguments": str(item.get("arguments") or "{}"),
                },
            }
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant":  # calls join the turn
                last.setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else _text(output)
            call_id = str(item.get("call_id", ""))
            out.append({"role": "tool", "tool_call_id": call_id, "content": text})
        # reasoning items and the calls of tools the upstream cannot run are dropped
    return out


def _content(content: Any, role: str) -> Any:
    """A message's content as Chat wants it: a string where it is only text."""
    if isinstance(content, str):
        return content
    parts: list[Json] = []
    for part in content if isinstance(content, list) else ():
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            parts.append({"type": "text", "text": part["refusal"]})
        elif kind == "input_image" and role == "user":
            url = part.get("image_url")
            if isinstance(url, str) and url:
                image: Json = {"url": url}
                if part.get("detail") in ("low", "high", "auto"):
                    image["detail"] = part["detail"]
                parts.append({"type": "image_url", "image_url": image})
    if all(part["type"] == "text" for part in parts):
        return "\n\n".join(part["text"] for part in parts)
    return parts


def _text(parts: Any) -> str:
    texts = [
        part["text"]
        for part in (parts if isinstance(parts, list) else ())
        if isinstance(part, dict) and isinstance(part.get("text"), str)
    ]
    return "\n\n".join(texts)


def _tools(tools: Any) -> tuple[list[Json], list[str]]:
    out: list[Json] = []
    dropped: list[str] = []
    for tool in tools if isinstance(tools, list) else ():
        if not isinstance(tool, dict):
            continue
        if tool.get("type") != "function" or not isinstance(tool.get("name"), str):
            dropped.append(str(tool.get("type") or "unknown"))
            continue
        parameters = tool.get("parameters")
        function: Json = {
            "name": tool["name"],
            "parameters": parameters if isinstance(parameters, dict) else {"type": "object"},
        }
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        if isinstance(tool.get("strict"), bool):
            function["strict"] = tool["strict"]
        out.append({"type": "function", "function": function})
    return out, dropped


def _tool_choice(choice: Any, dropped: list[str]) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if not isinstance(choice, dict):
        return None
    kind = choice.get("type")
    if kind == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    if kind in ("allowed_tools",):
        return choice.get("mode") if choice.get("mode") in ("auto", "required") else None
    raise BadRequest(
        f"tool_choice requires the {kind!r} tool, which this model's provider cannot run "
        f"through localrouter (it speaks Chat Completions); only function tools are offered"
        + (f" (dropped: {', '.join(dropped)})" if dropped else "")
        + ".",
        param="tool_choice",
    )


def _response_format(text: Any) -> Json | None:
    found = text.get("format") if isinstance(text, dict) else None
    if not isinstance(found, dict):
        return None
    if found.get("type") == "json_object":
        return {"type": "json_object"}
    if found.get("type") == "json_schema" and isinstance(found.get("schema"), dict):
        schema: Json = {"name": str(found.get("name") or "response"), "schema": found["schema"]}
        if isinstance(found.get("strict"), bool):
            schema["strict"] = found["strict"]
        if isinstance(found.get("description"), str):
            schema["description"] = found["description"]
        return {"type": "json_schema", "json_schema": schema}
    return None
