"""The real Codex CLI through the daemon, on a model that only speaks Chat Completions: Codex
asks, the model calls its shell tool, Codex runs the command and sends the output, the model
answers, Codex prints it.

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

CODEX_VERSION = "0.169.0"
TOKEN = "lr-token-codex-5e21"
KEY = "sk-upstream-key-codex-77d0"
USAGE = {"prompt_tokens": 800, "completion_tokens": 10, "total_tokens": 810}


class ShellModel(Recorder):
    """Asked for a file, calls Codex's shell tool to write it; shown the output, says done."""

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        said: dict[str, Any]
        if body["messages"][-1]["role"] == "tool":
            said, finish = {"role": "assistant", "content": "Wrote done.txt."}, "stop"
        else:
            arguments = orjson.dumps({"cmd": "printf 'hi\\n' > done.txt"}).decode()
            call = {
                "id": "call_shell_1",
                "type": "function",
                "function": {"name": "exec_command", "arguments": arguments},
            }
            said, finish = (
                {"role": "assistant", "content": None, "tool_calls": [call]},
                "tool_calls",
            )
        return await streamed(request, chat_chunks(said, finish, USAGE))

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "qwen3-coder"}]})


@pytest.fixture(scope="session")
def codex() -> Path:
    return npm_cli("@openai/codex", CODEX_VERSION, "codex")


async def test_codex_completes_a_task_on_a_chat_completions_model(
    codex: Path, aiohttp_server: Any, daemon: DaemonFactory, tmp_path: Path
):
    work, home = tmp_path / "project", tmp_path / "home"
    work.mkdir()
    (home / ".codex").mkdir(parents=True)
    model = ShellModel()
    upstream = web.Application()
    upstream.router.add_post("/v1/chat/completions", model.chat)
    upstream.router.add_get("/v1/models", model.models)
    server = await aiohttp_server(upstream)
    config = {
        "server": {"auth_token": TOKEN},
        "providers": [openai_compatible("lab", str(server.make_url("/v1")), api_key=KEY)],
    }
    client = await daemon(config)
    # The README's config.toml, pointed at this daemon.
    (home / ".codex" / "config.toml").write_text(
        'model = "lab/qwen3-coder"\n'
        'model_provider = "localrouter"\n\n'
        "[model_providers.localrouter]\n"
        'name = "localrouter"\n'
        f'base_url = "{client.make_url("/v1")}"\n'
        'wire_api = "responses"\n'
        'env_key = "LOCALROUTER_TOKEN"\n'
    )
    env = loopback_env(home, CODEX_HOME=str(home / ".codex"), LOCALROUTER_TOKEN=TOKEN)
    out, _ = await run_cli(
        codex,
        "exec",
        "--skip-git-repo-check",
        "--dangerously-bypass-approvals-and-sandbox",  # the test's folder is the sandbox
        "Write hi into done.txt",
        cwd=work,
        env=env,
    )
    assert out.strip().endswith("Wrote done.txt.")
    assert (work / "done.txt").read_text() == "hi\n"  # Codex ran the model's tool call

    first, second = model.bodies
    assert first["model"] == "qwen3-coder"
    assert first["stream"] is True
    offered = {tool["function"]["name"] for tool in first["tools"]}
    assert "exec_command" in offered
    assert [message["role"] for message in first["messages"]].count("system") == 1
    assert second["messages"][-2]["tool_calls"][0]["id"] == "call_shell_1"
    assert second["messages"][-1]["role"] == "tool"
    assert second["messages"][-1]["tool_call_id"] == "call_shell_1"
    assert all(headers["Authorization"] == f"Bearer {KEY}" for headers in model.headers)
    assert TOKEN not in str(model.headers)
