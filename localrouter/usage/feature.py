"""The usage feature as app.py builds it: the ledger (at `usage.path`, else the state
directory's usage.sqlite3; off with `usage.enabled: false` or no place to keep it), the
recorder the call path fills, their metrics, and the routes that read them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

from localrouter.config.settings import Settings
from localrouter.lists.cache import Clock
from localrouter.lists.fleet import Fleet
from localrouter.usage.api import UsageEndpoints
from localrouter.usage.fleet import FleetUsage
from localrouter.usage.ledger import Ledger
from localrouter.usage.metrics import UsageMetrics
from localrouter.usage.recording import Recorder

LEDGER_FILE = "usage.sqlite3"
# Admin only once clients exist: every client's usage.
ADMIN_PATHS = frozenset({"/api/usage"})


def ledger_path(settings: Settings, state_dir: Path | None) -> Path | None:
    usage = settings.usage
    if not usage.enabled:
        return None
    if usage.path is not None:
        return Path(usage.path).expanduser()
    return state_dir / LEDGER_FILE if state_dir is not None else None


@dataclass(frozen=True, slots=True)
class Usage:
    ledger: Ledger
    recorder: Recorder
    metrics: UsageMetrics
    endpoints: UsageEndpoints

    @classmethod
    def build(
        cls, settings: Settings, clock: Clock, state_dir: Path | None, fleet: Fleet | None
    ) -> Usage:
        """With a fleet, each write's daily totals go to Redis too (usage/fleet.py)."""
        path = ledger_path(settings, state_dir)
        shared = FleetUsage(fleet, clock) if fleet is not None else None
        ledger = Ledger(
            path,
            clock=clock,
            retention_days=settings.usage.retention_days,
            on_rollup=shared.add if shared is not None else None,
        )
        metrics = UsageMetrics()
        recorder = Recorder(ledger, clock, metrics, enabled=path is not None)
        totals = shared.totals if shared is not None else None
        return cls(ledger, recorder, metrics, UsageEndpoints(ledger, clock, totals))

    def routes(self, openrouter_base: str) -> list[tuple[str, str, Handler]]:
        endpoints = self.endpoints
        return [
            ("GET", "/api/usage", endpoints.usage),
            ("GET", f"{openrouter_base}/generation", endpoints.generation),
            ("GET", f"{openrouter_base}/key", endpoints.key),
        ]

    async def running(self, _: web.Application) -> AsyncIterator[None]:
        """The ledger open and the recorder settling, while the app runs; at the end what
        is pending is settled and written."""
        await self.ledger.start()
        settling = asyncio.create_task(self.recorder.run())
        yield
        settling.cancel()
        await asyncio.gather(settling, return_exceptions=True)
        await self.recorder.settle()
        await self.ledger.close()
