"""`localrouter serve` binds its ports before it starts anything: on a busy port it says so
and stops, and no upstream hears from it (issue 33, item 14)."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import yaml

from tests.conftest import UpstreamFactory, openai_compatible


async def test_a_busy_port_stops_the_daemon_before_any_list_is_fetched(
    tmp_path: Path, upstream: UpstreamFactory
) -> None:
    """The daemon exits 1 with server.bind_failed, and the configured upstream was never
    asked for its models (it was, before: the lists were fetched, then the bind failed)."""
    up = await upstream()
    up.serve_models(["a"])
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"providers": [openai_compatible("one", up.url)]}))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**os.environ, "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")}
        daemon = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "localrouter", "serve", "--config", str(config)),
            *("--port", str(port)),
            env=env,
            stderr=asyncio.subprocess.PIPE,
        )
        _, said = await asyncio.wait_for(daemon.communicate(), timeout=60)
    assert daemon.returncode == 1
    assert b"server.bind_failed" in said
    assert up.calls == 0
