"""The real Claude Code CLI through the daemon, on a model that only speaks Chat Completions:
it asks, the model calls a tool, Claude Code runs it and sends the result, the model answers.

The CLI is installed with npm (pinned) on first use, or the test is skipped saying why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from tests.chat_streams import Recorder, chat_chunks, streamed
from tests.conftest import DaemonFactory, openai_compatible
from tests.npm_tools import loopback_env, npm_cli, run_cli

CLAUDE_CODE_VERSION = "2.1.197"
TOKEN = "lr-token-claude-code-31f0"
KEY = "sk-upstream-key-claude-code-9a2b"
USAGE = {"prompt_tokens": 900, "completion_tokens": 12, "total_tokens": 912}


class CodingModel(Recorder):
    """A model on a Chat Completions server: asked to write a file, it calls Claude Code's
    Write tool; shown the tool's result, it says it is done."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        if any(message["role"] == "tool" for message in body["messages"]):
            said: dict[str, Any] = {"role": "assistant", "content": "Wrote done.txt."}
            finish = "stop"
        else:
            arguments = {"file_path": str(self.folder / "done.txt"), "content": "hi\n"}
            call = {
                "id": "call_write_1",
                "type": "function",
                "function": {"name": "Write", "arguments": orjson.dumps(arguments).decode()},
            }
            said, finish = (
                {"role": "assistant", "content": None, "tool_calls": [call]},
                "tool_calls",
            )
        return await streamed(request, chat_chunks(said, finish, USAGE))

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "qwen3-coder"}]})


@pytest.fixture(scope="session")
def claude() -> Path:
    return npm_cli("@anthropic-ai/claude-code", CLAUDE_CODE_VERSION, "claude")


async def test_claude_code_completes_a_task_on_a_chat_completions_model(
    claude: Path, aiohttp_server: Any, daemon: DaemonFactory, tmp_path: Path
):
    work = tmp_path / "project"
    work.mkdir()
    model = CodingModel(work)
    upstream = web.Application()
    upstream.router.add_post("/v1/chat/completions", model.chat)
    upstream.router.add_get("/v1/models", model.models)
    server = await aiohttp_server(upstream)
    config = {
        "server": {"auth_token": TOKEN},
        "providers": [openai_compatible("lab", str(server.make_url("/v1")), api_key=KEY)],
    }
    client = await daemon(config)
    env = loopback_env(
        tmp_path / "home",
        ANTHROPIC_BASE_URL=str(client.make_url("")).rstrip("/"),  # the README's two variables
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
        "lab/qwen3-coder",
        "--allowedTools",
        "Write",
        "--output-format",
        "json",
        cwd=work,
        env=env,
    )
    result = orjson.loads(out)
    assert result["is_error"] is False
    assert result["result"] == "Wrote done.txt."
    assert result["num_turns"] == 2
    assert (work / "done.txt").read_text() == "hi\n"  # Claude Code ran the model's tool call

    first, second = model.bodies
    assert first["model"] == second["model"] == "qwen3-coder"
    assert first["stream"] is True
    assert first["stream_options"] == {"include_usage": True}
    assert "Write" in {tool["function"]["name"] for tool in first["tools"]}
    roles = [message["role"] for message in second["messages"]]
    assert roles[0] == "system"
    assert roles.count("system") == 1  # Claude Code's late system entries: templates refuse them
    assert second["messages"][-2]["tool_calls"][0]["id"] == "call_write_1"
    assert second["messages"][-1]["role"] == "tool"
    assert second["messages"][-1]["tool_call_id"] == "call_write_1"
    assert all(headers["Authorization"] == f"Bearer {KEY}" for headers in model.headers)
    assert TOKEN not in str(model.headers)
