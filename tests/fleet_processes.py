"""A real redis-server and real `localrouter serve` processes, for the fleet tests."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import unused_port

from tests.conftest import eventually

REDIS_HINT = (
    "the fleet tests need redis-server: apt-get install redis-server (Debian, Ubuntu), "
    "brew install redis (macOS); .ci/run installs it"
)


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        pytest.skip(REDIS_HINT)
    return found


class RedisServer:
    """redis-server on a free loopback port, its files in a temporary directory."""

    def __init__(self, directory: Path, password: str | None = None) -> None:
        self.binary = redis_binary()
        self.directory = directory
        self.port = unused_port()
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--dir", str(self.directory), "--save", "", "--appendonly", "no"]
        if self.password:
            command += ["--requirepass", self.password]
        self.process = subprocess.Popen(  # noqa: ASYNC220 (starting it does not block)
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        await eventually(self.answers, "redis-server answering")

    async def answers(self) -> bool:
        """Whether it answers PING (once any CLIENT PAUSE is over)."""
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        auth = f"AUTH {self.password}\r\n" if self.password else ""
        writer.write(f"{auth}PING\r\n".encode())
        await writer.drain()
        reply = await reader.read(100)
        writer.close()
        await writer.wait_closed()
        return b"PONG" in reply

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def freeze(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    async def command(self, *words: str) -> bytes:
        """One command over RESP, for a test that plays a foreign writer."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        parts = [f"*{len(words)}\r\n".encode()]
        for word in words:
            data = word.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        writer.write(b"".join(parts))
        await writer.drain()
        reply = await reader.read(65536)
        writer.close()
        await writer.wait_closed()
        return reply

    async def subscribers(self, channel: str) -> int:
        """How many connections listen on `channel` (PUBSUB NUMSUB)."""
        reply = await self.command("PUBSUB", "NUMSUB", channel)
        return int(reply.rstrip().rpartition(b":")[2])


class DaemonProcess:
    """`python -m localrouter serve` with its own config file, home and cache directory."""

    def __init__(self, directory: Path, config: dict[str, Any], env: dict[str, str]) -> None:
        directory.mkdir(parents=True)
        self.directory = directory
        self.port = unused_port()
        self.config_path = directory / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = directory / "daemon.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_TOKEN"))},
            "HOME": str(directory),
            "XDG_CONFIG_HOME": str(directory / "config"),
            "XDG_CACHE_HOME": str(directory / "cache"),
            **env,
        }
        self.env.pop("LOCALROUTER_CONFIG", None)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [sys.executable, "-m", "localrouter", "serve", "--port", str(self.port)]
        command += ["--config", str(self.config_path)]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )

    async def ready(self, session: aiohttp.ClientSession) -> None:
        async def answers() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"the daemon exited:\n{self.log()}")
            try:
                async with session.get(f"{self.url}/health") as reply:
                    return reply.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(answers, f"daemon on port {self.port} answering")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")
