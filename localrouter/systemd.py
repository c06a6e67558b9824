"""systemd integration: the sd_notify protocol (spoken only when NOTIFY_SOCKET is set) and the
user unit that `localrouter service install` writes."""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import socket
import sys
from collections.abc import Mapping
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

UNIT_NAME = "localrouter.service"


class Notifier:
    """READY=1, STATUS=..., WATCHDOG=1, STOPPING=1 to systemd; silent without NOTIFY_SOCKET."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        environment = os.environ if env is None else env
        address = environment.get("NOTIFY_SOCKET", "")
        # An abstract socket is written with a leading "@"; the kernel wants a NUL byte.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._watchdog_seconds = _watchdog_interval(environment)

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def send(self, *lines: str) -> None:
        if not self._address:
            return
        message = "\n".join(lines).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message, self._address)
        except OSError as exc:
            log.warning("systemd.notify_failed", error=exc.strerror)

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=Stopping")

    async def keep_watchdog_fed(self) -> None:
        """WATCHDOG=1 at half the interval systemd asked for, until cancelled."""
        if not self._address or self._watchdog_seconds is None:
            return
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(self._watchdog_seconds / 2)


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    if env.get("WATCHDOG_PID") and env["WATCHDOG_PID"] != str(os.getpid()):
        return None  # the watchdog is meant for another process
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 1_000_000 if usec > 0 else None


def exec_start() -> str:
    """The command that starts the installed daemon: the console script beside this Python."""
    script = Path(sys.executable).with_name("localrouter")
    if script.exists():
        return shlex.quote(str(script)) + " serve"
    found = shutil.which("localrouter")
    if found:
        return shlex.quote(found) + " serve"
    return f"{shlex.quote(sys.executable)} -m localrouter serve"


# The unit's PrivateTmp=yes gives the service an empty /tmp (and /var/tmp) of its own.
PRIVATE_TMP = (Path("/tmp"), Path("/var/tmp"))


def private_tmp_warning(prefix: str) -> str | None:
    """A warning when the installation (`prefix`: sys.prefix, a venv's root) sits where the
    service cannot see it."""
    where = Path(prefix)
    if not any(where == tmp or tmp in where.parents for tmp in PRIVATE_TMP):
        return None
    return (
        f"warning: localrouter is installed under {where}, and the unit's PrivateTmp=yes gives "
        "the service its own empty /tmp: it will not start from there. Install it elsewhere "
        "(a virtualenv in your home, or pipx), then run `localrouter service install` again."
    )


def render_unit(command: str) -> str:
    template = (Path(__file__).parent / "localrouter.service.in").read_text(encoding="utf-8")
    return template.replace("@EXEC_START@", command)


def install_unit(config_home: Path) -> tuple[Path, str]:
    """Write the user unit; return its path and the commands that enable it."""
    target = config_home / "systemd" / "user" / UNIT_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_unit(exec_start()), encoding="utf-8")
    commands = "\n".join(
        [
            "systemctl --user daemon-reload",
            f"systemctl --user enable --now {UNIT_NAME}",
            f"systemctl --user status {UNIT_NAME}",
            "journalctl --user -u localrouter -f      # its log",
            "loginctl enable-linger $USER               # optional: run without a login session",
        ]
    )
    return target, commands
