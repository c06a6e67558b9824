"""Anthropic Messages <-> Chat Completions, both ways, whole and streamed."""

from __future__ import annotations

from typing import Any

import orjson

from localrouter.protocols.anthropic.from_chat import MessagesStream, message
from localrouter.protocols.anthropic.to_chat import chat_request
from localrouter.protocols.bridge import sse


def test_a_messages_request_becomes_the_chat_request_that_means_the_same():
    request = {
        "model": "lab/qwen",
        "max_tokens": 512,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop_sequences": ["###"],
        "metadata": {"user_id": "u-1"},
        "stream": True,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "context_management": {"edits": []},
        "tools": [
            {"name": "read", "description": "Read a file", "input_schema": {"type": "object"}},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
            {"name": "placeholder"},
        ],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "messages": [
            {"role": "system", "content": "Claude Code put this here."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in a.txt?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "AAA"},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "text", "text": "Reading it."},
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "read",
                        "input": {"path": "a.txt"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": "no such file",
                        "is_error": True,
                    },
                    {"type": "text", "text": "Try b.txt"},
                ],
            },
        ],
    }
    chat = chat_request(request, "qwen")
    assert chat == {
        "model": "qwen",
        "max_tokens": 512,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["###"],
        "user": "u-1",
        "stream": True,
        "stream_options": {"include_usage": True},
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "read",
                    "description": "Read a file",
                    "parameters": {"type": "object"},
                },
            },
            {
                "type": "function",
                "function": {"name": "placeholder", "parameters": {"type": "object"}},
            },
        ],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "messages": [
            {"role": "system", "content": "Be brief.\n\nClaude Code put this here."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in a.txt?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
                ],
            },
            {
                "role": "assistant",
                "content": "Reading it.",
                "tool_calls": [
                    {
                        "id": "toolu_1",
                        "type": "function",
                        "function": {"name": "read", "arguments": '{"path":"a.txt"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_1", "content": "Error: no such file"},
            {"role": "user", "content": "Try b.txt"},
        ],
    }


def test_claude_codes_system_entries_reach_the_model_where_templates_accept_them():
    """What the real CLI sent (captured from claude 2.1.197 through the daemon): a billing
    header first in `system`, and `role: "system"` entries after the first user turn."""
    request = {
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.197;"},
            {"type": "text", "text": "You are an agent."},
        ],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Create done.txt"}]},
            {"role": "system", "content": "Agents: Explore, Plan."},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "c1", "name": "Bash", "input": {}}],
            },
            {"role": "system", "content": [{"type": "text", "text": "Mind the cwd."}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1"}]},
            {"role": "user", "content": "Thanks."},
            {"role": "system", "content": "Be brief."},
        ],
    }
    messages = chat_request(request, "m")["messages"]
    assert messages == [
        {"role": "system", "content": "You are an agent."},
        {
            "role": "user",
            "content": "Create done.txt\n\n<system-reminder>\nAgents: Explore, Plan.\n"
            "</system-reminder>",
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "Bash", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": ""},  # right after its call
        {
            "role": "user",  # the reminder, then the next user turn joined to it
            "content": "<system-reminder>\nMind the cwd.\n</system-reminder>\n\nThanks.\n\n"
            "<system-reminder>\nBe brief.\n</system-reminder>",
        },
    ]
    assert [m["role"] for m in messages].count("system") == 1


def test_consecutive_user_turns_are_one_turn_parts_kept():
    image = {"type": "image", "source": {"type": "url", "url": "https://x/cat.png"}}
    request = {"messages": [{"role": "user", "content": [image]}, {"role": "user", "content": "?"}]}
    assert chat_request(request, "m")["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "https://x/cat.png"}},
                {"type": "text", "text": "?"},
            ],
        }
    ]


def test_images_in_a_tool_result_follow_it_as_user_parts():
    """A tool message carries text only: a result's images come after it, in a user message
    of parts with the turn's text (never joined into a string that would drop them)."""
    shot = {"type": "image", "source": {"type": "url", "url": "https://x/shot.png"}}
    result = {
        "type": "tool_result",
        "tool_use_id": "t1",
        "content": [{"type": "text", "text": "ok"}, shot],
    }
    turn = {"role": "user", "content": [result, {"type": "text", "text": "Look."}]}
    assert chat_request({"messages": [turn]}, "m")["messages"] == [
        {"role": "tool", "tool_call_id": "t1", "content": "ok"},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "https://x/shot.png"}},
                {"type": "text", "text": "Look."},
            ],
        },
    ]
    text_only = {
        "role": "user",
        "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
    }
    assert chat_request({"messages": [text_only]}, "m")["messages"] == [
        {"role": "user", "content": "a\n\nb"}
    ]


def test_thinking_becomes_a_reasoning_effort_only_for_models_that_take_one():
    def effort(thinking: Any, reasoning: bool = True, **extra: Any) -> Any:
        request = {"messages": [], "thinking": thinking, **extra}
        return chat_request(request, "m", reasoning=reasoning).get("reasoning_effort")

    assert effort({"type": "enabled", "budget_tokens": 1024}) == "low"
    assert effort({"type": "enabled", "budget_tokens": 4000}) == "medium"  # "think"
    assert effort({"type": "enabled", "budget_tokens": 31999}) == "high"  # "ultrathink"
    assert effort({"type": "enabled"}) == "medium"
    assert effort({"type": "adaptive"}, output_config={"effort": "high"}) == "high"
    assert effort({"type": "adaptive"}, output_config={"effort": "max"}) == "high"
    assert effort({"type": "adaptive"}) is None  # left to the model
    assert effort({"type": "disabled"}) is None
    assert effort({"type": "enabled", "budget_tokens": 31999}, reasoning=False) is None


def test_tools_of_every_shape_map_or_drop_alike():
    schema = {"type": "object", "properties": {"x": {"type": "string"}}}
    tools: list[Any] = [
        {"name": "usual", "description": "d", "input_schema": schema},
        {"type": "custom", "name": "custom", "description": "d", "input_schema": schema},
        {"name": "bare", "input_schema": schema},
        {"name": "no_schema", "description": "d"},
        {"name": "bad_schema", "description": "d", "input_schema": "object"},
        {"name": "bad_description", "description": 7, "input_schema": schema},
        {"type": "web_search_20250305", "name": "web", "description": "d", "input_schema": schema},
        {"name": 5, "description": "d", "input_schema": schema},
        "a string",
        ["a", "list"],
        None,
    ]
    chat = chat_request({"messages": [], "tools": tools}, "m")
    functions = {tool["function"]["name"]: tool["function"] for tool in chat["tools"]}
    assert all(tool["type"] == "function" for tool in chat["tools"])
    assert functions == {
        "usual": {"name": "usual", "description": "d", "parameters": schema},
        "custom": {"name": "custom", "description": "d", "parameters": schema},
        "bare": {"name": "bare", "parameters": schema},
        "no_schema": {"name": "no_schema", "description": "d", "parameters": {"type": "object"}},
        "bad_schema": {"name": "bad_schema", "description": "d", "parameters": {"type": "object"}},
        "bad_description": {"name": "bad_description", "parameters": schema},
    }
    assert [tool["function"]["name"] for tool in chat["tools"]] == list(functions)


def test_tool_choice_maps_across():
    """tool_choice auto, none and a named tool become their chat-completions forms."""
    base = {"messages": [], "tools": [{"name": "t", "input_schema": {"type": "object"}}]}
    for choice, expected in (
        ({"type": "auto"}, "auto"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "t"}, {"type": "function", "function": {"name": "t"}}),
    ):
        assert chat_request({**base, "tool_choice": choice}, "m")["tool_choice"] == expected


WHOLE = {
    "id": "chatcmpl-9",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Let me look.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "read", "arguments": '{"path": "b.txt"}'},
                    }
                ],
            },
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {
        "prompt_tokens": 120,
        "completion_tokens": 30,
        "prompt_tokens_details": {"cached_tokens": 100},
    },
}


def test_a_whole_chat_answer_becomes_a_message():
    assert message(WHOLE, "lab/qwen") == {
        "id": "msg_chatcmpl-9",
        "type": "message",
        "role": "assistant",
        "model": "lab/qwen",
        "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "call_1", "name": "read", "input": {"path": "b.txt"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 20, "output_tokens": 30, "cache_read_input_tokens": 100},
    }


def test_stop_reasons():
    """Each chat finish_reason becomes its Messages stop_reason; a stop string that vLLM or SGLang
    names becomes stop_sequence, whole or streamed, and a stop token id does not."""
    for finish, stop in (
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
    ):
        answer = {"choices": [{"message": {"content": "x"}, "finish_reason": finish}]}
        assert message(answer, "m")["stop_reason"] == stop
    for named in ({"stop_reason": "###"}, {"matched_stop": "###"}):  # vLLM, SGLang
        answer = {"choices": [{"message": {"content": "x"}, "finish_reason": "stop", **named}]}
        assert message(answer, "m")["stop_reason"] == "stop_sequence"
        assert message(answer, "m")["stop_sequence"] == "###"
        stream = MessagesStream("m")
        stream.feed({"choices": [{"delta": {"content": "x"}, "finish_reason": "stop", **named}]})
        closing = dict(stream.finish())["message_delta"]["delta"]
        assert closing == {"stop_reason": "stop_sequence", "stop_sequence": "###"}
    eos = {"choices": [{"message": {"content": "x"}, "finish_reason": "stop", "stop_reason": 2}]}
    assert message(eos, "m")["stop_sequence"] is None  # a stop token id, not a sequence


def test_an_odd_answer_still_becomes_a_message():
    """What a sloppy upstream sends (a choice that is not an object, an unhashable finish
    reason, counts that are not counts) gives an empty, well-formed message, never a 500."""
    for odd in (
        {"choices": ["x"]},
        {"choices": [{"message": "x", "finish_reason": ["stop"]}]},
        {"choices": [], "usage": {"prompt_tokens": True, "completion_tokens": "3"}},
        {"choices": None, "usage": {"prompt_tokens": 5, "prompt_tokens_details": {"x": 1}}},
    ):
        answer = message(odd, "m")
        assert answer["content"] == []
        assert answer["stop_reason"] == "end_turn"
        assert answer["usage"]["output_tokens"] == 0
        assert "cache_read_input_tokens" not in answer["usage"]


def chunks() -> list[dict[str, Any]]:
    """WHOLE, as an upstream streams it (usage in a last chunk with no choices)."""

    def delta(**fields: Any) -> dict[str, Any]:
        return {
            "id": "chatcmpl-9",
            "choices": [{"index": 0, "delta": fields, "finish_reason": None}],
        }

    call = {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "read", "arguments": ""},
    }
    return [
        delta(role="assistant", content=""),
        delta(content="Let me "),
        delta(content="look."),
        delta(tool_calls=[call]),
        delta(tool_calls=[{"index": 0, "function": {"arguments": '{"path": '}}]),
        delta(tool_calls=[{"index": 0, "function": {"arguments": '"b.txt"}'}}]),
        {"id": "chatcmpl-9", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {"id": "chatcmpl-9", "choices": [], "usage": WHOLE["usage"]},
    ]


def accumulate(events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The final message a client builds from the events (as the SDK's stream helper does)."""
    built: dict[str, Any] = {}
    partial: dict[int, str] = {}
    for name, data in events:
        if name == "message_start":
            built = dict(data["message"])
            built["content"] = []
        elif name == "content_block_start":
            built["content"].append(dict(data["content_block"]))
        elif name == "content_block_delta":
            block, delta = built["content"][data["index"]], data["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            else:
                partial[data["index"]] = partial.get(data["index"], "") + delta["partial_json"]
        elif name == "content_block_stop" and data["index"] in partial:
            built["content"][data["index"]]["input"] = orjson.loads(partial[data["index"]])
        elif name == "message_delta":
            built.update(data["delta"])
            built["usage"] = data["usage"]
    return built


def test_a_stream_gives_the_events_of_the_whole_message():
    stream = MessagesStream("lab/qwen")
    events = [event for chunk in chunks() for event in stream.feed(chunk)] + stream.finish()
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert accumulate(events) == message(WHOLE, "lab/qwen")
    framed = sse(events[:1]).decode()
    assert framed.startswith("event: message_start\ndata: {")
    assert framed.endswith("}\n\n")


def test_an_empty_stream_still_closes_properly():
    stream = MessagesStream("m")
    names = [name for name, _ in stream.finish()]
    assert names == ["message_start", "ping", "message_delta", "message_stop"]
