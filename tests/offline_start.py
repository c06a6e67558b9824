"""Run inside a network namespace with only loopback: start the daemon with no config file and
report how long until GET /v1/models answers. Prints one JSON line; used by test_serve.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    command = sys.argv[1:]
    port = free_port()
    home = tempfile.mkdtemp()
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_TOKEN"))}
    env.update(HOME=home, XDG_CONFIG_HOME=f"{home}/config", XDG_CACHE_HOME=f"{home}/cache")
    env.pop("LOCALROUTER_CONFIG", None)
    started = time.monotonic()
    daemon = subprocess.Popen(
        [*command, "serve", "--port", str(port)], env=env, stderr=subprocess.PIPE
    )
    status, body, elapsed = 0, b"", 0.0
    while time.monotonic() - started < 10:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as reply:
                status, body = reply.status, reply.read()
                elapsed = time.monotonic() - started
                break
        except OSError:
            time.sleep(0.01)
    daemon.send_signal(signal.SIGTERM)
    try:
        _, stderr = daemon.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        daemon.kill()
        _, stderr = daemon.communicate()
    models = json.loads(body) if status == 200 else None
    print(
        json.dumps(
            {
                "status": status,
                "elapsed": elapsed,
                "object": models and models["object"],
                "exit_code": daemon.returncode,
                "stderr": stderr.decode(errors="replace")[-4000:],
            }
        )
    )


if __name__ == "__main__":
    main()
