"""`localrouter serve` as a user runs it: no config file, no network, and it answers.

How fast it answers is measured by bench/startup.py: a wall-clock bound here failed on a loaded
2-core machine (2.7 s and 4.7 s against 1 s)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DRIVER = Path(__file__).with_name("offline_start.py")


def _loopback_only_namespace() -> list[str]:
    """A command prefix that runs in a fresh network namespace whose only interface is lo."""
    if not sys.platform.startswith("linux") or not shutil.which("unshare"):
        pytest.skip("needs Linux unshare to build a namespace without network")
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {probe.stderr.strip()}")
    return ["unshare", "-n", "sh", "-c", 'ip link set lo up 2>/dev/null; exec "$@"', "sh"]


@pytest.mark.parametrize(
    "command",
    [
        [str(Path(sys.executable).with_name("localrouter"))],
        [sys.executable, "-m", "localrouter"],
    ],
    ids=["console-script", "python-m"],
)
def test_serve_without_config_or_network_answers(command: list[str]):
    prefix = _loopback_only_namespace()
    run = subprocess.run(
        [*prefix, sys.executable, str(DRIVER), *command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["status"] == 200, report["stderr"]
    assert report["object"] == "list"
    assert report["exit_code"] == 0, report["stderr"]
    assert "server.listening" in report["stderr"]
