"""Which event loop `localrouter serve` runs on: uvloop where it is installed (a dependency),
the standard loop when `LOCALROUTER_EVENT_LOOP=asyncio` asks for it, and a clear refusal for
anything else. The daemon's first log line names the loop."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_command(tmp_path: Path, loop: str | None) -> tuple[list[str], dict[str, str]]:
    """`localrouter serve` on a free port with no providers, and its environment with `loop`
    in LOCALROUTER_EVENT_LOOP (None: unset)."""
    config = tmp_path / "config.yaml"
    config.write_text("providers: []\n")
    env = {k: v for k, v in os.environ.items() if k != "LOCALROUTER_EVENT_LOOP"}
    env.update(HOME=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / "cache"))
    if loop is not None:
        env["LOCALROUTER_EVENT_LOOP"] = loop
    command = [sys.executable, "-m", "localrouter", "serve", "--config", str(config)]
    return [*command, "--port", str(free_port())], env


def first_log_line(tmp_path: Path, loop: str | None) -> tuple[int | None, str]:
    """Start the daemon, read the first line it logs, then stop it."""
    command, env = serve_command(tmp_path, loop)
    daemon = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    assert daemon.stderr is not None
    try:
        line = daemon.stderr.readline()  # bounded: the daemon logs at start or exits
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
        rest = daemon.communicate(timeout=30)[1]
    return daemon.returncode, line + rest


@pytest.mark.skipif(not HAS_UVLOOP, reason="uvloop is not installed on this platform")
def test_the_daemon_serves_on_uvloop_where_it_is_installed(tmp_path: Path) -> None:
    """With nothing asked, the daemon runs on uvloop and its first log line says so."""
    _, said = first_log_line(tmp_path, None)
    first = json.loads(said.splitlines()[0])
    assert first["event"] == "server.event_loop"
    assert first["loop"] == "uvloop"


def test_the_standard_loop_is_one_variable_away(tmp_path: Path) -> None:
    """LOCALROUTER_EVENT_LOOP=asyncio runs the daemon on asyncio's own loop."""
    _, said = first_log_line(tmp_path, "asyncio")
    first = json.loads(said.splitlines()[0])
    assert (first["event"], first["loop"]) == ("server.event_loop", "asyncio")


def test_an_unknown_loop_is_refused_with_what_to_set(tmp_path: Path) -> None:
    """Any other value stops the daemon at once (exit 2) with the values it takes."""
    command, env = serve_command(tmp_path, "trio")
    refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert "LOCALROUTER_EVENT_LOOP='trio'" in refused.stderr
    assert "'uvloop' or 'asyncio'" in refused.stderr
