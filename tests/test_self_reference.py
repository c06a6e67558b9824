"""An instance whose base URL is one of the daemon's own listeners would list and call the
daemon itself (each refresh added another `ollama/` layer, and calls bounced through it):
the daemon and `check` skip it and say so (issue 33, item 11)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from localrouter.app import create_app
from localrouter.cli import main
from localrouter.serve import bind, listen
from tests.conftest import FakeClock, Upstream, UpstreamFactory, openai_compatible, settings_from


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def looping_config(lab_url: str, port: int, ollama_port: int) -> dict[str, Any]:
    return {
        "server": {"port": port, "ollama_port": ollama_port},
        "providers": [
            openai_compatible("lab", lab_url),
            {"name": "ollama", "type": "ollama"},  # its default URL: 127.0.0.1:11434
            {
                "name": "again",
                "type": "openai_compatible",
                "base_url": f"http://localhost:{port}/v1",
            },
        ],
    }


@pytest.fixture
async def lab(upstream: UpstreamFactory) -> Upstream:
    fake = await upstream()
    fake.serve_models(["qwen"])
    return fake


@pytest.fixture
async def serving_itself(lab: Upstream, clock: FakeClock) -> AsyncIterator[str]:
    """The daemon as `serve` runs it, on its own port and Ollama's (11434 if free, else
    another port with the ollama instance pointed there): its main URL."""
    port = free_port()
    config = looping_config(lab.url, port, 11434)
    try:
        sockets = bind(settings_from(config))
    except OSError:  # an Ollama (or another test) holds 11434 here: the same loop elsewhere
        other = free_port()
        config = looping_config(lab.url, port, other)
        config["providers"][1]["base_url"] = f"http://127.0.0.1:{other}"
        sockets = bind(settings_from(config))
    runner = web.AppRunner(create_app(settings_from(config), clock=clock))
    await runner.setup()
    await listen(runner, sockets)
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_the_daemon_skips_instances_that_point_at_itself(serving_itself: str) -> None:
    """Neither the Ollama-port instance nor one at the main port is listed or called, even
    after refreshes; /health names each in its notes, and stays ok."""
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            async with session.post(f"{serving_itself}/api/cache/clear", json={}) as cleared:
                assert cleared.status == 200  # every list refreshed from its instance again
            async with session.get(f"{serving_itself}/v1/models") as listed:
                ids = [model["id"] for model in (await listed.json())["data"]]
            assert ids == ["lab/qwen"]
        async with session.get(f"{serving_itself}/api/providers") as providers:
            names = [p["name"] for p in (await providers.json())["providers"]]
        assert names == ["lab"]
        async with session.get(f"{serving_itself}/health") as health:
            shown = await health.json()
    assert shown["status"] == "ok"
    skipped = [note for note in shown["notes"] if "this daemon's own listener" in note]
    assert len(skipped) == 2
    assert any("'ollama'" in note for note in skipped)
    assert any("'again'" in note for note in skipped)


def test_check_says_which_instances_point_at_the_daemon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`localrouter check` counts only the instances it will serve, marks the others and
    says why in a note."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(looping_config("http://127.0.0.1:9/v1", 8741, 11434)))
    assert main(["check", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "instances: 1" in out
    assert out.count("(skipped: this daemon's own listener, see the note)") == 2
    assert "note: instance 'ollama' is skipped" in out
