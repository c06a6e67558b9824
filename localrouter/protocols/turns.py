"""A Chat Completions conversation as every chat template accepts it.

Agents stretch the protocols: Claude Code puts `system` entries among its messages, Codex sends
several `developer` messages and consecutive user messages. Many chat templates (Llama,
Mistral, Qwen's among them) accept one system message, first, and alternating turns, and
refuse or mangle anything else. `settle` keeps the meaning and fixes the shape:
- the system messages before the first turn become one;
- a later one is context for the turn at hand: it goes to the model inside the nearest user
  turn as a `<system-reminder>` (Claude Code's own way), never between an assistant's tool
  calls and their results;
- consecutive user turns become one (as Anthropic's API itself does).
"""

from __future__ import annotations

from typing import Any

from localrouter.base.jsonload import Json


def settle(messages: list[Json]) -> list[Json]:
    if len(messages) == 1 and messages[0]["role"] != "system":
        return messages  # one turn: settled already (the common short request)
    system: list[Any] = []  # the contents before the first turn: text, or parts (cache markers)
    out: list[Json] = []
    reminders: list[str] = []
    for message in messages:
        role = message["role"]
        if role == "system":
            content = message.get("content")
            if not out and isinstance(content, list) and _marked(content):
                system.append(content)  # kept as parts, so that its cache markers stay
            elif text := _text(content):
                (reminders if out else system).append(text)
        elif role == "user":
            if reminders:
                message = {**message, "content": _joined(_reminder(reminders), message["content"])}
            _append(out, message)
        else:
            if role == "assistant":
                _remind(out, reminders)
            out.append(message)
    _remind(out, reminders)
    if system:
        out.insert(0, {"role": "system", "content": _system(system)})
    return out


def _marked(parts: list[Any]) -> bool:
    return any(isinstance(part, dict) and "cache_control" in part for part in parts)


def _system(contents: list[Any]) -> Any:
    """The leading system contents as one: a text, or parts when any came as parts."""
    if all(isinstance(content, str) for content in contents):
        return "\n\n".join(contents)
    joined: Any = contents[0]
    for content in contents[1:]:
        joined = _joined(joined, content)
    return joined


def _remind(out: list[Json], reminders: list[str]) -> None:
    """Give held reminders to the user turn ending `out`, or to a new one after a tool result
    or an assistant turn."""
    if reminders:
        _append(out, {"role": "user", "content": _reminder(reminders)})


def _reminder(reminders: list[str]) -> str:
    text = "\n\n".join(f"<system-reminder>\n{r}\n</system-reminder>" for r in reminders)
    reminders.clear()
    return text


def _append(out: list[Json], message: Json) -> None:
    if message["role"] == "user" and out and out[-1]["role"] == "user":
        out[-1] = {**out[-1], "content": _joined(out[-1]["content"], message["content"])}
    else:
        out.append(message)


def _joined(first: Any, second: Any) -> Any:
    """Two user contents (a string or parts) as one."""
    if isinstance(first, str) and isinstance(second, str):
        return f"{first}\n\n{second}"

    def parts(content: Any) -> list[Json]:
        return [{"type": "text", "text": content}] if isinstance(content, str) else content

    return parts(first) + parts(second)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n\n".join(
        part["text"]
        for part in (content if isinstance(content, list) else ())
        if isinstance(part, dict) and isinstance(part.get("text"), str)
    )
