"""The tracer the call path and the recorder see (`telemetry:`). app.py builds one only when
telemetry.otlp_endpoint is set, so tracing off costs the request path nothing (`call.trace`
stays None); `build` imports the OpenTelemetry SDK (telemetry/otel.py, the optional extra
localrouter[otel]) only then.

A request's span starts with its call (`start`), continuing a client's W3C `traceparent`;
each upstream attempt starts a child span whose context goes upstream as `traceparent`. The
spans end once the record is settled (`settled`, a Recorder observer: priced, its tokens
known), with the times their answer and attempts actually ended, and are exported in
batches by the SDK's own thread."""

from __future__ import annotations

from abc import ABC, abstractmethod

from aiohttp import web

from localrouter.config.telemetry import TelemetrySettings
from localrouter.usage.recording import Call, Trace


class Tracing(ABC):
    """The app's tracer: `start` a request's trace, `settled` ends its spans once the record
    is priced, `close` flushes what is left (briefly: a collector that is down does not hold
    up the daemon's stop)."""

    @classmethod
    def build(cls, settings: TelemetrySettings, secrets: tuple[str, ...]) -> Tracing:
        """`secrets`: every configured secret (the telemetry headers' values among them),
        redacted from captured content and from what the tracer logs."""
        from localrouter.telemetry.otel import OtelTracing  # the optional extra

        return OtelTracing(settings, secrets)

    @abstractmethod
    def start(self, request: web.Request, call: Call) -> Trace:
        """The request's span starts (a child of the client's `traceparent`, if it sent one);
        the call is recorded from now on, so that its usage is read and it is settled."""

    @abstractmethod
    def settled(self, call: Call) -> None:
        """The record is priced: its spans get their attributes and end."""

    @abstractmethod
    async def flush(self) -> bool:
        """Export what has ended now (off the event loop); whether it was handed over."""

    @abstractmethod
    async def close(self) -> None:
        """Export what is left, waiting a few seconds at most, and stop exporting."""

    @property
    @abstractmethod
    def exported(self) -> int:
        """Spans the endpoint accepted."""

    @property
    @abstractmethod
    def failures(self) -> int:
        """Batches of spans the endpoint did not take (down, slow, refusing): dropped."""
