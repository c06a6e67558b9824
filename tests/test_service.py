"""The daemon as a service, over real sockets and processes: sd_notify, SIGTERM, the unit."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from localrouter.cli import main
from localrouter.systemd import Notifier, render_unit
from tests.conftest import eventually

ROOT = Path(__file__).parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Daemon:
    """`python -m localrouter serve` in a child process with its own HOME and config."""

    def __init__(self, tmp: Path, config: dict[str, Any], extra_env: dict[str, str] | None = None):
        self.port = free_port()
        self.config = tmp / "config.yaml"
        self.config.write_text(yaml.safe_dump(config))
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")},
            "HOME": str(tmp),
            "XDG_CONFIG_HOME": str(tmp / "config"),
            "XDG_CACHE_HOME": str(tmp / "cache"),
            **(extra_env or {}),
        }
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "localrouter",
            "serve",
            "--config",
            str(self.config),
            "--port",
            str(self.port),
            env=self.env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        async with aiohttp.ClientSession() as session:
            for _ in range(500):
                try:
                    async with session.get(f"{self.url}/health") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    await asyncio.sleep(0.02)
        raise AssertionError("the daemon did not start")

    async def stop(self) -> tuple[int, str]:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(self.process.communicate(), 30)
        assert self.process.returncode is not None
        return self.process.returncode, stderr.decode()


@pytest.fixture
async def notify_socket(tmp_path: Path) -> AsyncIterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.setblocking(False)
    yield sock
    sock.close()


async def receive(sock: socket.socket, until: str, seconds: float = 10.0) -> list[str]:
    loop = asyncio.get_running_loop()
    messages: list[str] = []
    async with asyncio.timeout(seconds):
        while not any(until in message for message in messages):
            messages.append((await loop.sock_recv(sock, 4096)).decode())
    return messages


async def test_notify_ready_watchdog_and_stopping(tmp_path: Path, notify_socket: socket.socket):
    """Under systemd the daemon sends READY=1 with its status and MAINPID, then WATCHDOG=1 pings,
    and on SIGTERM STOPPING=1 before it exits 0."""
    daemon = Daemon(
        tmp_path,
        {"providers": []},
        {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "200000"},
    )
    await daemon.start()
    messages = await receive(notify_socket, "READY=1")
    ready = next(m for m in messages if "READY=1" in m)
    assert "STATUS=Serving 0 provider instances" in ready
    assert f"MAINPID={daemon.process.pid}" in ready  # type: ignore[union-attr]
    await receive(notify_socket, "WATCHDOG=1")  # every 0.1 s: half of WATCHDOG_USEC
    code, _ = await daemon.stop()
    messages = await receive(notify_socket, "STOPPING=1")
    assert code == 0


def test_notifier_speaks_to_abstract_sockets_and_is_silent_without_one():
    name = f"localrouter-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + name)
        listener.settimeout(2)
        Notifier({"NOTIFY_SOCKET": f"@{name}"}).status("hello")
        assert listener.recv(100) == b"STATUS=hello"
    silent = Notifier({})
    assert not silent.enabled
    silent.ready("nobody listens")  # no socket, no error


async def test_sigterm_lets_a_slow_request_finish_and_exits_zero(
    tmp_path: Path, aiohttp_server: Any
):
    arrived, release = asyncio.Event(), asyncio.Event()

    async def slow_chat(request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()  # answers only once the daemon has stopped listening
        return web.json_response({"id": "x", "object": "chat.completion", "choices": []})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", slow_chat)
    upstream = await aiohttp_server(app)
    base = str(upstream.make_url("/v1"))
    daemon = Daemon(
        tmp_path, {"providers": [{"name": "up", "type": "openai_compatible", "base_url": base}]}
    )
    await daemon.start()
    async with aiohttp.ClientSession() as session:
        request = asyncio.create_task(
            session.post(
                f"{daemon.url}/v1/chat/completions", json={"model": "up/m", "messages": []}
            )
        )
        await arrived.wait()  # the request is now waiting on the upstream
        stopping = asyncio.create_task(daemon.stop())

        async def not_listening() -> bool:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
            except OSError:
                return True
            writer.close()
            await writer.wait_closed()
            return False

        await eventually(not_listening, "the daemon to stop listening")
        release.set()
        response = await request
        assert response.status == 200
        assert (await response.json())["object"] == "chat.completion"
        code, stderr = await stopping
    assert code == 0, stderr
    assert "server.stopped" in stderr


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip(
            "systemd-analyze is not installed: apt-get install systemd (.ci/run does when root)"
        )
    unit = tmp_path / "localrouter.service"
    unit.write_text(render_unit(f"{sys.executable} -m localrouter serve"))
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    run = subprocess.run(
        ["systemd-analyze", "--user", "verify", str(unit)],
        capture_output=True,
        text=True,
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr.strip() == "", run.stderr  # warnings (unknown keys, bad values) fail too


def test_the_shipped_unit_is_the_template_rendered_for_a_user_install():
    shipped = (ROOT / "systemd" / "localrouter.service").read_text()
    assert shipped == render_unit("%h/.local/bin/localrouter serve")


def test_service_install_writes_the_unit_and_says_what_to_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert main(["service", "install"]) == 0
    unit = (tmp_path / "systemd" / "user" / "localrouter.service").read_text()
    exec_line = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    command = exec_line.removeprefix("ExecStart=").split()[0]
    assert Path(command).exists()
    assert "Type=notify" in unit
    out = capsys.readouterr().out
    assert "systemctl --user enable --now localrouter.service" in out
