"""Issue 38: discovery against real local LLM servers, not the fakes of tests/local_servers.py.

The servers come from package registries: `llama-cpp-python[server]` (PyPI, which builds
llama.cpp from source) in a virtualenv of its own, and a tiny random-weight llama model that
tests/make_tiny_gguf.py writes with that virtualenv's `gguf` package. Each server runs as a
subprocess on a free loopback port; the daemon (the `daemon` fixture) finds it in its first
discovery round and routes a chat completion to it. Nothing goes past 127.0.0.1.

Without such a virtualenv the tests are skipped and say how to make one:

    python3 -m venv /tmp/llama-venv
    CMAKE_ARGS="-DGGML_NATIVE=OFF" CMAKE_BUILD_PARALLEL_LEVEL=2 \\
        /tmp/llama-venv/bin/pip install 'llama-cpp-python[server]' gguf numpy

(or set LOCALROUTER_LLAMA_PYTHON to any Python that has those three). llama.cpp's own
`llama-server` is tested too when LOCALROUTER_LLAMA_SERVER names its binary (or one is on
PATH): llama-cpp-python does not build it (see LLAMA_SERVER_HINT for how to).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from localrouter.discovery.fingerprint import probe
from tests.conftest import DaemonFactory, eventually, free_port
from tests.test_discovery import ADMIN, after_round, discovering, listed

HERE = Path(__file__).parent
DEFAULT_LLAMA_PYTHON = Path("/tmp/llama-venv/bin/python")
START_SECONDS = 180.0  # loading is quick; a busy 2-core machine is not
LLAMA_HINT = (
    "needs a Python with llama-cpp-python's server, gguf and numpy: "
    "python3 -m venv /tmp/llama-venv && "
    "/tmp/llama-venv/bin/pip install 'llama-cpp-python[server]' gguf numpy "
    "(builds llama.cpp from source), or set LOCALROUTER_LLAMA_PYTHON to such a Python"
)
LLAMA_SERVER_HINT = (
    "needs llama.cpp's own llama-server binary, which llama-cpp-python does not build: "
    "set LOCALROUTER_LLAMA_SERVER to one or put it on PATH (from the llama.cpp source in "
    "llama-cpp-python's sdist, vendor/llama.cpp: cmake -B build -DLLAMA_USE_PREBUILT_UI=OFF "
    "-DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DGGML_NATIVE=OFF && "
    "cmake --build build --target llama-server)"
)
AUTH = {"Authorization": f"Bearer {ADMIN}"}


def python_with(modules: str) -> str:
    """The Python that has `modules` (LOCALROUTER_LLAMA_PYTHON, else /tmp/llama-venv's);
    skipped when there is none, failed when the variable names one that lacks them."""
    chosen = os.environ.get("LOCALROUTER_LLAMA_PYTHON", "").strip()
    python = chosen or str(DEFAULT_LLAMA_PYTHON)
    if not chosen and not DEFAULT_LLAMA_PYTHON.exists():
        pytest.skip(LLAMA_HINT)
    check = subprocess.run(
        [python, "-c", f"import {modules}"], capture_output=True, text=True, timeout=120
    )
    if check.returncode != 0:
        said = check.stderr.strip().splitlines() or ["(nothing said)"]
        why = f"{python} cannot import {modules} ({said[-1]})"
        if chosen:
            pytest.fail(f"LOCALROUTER_LLAMA_PYTHON: {why}")
        pytest.skip(f"{why}; {LLAMA_HINT}")
    return python


def tiny_model(python: str, directory: Path) -> Path:
    """tests/make_tiny_gguf.py's model, written by `python` (which has gguf)."""
    path = directory / "tiny-random-llama.gguf"
    subprocess.run(
        [python, str(HERE / "make_tiny_gguf.py"), str(path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return path


class RealServer:
    """A server process on a loopback port, its output in a log file."""

    def __init__(self, command: list[str], port: int, log_path: Path) -> None:
        self.command = command
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, ready_path: str) -> None:
        """Start it, and wait until GET ready_path answers 200."""
        env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_TOKEN"))}
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(  # noqa: ASYNC220 (starting it does not block)
                self.command, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_SECONDS
        async with aiohttp.ClientSession(trust_env=False) as session:
            while True:
                if self.process.poll() is not None:
                    raise AssertionError(f"{self.command[0]} exited:\n{self.log()}")
                try:
                    async with session.get(self.url + ready_path) as reply:
                        if reply.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if loop.time() > deadline:
                    raise AssertionError(f"no answer on {self.url}{ready_path}:\n{self.log()}")
                await asyncio.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


async def chat(client: Any, model: str) -> dict[str, Any]:
    answer = await client.post(
        "/v1/chat/completions",
        headers=AUTH,
        json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
    )
    body: dict[str, Any] = await answer.json()
    assert answer.status == 200, body
    return body


async def test_llama_cpp_python_server_is_found_and_serves(
    daemon: DaemonFactory, tmp_path: Path
) -> None:
    """`python -m llama_cpp.server` is llama-cpp-python's own FastAPI/uvicorn app, not
    llama.cpp's llama-server: no `Server: llama.cpp` header (uvicorn's own), no `/props`,
    FastAPI's 404 `{"detail": "Not Found"}` on every other server's native path, and a model
    list whose items say `owned_by: "me"`. Nothing in it names the server, so it is an
    `openai_compatible` server (served through the generic OpenAI instance type), with no
    version and no context length (its list has no `max_model_len`). Its model's id is the
    path it was started with, so the daemon lists `openai_compatible-<port>/<path>`."""
    python = python_with("llama_cpp.server.app, gguf, numpy")
    model = tiny_model(python, tmp_path)
    port = free_port()
    command = [python, "-m", "llama_cpp.server", "--model", str(model)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "512"]
    server = RealServer(command, port, tmp_path / "llama-cpp-python.log")
    try:
        await server.start("/v1/models")
        client = await daemon(discovering([port]))
        row = (await after_round(client, 1))[port]
        instance = f"openai_compatible-{port}"
        assert (row["state"], row["type"], row["instance"]) == (
            "serving",
            "openai_compatible",
            instance,
        ), row
        assert row["provider_type"] == "openai_compatible"
        assert row["models"] == 1
        assert row["version"] is None
        async with aiohttp.ClientSession(
            cookie_jar=aiohttp.DummyCookieJar(), trust_env=False
        ) as session:
            finding = await probe("127.0.0.1", port, session)
        assert finding.evidence == "GET /v1/models -> 200 an OpenAI model list"
        models = await eventually(lambda: listed(client), "the found model listed")
        assert models == {f"{instance}/{model}"}
        body = await chat(client, f"{instance}/{model}")
        assert body["choices"][0]["message"]["role"] == "assistant"
    finally:
        server.stop()


async def test_llama_server_is_found_as_llamacpp(daemon: DaemonFactory, tmp_path: Path) -> None:
    """llama.cpp's own server says `Server: llama.cpp` on every answer, so it is `llamacpp`
    from the first question, with its build from `/props` and the context it was started
    with from `/props`' `default_generation_settings.n_ctx`."""
    binary = os.environ.get("LOCALROUTER_LLAMA_SERVER", "").strip() or shutil.which("llama-server")
    if not binary:
        pytest.skip(LLAMA_SERVER_HINT)
    python = python_with("gguf, numpy")
    model = tiny_model(python, tmp_path)
    port = free_port()
    command = [binary, "-m", str(model), "--host", "127.0.0.1", "--port", str(port)]
    command += ["-c", "256", "-t", "2"]
    server = RealServer(command, port, tmp_path / "llama-server.log")
    try:
        await server.start("/health")
        client = await daemon(discovering([port]))
        row = (await after_round(client, 1))[port]
        instance = f"llamacpp-{port}"
        assert (row["state"], row["type"], row["instance"]) == ("serving", "llamacpp", instance), (
            row
        )
        assert row["provider_type"] == "llamacpp"
        assert row["version"]  # build_info, "b<build>-<commit>"
        models = await eventually(lambda: listed(client), "the found model listed")
        assert len(models) == 1
        (name,) = models
        assert name.startswith(f"{instance}/")
        answer = await client.get(f"/v1/models/{name}", headers=AUTH)
        assert (await answer.json())["context_length"] == 256
        await chat(client, name)
    finally:
        server.stop()
