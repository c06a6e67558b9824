"""`serve --host/--port` win over the file at start and at every reload: a reload compares
the file with what was bound, so /health never asks for a restart the command line made
pointless (issue 33, item 8)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from localrouter.app import COMPONENTS
from tests.conftest import DaemonFactory, UpstreamFactory, openai_compatible
from tests.test_reload import write_config

BOUND = {"host": "127.0.0.1", "port": 9999}  # as `serve --host 127.0.0.1 --port 9999` binds


@pytest.mark.parametrize(
    "file_server",
    [{}, {"port": 8741}, {"port": 7000}, {"host": "localhost"}],
    ids=["no-server-section", "default-port", "another-port", "another-host"],
)
async def test_a_reload_does_not_ask_a_restart_for_what_the_command_line_set(
    tmp_path: Path, upstream: UpstreamFactory, daemon: DaemonFactory, file_server: dict[str, Any]
) -> None:
    """Whatever the file says of server.host and server.port, the command line's values are
    the ones in force after a reload, and /health stays ok."""
    up = await upstream()
    up.serve_models(["a"])
    path = tmp_path / "config.yaml"
    config: dict[str, Any] = {"providers": [openai_compatible("one", up.url)]}
    write_config(path, config)
    client = await daemon({**config, "server": BOUND}, config_path=path, server_overrides=BOUND)
    reloader = client.app[COMPONENTS].reloader
    write_config(path, {**config, "server": file_server} if file_server else config)
    assert await reloader.reload()
    health = await (await client.get("/health")).json()
    assert health["config"]["restart_needed"] == []
    assert health["status"] == "ok"
    server = client.app[COMPONENTS].live.current.server
    assert (server.host, server.port) == (BOUND["host"], BOUND["port"])


async def test_a_changed_ollama_port_still_needs_a_restart_with_overrides(
    tmp_path: Path, upstream: UpstreamFactory, daemon: DaemonFactory
) -> None:
    """What the command line did not set is compared as before."""
    up = await upstream()
    up.serve_models(["a"])
    path = tmp_path / "config.yaml"
    config: dict[str, Any] = {"providers": [openai_compatible("one", up.url)]}
    write_config(path, config)
    client = await daemon({**config, "server": BOUND}, config_path=path, server_overrides=BOUND)
    write_config(path, {**config, "server": {"ollama_port": 11500}})
    assert await client.app[COMPONENTS].reloader.reload()
    health = await (await client.get("/health")).json()
    assert health["config"]["restart_needed"] == [
        "server.ollama_port changed to 11500: restart to apply"
    ]
