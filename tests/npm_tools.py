"""The real agent CLIs (Claude Code, Codex) and client libraries (OpenRouter's SDK) for
end-to-end tests: installed once per pinned version with npm into the user's cache folder, or
skipped with a message saying why. Their runs are kept on loopback: every proxy variable points
at a closed local port, so a CLI that tries to phone home fails at once instead of reaching the
network."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import platformdirs
import pytest

CLOSED_PORT_PROXY = "http://127.0.0.1:9"  # discard: nothing listens there


def npm_cli(package: str, version: str, command: str) -> Path:
    """The path of `command` from `package@version`, installing it if needed; skips the test
    when npm is missing or the install fails."""
    prefix = _CACHE / f"{command}-{version}"
    binary = prefix / "node_modules" / ".bin" / command
    _install(package, version, prefix, binary)
    return binary


def npm_module(package: str, version: str) -> Path:
    """The folder of the library `package@version` (its package.json inside), for a node
    script to import, installing it if needed; skips the test when npm is missing or the
    install fails."""
    prefix = _CACHE / f"{package.lstrip('@').replace('/', '-')}-{version}"
    folder = prefix / "node_modules" / package
    _install(package, version, prefix, folder / "package.json")
    return folder


def node() -> Path:
    """The node binary, to run a script against an npm_module; skips the test without it."""
    found = shutil.which("node")
    if found is None:
        pytest.skip("node is not installed: cannot run this test's script")
    return Path(found)


_CACHE = Path(platformdirs.user_cache_dir("localrouter-tests")) / "npm"


def _install(package: str, version: str, prefix: Path, installed: Path) -> None:
    """`package@version` into `prefix`, unless `installed` (what it provides) is there."""
    if installed.exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip(f"npm is not installed: cannot install {package}@{version} for this test")
    prefix.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [
            npm,
            "install",
            "--no-audit",
            "--no-fund",
            "--prefix",
            str(prefix),
            f"{package}@{version}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0 or not installed.exists():
        pytest.skip(f"npm could not install {package}@{version}: {done.stderr.strip()[-500:]}")


def loopback_env(home: Path, **extra: str) -> dict[str, str]:
    """A CLI's environment: its own empty home, no way out but 127.0.0.1."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ANTHROPIC_", "OPENAI_", "CLAUDE_", "CODEX_", "OPENROUTER_"))
        and key.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
    }
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        HTTP_PROXY=CLOSED_PORT_PROXY,
        HTTPS_PROXY=CLOSED_PORT_PROXY,
        ALL_PROXY=CLOSED_PORT_PROXY,
        NO_PROXY="127.0.0.1,localhost",
    )
    env.update(extra)
    return env


async def run_cli(binary: Path, *args: str, cwd: Path, env: dict[str, str]) -> tuple[str, str]:
    """Run a CLI to the end (stdin closed) and give its output; fails the test, with the end
    of its error output, if it exits non-zero. The timeout guards against a hang only."""
    process = await asyncio.create_subprocess_exec(
        str(binary),
        *args,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout=300)
    except TimeoutError:
        process.kill()
        out, err = await process.communicate()
    errors = err.decode(errors="replace")
    assert process.returncode == 0, f"{binary.name} exited {process.returncode}: {errors[-2000:]}"
    return out.decode(errors="replace"), errors
