"""OpenAI Responses <-> Chat Completions: the request mapping Codex-style inputs rely on."""

from __future__ import annotations

import pytest

from localrouter.base.errors import BadRequest
from localrouter.protocols.responses.from_chat import Echo, ResponsesStream, echoed, response
from localrouter.protocols.responses.to_chat import chat_request


def test_codex_style_input_items_become_the_conversation():
    request = {
        "instructions": "You are Codex.",
        "input": [
            {
                "type": "message",
                "role": "developer",
                "content": [{"type": "input_text", "text": "Sandbox: on."}],
            },
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "List files"}],
            },
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Listing."}],
            },
            {
                "type": "function_call",
                "call_id": "c1",
                "name": "shell",
                "arguments": '{"cmd":["ls"]}',
            },
            {"type": "function_call_output", "call_id": "c1", "output": "a.txt"},
            {"type": "local_shell_call", "call_id": "c2", "action": {}},
        ],
        "tools": [
            {
                "type": "function",
                "name": "shell",
                "parameters": {"type": "object"},
                "strict": False,
            },
            {"type": "web_search"},
            {"type": "namespace", "name": "mcp"},
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "reasoning": {"effort": "high", "summary": "auto"},
        "text": {"format": {"type": "json_object"}},
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "k",
        "stream": True,
    }
    translated = chat_request(request, "qwen", reasoning=True, max_output_tokens=None)
    assert translated.dropped_tools == ["web_search", "namespace"]
    assert translated.body == {
        "model": "qwen",
        "messages": [
            {"role": "system", "content": "You are Codex.\n\nSandbox: on."},
            {"role": "user", "content": "List files"},
            {
                "role": "assistant",
                "content": "Listing.",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "shell", "arguments": '{"cmd":["ls"]}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "a.txt"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {"name": "shell", "parameters": {"type": "object"}, "strict": False},
            }
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "response_format": {"type": "json_object"},
        "reasoning_effort": "high",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert "reasoning_effort" not in chat_request(request, "m", reasoning=False).body


def test_max_output_tokens_is_a_ceiling_lowered_to_the_models_limit():
    request = {"input": "Hi", "max_output_tokens": 32000}
    assert chat_request(request, "m", max_output_tokens=8192).body["max_tokens"] == 8192
    assert chat_request(request, "m").body["max_tokens"] == 32000


def test_a_required_tool_that_cannot_run_is_refused():
    request = {
        "input": "Hi",
        "tools": [{"type": "file_search"}],
        "tool_choice": {"type": "file_search"},
    }
    with pytest.raises(BadRequest, match="file_search"):
        chat_request(request, "m")
    named = {"input": "Hi", "tool_choice": {"type": "function", "name": "f"}}
    assert chat_request(named, "m").body["tool_choice"] == {
        "type": "function",
        "function": {"name": "f"},
    }


def test_codex_turns_are_settled_as_templates_accept_them():
    """What the real CLI sent (codex 0.169.0 through the daemon): two developer messages, two
    user messages, then after a tool call its output and a developer update."""
    request = {
        "input": [
            {
                "type": "message",
                "role": "developer",
                "content": [{"type": "input_text", "text": "A"}],
            },
            {
                "type": "message",
                "role": "developer",
                "content": [{"type": "input_text", "text": "B"}],
            },
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "env"}]},
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "task"}],
            },
            {"type": "function_call", "call_id": "c1", "name": "exec_command", "arguments": "{}"},
            {"type": "message", "role": "developer", "content": "cwd changed"},
            {"type": "function_call_output", "call_id": "c1", "output": "ok"},
        ]
    }
    messages = chat_request(request, "m").body["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "user"]
    assert messages[0]["content"] == "A\n\nB"
    assert messages[1]["content"] == "env\n\ntask"
    assert messages[4]["content"] == "<system-reminder>\ncwd changed\n</system-reminder>"


def test_an_answer_cut_at_the_token_limit_is_an_incomplete_response():
    cut = {
        "created": 1_800_000_000,
        "choices": [{"message": {"content": "Half"}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 5},
    }
    whole = response(cut, Echo.of(echoed({"max_output_tokens": 5}), "lab/m", cut))
    assert whole["status"] == "incomplete"
    assert whole["incomplete_details"] == {"reason": "max_output_tokens"}
    assert whole["usage"]["total_tokens"] == 8
    stream = ResponsesStream(Echo.of(echoed({}), "lab/m"))
    events = stream.feed({"choices": [{"delta": {"content": "Half"}, "finish_reason": "length"}]})
    events += stream.finish()
    names = [name for name, _ in events]
    assert names[-1] == "response.incomplete"
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert events[-1][1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert events[-1][1]["response"]["output"][0]["content"][0]["text"] == "Half"
