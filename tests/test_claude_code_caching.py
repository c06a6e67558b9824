"""The real Claude Code CLI keeps its prompt cache through the gateway (issue 35): over one task
of two model turns, against an OpenRouter-shaped upstream (translated) and an Anthropic-native
one, the second turn carries the same cache markers as the first; through OpenRouter both
turns go out with one key of a two-key pool and belong to one session in the ledger.

The CLI is installed with npm (pinned) on first use, or the test is skipped saying why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from localrouter.app import COMPONENTS
from tests.chat_streams import Recorder
from tests.conftest import DaemonFactory
from tests.npm_tools import loopback_env, run_cli
from tests.test_claude_code import CLAUDE_CODE_VERSION, TOKEN, CodingModel, claude

__all__ = ["claude"]  # the CLI fixture, shared with test_claude_code.py
KEYS = ["sk-or-pool-key-aaaaaaaa", "sk-or-pool-key-bbbbbbbb"]
assert CLAUDE_CODE_VERSION  # the same pinned CLI as test_claude_code.py


async def one_task(claude: Path, client: Any, tmp_path: Path, work: Path, model: str) -> None:
    """Claude Code, pointed at the daemon as the README says, writes a file with `model`."""
    env = loopback_env(
        tmp_path / "home",
        ANTHROPIC_BASE_URL=str(client.make_url("")).rstrip("/"),
        ANTHROPIC_AUTH_TOKEN=TOKEN,
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        DISABLE_AUTOUPDATER="1",
    )
    (tmp_path / "home").mkdir()
    out, _ = await run_cli(
        claude,
        *("-p", "Write hi into done.txt", "--model", model, "--allowedTools", "Write"),
        *("--output-format", "json"),
        cwd=work,
        env=env,
    )
    result = orjson.loads(out)
    assert result["is_error"] is False, result


def markers(body: dict[str, Any]) -> list[Any]:
    """Every cache_control in a request, in order, with where it sits."""
    found: list[Any] = []

    def walk(value: Any, where: str) -> None:
        if isinstance(value, dict):
            if "cache_control" in value:
                found.append((where, value["cache_control"]))
            for key, item in value.items():
                walk(item, f"{where}.{key}")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{where}[{index}]")

    walk(body.get("messages", [])[:1], "system")  # the stable prefix: the system prompt
    return found


async def test_claude_code_keeps_its_cache_markers_and_one_key_through_openrouter(
    claude: Path, aiohttp_server: Any, daemon: DaemonFactory, tmp_path: Path
) -> None:
    """Claude Code's two turns of one task: the same markers on the system prompt, one pool
    key, one session."""
    work = tmp_path / "project"
    work.mkdir()
    model = CodingModel(work)
    upstream = web.Application()
    upstream.router.add_post("/api/v1/chat/completions", model.chat)
    upstream.router.add_get("/{tail:.*}", model.models)
    server = await aiohttp_server(upstream)
    config = {
        "server": {"auth_token": TOKEN},
        "providers": [
            {
                "name": "or",
                "type": "openrouter",
                "base_url": str(server.make_url("/api/v1")),
                "api_keys": KEYS,
            }
        ],
        "usage": {"path": str(tmp_path / "usage.sqlite3")},
    }
    client = await daemon(config)
    await one_task(claude, client, tmp_path, work, "or/anthropic/claude-sonnet-4.5")
    turns = [body for body in model.bodies if body.get("tools")]  # the task, not side calls
    assert len(turns) >= 2
    first, second = turns[0], turns[-1]
    assert markers(first), "Claude Code marks its system prompt for caching"
    assert markers(second) == markers(first)
    keys = {
        headers["Authorization"]
        for body, headers in zip(model.bodies, model.headers, strict=True)
        if body.get("tools")
    }
    assert len(keys) == 1  # one key of the pool for the whole session
    await client.app[COMPONENTS].recorder.flush()
    sessions = {
        row["session"]
        for row in [
            await client.app[COMPONENTS].ledger.generation(f"{prefix}{n:x}")
            for prefix in [client.app[COMPONENTS].recorder.new_id.prefix]
            for n in range(1, len(model.bodies) + 1)
        ]
        if row is not None and row["route"] == "/v1/messages"
    }
    assert len(sessions) == 1
    assert None not in sessions


class NativeWritingModel(Recorder):
    """The same task on an Anthropic Messages server, answering in Anthropic's events."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    async def messages(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        told = any(
            isinstance(message.get("content"), list)
            and any(block.get("type") == "tool_result" for block in message["content"])
            for message in body["messages"]
        )
        start = {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 900, "output_tokens": 1},
            },
        }
        if told:
            block: dict[str, Any] = {"type": "text", "text": ""}
            delta: dict[str, Any] = {"type": "text_delta", "text": "Wrote done.txt."}
            reason = "end_turn"
        else:
            arguments = {"file_path": str(self.folder / "done.txt"), "content": "hi\n"}
            block = {"type": "tool_use", "id": "toolu_1", "name": "Write", "input": {}}
            delta = {"type": "input_json_delta", "partial_json": orjson.dumps(arguments).decode()}
            reason = "tool_use"
        events = [
            ("message_start", start),
            (
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": block},
            ),
            ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": reason, "stop_sequence": None},
                    "usage": {"output_tokens": 12},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for name, data in events:
            await response.write(f"event: {name}\ndata: ".encode() + orjson.dumps(data) + b"\n\n")
        return response

    async def models(self, _: web.Request) -> web.Response:
        return web.json_response({"data": [], "has_more": False})


def native_markers(body: dict[str, Any]) -> list[Any]:
    """The cache_control of each system block, in order (the stable prefix)."""
    system = body.get("system")
    return [block.get("cache_control") for block in system] if isinstance(system, list) else []


async def test_claude_code_keeps_its_cache_markers_on_an_anthropic_native_upstream(
    claude: Path, aiohttp_server: Any, daemon: DaemonFactory, tmp_path: Path
) -> None:
    """Claude Code's two turns of one task on an Anthropic-native instance: its system blocks'
    markers reach the upstream as it sent them, the same on both turns."""
    work = tmp_path / "project"
    work.mkdir()
    model = NativeWritingModel(work)
    upstream = web.Application()
    upstream.router.add_post("/v1/messages", model.messages)
    upstream.router.add_get("/{tail:.*}", model.models)
    server = await aiohttp_server(upstream)
    config = {
        "server": {"auth_token": TOKEN},
        "providers": [
            {
                "name": "anth",
                "type": "anthropic",
                "base_url": str(server.make_url("/v1")),
                "api_key": "sk-ant-upstream-key-5e6f",
            }
        ],
    }
    client = await daemon(config)
    await one_task(claude, client, tmp_path, work, "anth/claude-sonnet-4-5")
    turns = [body for body in model.bodies if body.get("tools")]
    assert len(turns) >= 2
    first, second = turns[0], turns[-1]
    assert any(native_markers(first)), "Claude Code marks its system prompt for caching"
    assert native_markers(second) == native_markers(first)
    assert (work / "done.txt").read_text() == "hi\n"
