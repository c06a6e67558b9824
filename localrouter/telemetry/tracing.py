"""(being written)"""

from __future__ import annotations

from aiohttp import web

from localrouter.config.telemetry import TelemetrySettings
from localrouter.usage.recording import Call, Trace


class Tracing:
    """The app's tracer: `start` a request's trace, `settled` ends its spans once the record
    is priced, `close` flushes what is left."""

    @classmethod
    def build(cls, settings: TelemetrySettings, secrets: tuple[str, ...]) -> Tracing:
        raise NotImplementedError

    def start(self, request: web.Request, call: Call) -> Trace:
        raise NotImplementedError

    def settled(self, call: Call) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError
