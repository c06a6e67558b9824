"""The real Claude Code CLI keeps its prompt cache through the gateway (issue 35): over one task
of two model turns against an OpenRouter-shaped upstream (translated), the second turn carries
the same cache markers as the first, both turns go out with one key of a two-key pool, and both
belong to one session in the ledger. (The Anthropic-native path passes markers as they come:
tests/test_cache_markers.py.)

The CLI is installed with npm (pinned) on first use, or the test is skipped saying why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from localrouter.app import COMPONENTS
from tests.chat_streams import Recorder, chat_chunks, streamed
from tests.conftest import DaemonFactory
from tests.npm_tools import loopback_env, run_cli
from tests.test_claude_code import CLAUDE_CODE_VERSION, TOKEN, USAGE, claude

__all__ = ["claude"]  # the CLI fixture, shared with test_claude_code.py
KEYS = ["sk-or-pool-key-aaaaaaaa", "sk-or-pool-key-bbbbbbbb"]
assert CLAUDE_CODE_VERSION  # the same pinned CLI as test_claude_code.py


class WritingModel(Recorder):
    """Asked to write a file, it calls Write; shown the result, it says it is done."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    def told_the_result(self, body: dict[str, Any]) -> bool:
        return any(message["role"] == "tool" for message in body["messages"])

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        if self.told_the_result(body):
            said: dict[str, Any] = {"role": "assistant", "content": "Wrote done.txt."}
            finish = "stop"
        else:
            arguments = {"file_path": str(self.folder / "done.txt"), "content": "hi\n"}
            call = {
                "id": "call_write_1",
                "type": "function",
                "function": {"name": "Write", "arguments": orjson.dumps(arguments).decode()},
            }
            said = {"role": "assistant", "content": None, "tool_calls": [call]}
            finish = "tool_calls"
        return await streamed(request, chat_chunks(said, finish, USAGE))

    async def models(self, _: web.Request) -> web.Response:
        return web.json_response({"data": []})


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
    model = WritingModel(work)
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
        "-p",
        "Write hi into done.txt",
        "--model",
        "or/anthropic/claude-sonnet-4.5",
        "--allowedTools",
        "Write",
        "--output-format",
        "json",
        cwd=work,
        env=env,
    )
    result = orjson.loads(out)
    assert result["is_error"] is False, result
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
