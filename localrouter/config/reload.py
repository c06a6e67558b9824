"""Live config: watch the file (its directory, so editors' rename-into-place is seen) and
SIGHUP; parse and validate completely, then apply the difference; a bad file changes nothing."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
import watchfiles

from localrouter.base.errors import ConfigError
from localrouter.base.log import SecretRedactor
from localrouter.config.live import LiveSettings
from localrouter.config.loading import parse_settings
from localrouter.config.settings import Settings

log = structlog.get_logger(__name__)

DEBOUNCE_MS = 200  # editors write in bursts; the acceptance bound is 2 s from save to effect


@dataclass
class ReloadState:
    """What /health and /metrics say about the config."""

    error: str | None = None
    restart_needed: list[str] = field(default_factory=list)
    reloads: int = 0
    failures: int = 0


class ConfigReloader:
    def __init__(
        self,
        live: LiveSettings,
        path: Path | None,
        *,
        env: Mapping[str, str] | None = None,
        redactor: SecretRedactor | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self._redactor = redactor
        self._overrides = overrides or {}  # server fields the command line set
        self._live = live
        self.path = path
        self._env = env
        self._started_with = live.current.server
        self._fleet_started_with = live.current.fleet
        self._usage_started_with = live.current.usage  # the ledger is opened at start
        self._lock = asyncio.Lock()
        self.state = ReloadState()

    async def reload(self) -> bool:
        """Load, validate and apply the file; False (and nothing changed) if it is not valid."""
        if self.path is None:
            return False
        async with self._lock:  # a burst of events and a SIGHUP never interleave
            try:
                text = await asyncio.to_thread(self.path.read_text, encoding="utf-8")
                settings = parse_settings(text, str(self.path), self._env or os.environ)
            except FileNotFoundError:
                return self._failed(f"{self.path}: the file is gone; keeping the running config")
            except OSError as exc:
                return self._failed(f"{self.path}: cannot read it ({exc.strerror})")
            except ConfigError as exc:
                return self._failed(str(exc))
            await self._apply(settings)
            return True

    async def _apply(self, settings: Settings) -> None:
        settings = settings.with_server(self._overrides)  # compared with what was bound
        previous, origin = self._live.current, str(self.path)
        self.state.error = None
        self.state.restart_needed = [
            f"server.{key} changed to {getattr(settings.server, key)!r}: restart to apply"
            for key in ("host", "port", "ollama_port")
            if getattr(settings.server, key) != getattr(self._started_with, key)
        ]
        if settings.fleet != self._fleet_started_with:
            self.state.restart_needed.append("fleet changed: restart to apply")
        if settings.usage != self._usage_started_with:
            self.state.restart_needed.append("usage changed: restart to apply")
        if settings == previous and origin == self._live.origin:
            return
        if self._redactor is not None:
            self._redactor.remember(settings.secret_values)
        await self._live.publish(settings, origin=origin)
        self.state.reloads += 1
        log.info(
            "config.reloaded",
            path=str(self.path),
            instances=[p.name for p in settings.enabled_providers],
            restart_needed=self.state.restart_needed or None,
        )

    def _failed(self, message: str) -> bool:
        self.state.error = message
        self.state.failures += 1
        log.warning("config.reload_failed", path=str(self.path), error=message)
        return False

    async def watch(self, stop: asyncio.Event) -> None:
        """Reload whenever the file is written, replaced or created, until `stop` is set. If
        its folder does not exist yet (a first run), wait for it to appear, then watch it."""
        if self.path is None:
            return
        folder = self.path.parent
        if not folder.is_dir():
            if not await _until_folder_exists(folder, stop):
                return
            if self.path.exists():  # written along with the folder, before we watched it
                await self.reload()
        name = self.path.name

        def ours(change: watchfiles.Change, path: str) -> bool:
            return os.path.basename(path) == name

        async for _ in watchfiles.awatch(
            folder,
            watch_filter=ours,
            debounce=DEBOUNCE_MS,
            step=50,
            stop_event=stop,
            recursive=False,
        ):
            await self.reload()


async def _until_folder_exists(folder: Path, stop: asyncio.Event) -> bool:
    """Watch the nearest existing ancestor until `folder` exists; False if stopped first."""
    while (ancestor := _nearest_existing(folder)) != folder:
        if ancestor is None:
            return False
        async for _ in watchfiles.awatch(
            ancestor, debounce=DEBOUNCE_MS, step=50, stop_event=stop, recursive=False
        ):
            if _nearest_existing(folder) != ancestor:
                break  # there, or a step nearer: watch from there
        if stop.is_set():
            return False
    return True


def _nearest_existing(folder: Path) -> Path | None:
    """`folder` if it is a directory, else its nearest ancestor that is (a stat or two)."""
    return next((p for p in (folder, *folder.parents) if p.is_dir()), None)
