"""Tracing with the OpenTelemetry SDK (the optional extra localrouter[otel]), imported by
Tracing.build only.

The SDK's own TracerProvider (never the global one) hands ended spans to a BatchSpanProcessor:
a bounded queue (spans past it are dropped, so memory stays bounded) that the SDK's worker
thread exports over OTLP/HTTP, off the event loop. A collector that is down or slow changes
no answer and delays none: its failures are counted and logged at most once a minute, with
their cause as the exporter's HTTP session saw it; the SDK's own log lines about them (one per
failed batch, on stderr) are kept back."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from time import monotonic, perf_counter, time_ns
from typing import Any

import requests
import structlog
from aiohttp import web
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from yarl import URL

from localrouter import __version__
from localrouter.base.secrets import display_url, shorten
from localrouter.config.telemetry import TelemetrySettings
from localrouter.lists.instance import Instance
from localrouter.telemetry.genai import (
    Attributes,
    captured_input,
    captured_output,
    error_type,
    operation_of,
    provider_name,
    settled_attributes,
    span_name,
)
from localrouter.telemetry.tracing import Tracing
from localrouter.usage.recording import Call

log = structlog.get_logger(__name__)

TRACES_PATH = "/v1/traces"
QUEUE_SPANS = 2048  # ended spans waiting for export, at most (a span is ~2 KiB)
CONTENT_QUEUE_SPANS = 512  # with capture_content (a request span holds up to ~32 KiB more)
BATCH_SPANS = 512
SCHEDULE_MILLIS = 2000  # how often the worker exports what has ended
CLOSE_SECONDS = 3.0  # how long a stop waits for the last export
WARN_EVERY_SECONDS = 60.0
# The SDK's loggers whose records are kept back (the exporter's failures, a full queue).
SDK_LOGGERS = ("opentelemetry.exporter", "opentelemetry.sdk._shared_internal")
# The batch processor's logger warns of a full queue once for every span it drops, on the
# thread that ends the span: the event loop's, a log record per span (tens of microseconds a
# request) while a collector is down or slow. Only its errors are kept. When exports fail,
# their own warning (once a minute) says spans are lost; spans dropped while a collector
# keeps up with exports but not with the traffic go uncounted (as they did before).
QUEUE_LOGGER = "opentelemetry.sdk._shared_internal"
_TRACEPARENT = "traceparent"
_TRACESTATE = "tracestate"
_PROPAGATOR = TraceContextTextMapPropagator()
_ROOT = Context()  # a request without a traceparent starts a trace, whatever context is current


def traces_url(endpoint: str) -> str:
    """Where spans are POSTed: {endpoint}/v1/traces, unless the endpoint already ends so."""
    url = URL(endpoint)
    path = url.path.rstrip("/")
    if not path.endswith(TRACES_PATH):
        path += TRACES_PATH
    return str(url.with_path(path, keep_query=True))


class SdkLogs(logging.Handler):
    """The SDK's log records, kept back (not propagated to the root logger, not printed): the
    last two warnings or errors (the cause, e.g. a refused connection, then the give-up) are
    the reason the next rate-limited warning gives."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.last: deque[str] = deque(maxlen=2)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.last.append(record.getMessage())
        except Exception:  # a record that cannot be formatted: its template
            self.last.append(str(record.msg))

    def install(self) -> None:
        for name in SDK_LOGGERS:
            logger = logging.getLogger(name)
            if self not in logger.handlers:
                logger.addHandler(self)
            logger.propagate = False
        logging.getLogger(QUEUE_LOGGER).setLevel(logging.ERROR)

    def take(self) -> str | None:
        said = "; ".join(self.last)
        self.last.clear()
        return said or None


SDK_LOGS = SdkLogs()


class WatchedSession(requests.Session):
    """The exporter's HTTP session (the SDK's public seam for it), keeping what went wrong
    with the last export: the SDK's exporter only says that it failed."""

    def __init__(self) -> None:
        super().__init__()
        self.problem: str | None = None

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        try:
            response = super().request(*args, **kwargs)
        except Exception as error:
            self.problem = f"{type(error).__name__}: {error}"
            raise
        self.problem = (
            f"HTTP {response.status_code} {response.reason}"
            if response.status_code >= 400
            else None
        )
        return response

    def take(self) -> str | None:
        problem, self.problem = self.problem, None
        return problem


class CountingExporter(SpanExporter):
    """The OTLP exporter, counting what it exported and what failed, and saying so in a warning
    at most once a minute (with the endpoint without credentials, never the headers). Called
    by the SDK's worker thread (and a flush's), one export at a time."""

    def __init__(
        self,
        inner: SpanExporter,
        endpoint: str,
        secrets: tuple[str, ...],
        session: WatchedSession | None = None,
    ) -> None:
        self._inner, self._session = inner, session
        self._shown = display_url(endpoint)
        # The SDK's messages may hold the endpoint's URL: its password and query values too.
        url = URL(endpoint)
        hidden = (url.password, *url.query.values())
        self._secrets = (*secrets, *(value for value in hidden if value))
        self.exported = 0  # spans
        self.failures = 0  # batches
        self.lost = 0  # spans of the failed batches
        self._unreported = 0
        self._warned_at: float | None = None
        self._lock = threading.Lock()
        # Set by close: past it, what is left is dropped at once (a stop waits no longer).
        self.deadline: float | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.deadline is not None and monotonic() > self.deadline:
            result = SpanExportResult.FAILURE
        else:
            try:
                result = self._inner.export(spans)
            except Exception:  # the SDK's exporter should not raise; if it does, a failure
                result = SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            self.exported += len(spans)
        else:
            self._failed(len(spans))
        return result

    def _failed(self, spans: int) -> None:
        with self._lock:
            self.failures += 1
            self.lost += spans
            self._unreported += 1
            now = monotonic()
            if self._warned_at is not None and now - self._warned_at < WARN_EVERY_SECONDS:
                return
            self._warned_at, batches, self._unreported = now, self._unreported, 0
        problem = self._session.take() if self._session is not None else None
        said = SDK_LOGS.take()
        reason = problem or said
        log.warning(
            "telemetry.export_failed",
            endpoint=self._shown,
            failed_batches=batches,
            failed_batches_total=self.failures,
            spans_lost_total=self.lost,
            reason=shorten(reason, 300, self._secrets) if reason else None,
        )

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class Attempt:
    """One upstream attempt's span, and how it ended (set when it ended, used when settled)."""

    __slots__ = ("ended_ns", "error", "span", "status")

    def __init__(self, span: Span) -> None:
        self.span = span
        self.status: int | None = None
        self.error: str | None = None
        self.ended_ns: int | None = None


class RequestTrace:
    """A client request's span and its attempts' (usage/recording.py's Trace)."""

    __slots__ = ("attempts", "context", "ended", "operation", "span", "started_ns", "tracing")

    def __init__(self, tracing: OtelTracing, span: Span, started_ns: int, operation: str) -> None:
        self.tracing, self.span, self.started_ns = tracing, span, started_ns
        self.operation = operation
        self.context: Context | None = None  # the attempts' parent, made at the first one
        self.attempts: list[Attempt] = []
        self.ended = False

    def attempt(self, instance: Instance, upstream_id: str, url: str) -> Mapping[str, str]:
        """The attempt's span starts; its context goes upstream (`traceparent`, `tracestate`)."""
        tracing = self.tracing
        if self.context is None:
            self.context = trace.set_span_in_context(self.span)
        address, port, path = tracing.upstream(url)
        operation = operation_of(path, self.operation)
        attributes: Attributes = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": provider_name(instance.settings.type),
            "gen_ai.request.model": upstream_id,
            "localrouter.instance": instance.name,
        }
        if address:
            attributes["server.address"] = address
        if port is not None:
            attributes["server.port"] = port
        span = tracing.tracer.start_span(
            span_name(operation, upstream_id),
            context=self.context,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=time_ns(),
        )
        self.attempts.append(Attempt(span))
        context = span.get_span_context()
        if not context.is_valid:
            return {}
        headers = {
            _TRACEPARENT: f"00-{context.trace_id:032x}-{context.span_id:016x}-"
            f"{int(context.trace_flags):02x}"
        }
        if context.trace_state:
            headers[_TRACESTATE] = context.trace_state.to_header()
        return headers

    def attempt_ended(self, status: int | None, error: str | None) -> None:
        if self.attempts:
            attempt = self.attempts[-1]
            attempt.status, attempt.error, attempt.ended_ns = status, error, time_ns()

    def end(self, call: Call, capture: bool, secrets: tuple[str, ...]) -> None:
        """The record is settled: every span gets its attributes and ends when it ended."""
        if self.ended:
            return
        self.ended = True
        record = call.record
        status = record.status
        ended_ns = max(self.started_ns + round(record.duration_ms * 1_000_000), self.started_ns)
        last = len(self.attempts) - 1
        for position, attempt in enumerate(self.attempts):
            span = attempt.span
            attributes: Attributes = {}
            if attempt.status is not None:
                attributes["http.response.status_code"] = attempt.status
            failed = error_type(attempt.status, attempt.error)
            if failed is not None:
                attributes["error.type"] = failed
                span.set_status(Status(StatusCode.ERROR, failed))
            elif position == last and 0 < status < 400 and call.upstream_id is not None:
                attributes["gen_ai.response.model"] = call.upstream_id
            span.set_attributes(attributes)
            span.end(end_time=attempt.ended_ns if attempt.ended_ns is not None else ended_ns)
        attributes = settled_attributes(record)
        if capture:
            attributes.update(_content(call, secrets))
        span = self.span
        span.set_attributes(attributes)
        if status >= 500:  # an HTTP server's span fails on 5xx only; error.type says the rest
            span.set_status(Status(StatusCode.ERROR, str(attributes.get("error.type", status))))
        span.end(end_time=ended_ns)


def _content(call: Call, secrets: tuple[str, ...]) -> Attributes:
    """The prompt and the answer, when the call kept its bodies (the request log's)."""
    if call.instance is not None:
        secrets = (*secrets, *call.instance.http.secrets)
    content: Attributes = {}
    if (prompt := captured_input(call.request_body, secrets)) is not None:
        content["gen_ai.input.messages"] = prompt
    record = call.record
    answered = 0 < record.status < 400 and operation_of(record.route) != "embeddings"
    if answered and (answer := captured_output(call.response_body, secrets)) is not None:
        content["gen_ai.output.messages"] = answer
    return content


class OtelTracing(Tracing):
    """Tracing (telemetry/tracing.py) with the SDK's TracerProvider, batch processor and OTLP
    over HTTP exporter."""

    def __init__(self, settings: TelemetrySettings, secrets: tuple[str, ...]) -> None:
        assert settings.otlp_endpoint is not None
        SDK_LOGS.install()
        self.endpoint = traces_url(settings.otlp_endpoint)
        self._secrets = secrets
        self._capture = settings.capture_content
        session = WatchedSession()
        exporter = OTLPSpanExporter(
            endpoint=self.endpoint,
            headers={name: value.get_secret_value() for name, value in settings.headers.items()},
            timeout=settings.timeout_seconds,
            session=session,
        )
        self._exporter = CountingExporter(exporter, self.endpoint, secrets, session)
        resource = Resource.create(
            {"service.name": settings.service_name, "service.version": __version__}
        )
        self._provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        self._provider.add_span_processor(
            BatchSpanProcessor(
                self._exporter,
                max_queue_size=CONTENT_QUEUE_SPANS if self._capture else QUEUE_SPANS,
                schedule_delay_millis=SCHEDULE_MILLIS,
                max_export_batch_size=BATCH_SPANS,
            )
        )
        self.tracer = self._provider.get_tracer("localrouter", __version__)
        # Each upstream URL's server.address, server.port and path, parsed once.
        self._upstreams: dict[str, tuple[str | None, int | None, str]] = {}
        self._closed = False

    def upstream(self, url: str) -> tuple[str | None, int | None, str]:
        known = self._upstreams.get(url)
        if known is None:
            parsed = URL(url)
            known = (parsed.host, parsed.port, parsed.path)
            if len(self._upstreams) >= 256:  # bounded: URLs come from the config
                self._upstreams.clear()
            self._upstreams[url] = known
        return known

    def start(self, request: web.Request, call: Call) -> RequestTrace:
        call.recording = True  # its usage is read and it is settled, ledger or not
        record = call.record
        operation = operation_of(record.route)
        model = record.requested_model
        parent = _ROOT
        headers = request.headers
        if (traceparent := headers.get(_TRACEPARENT)) is not None:
            carrier = {_TRACEPARENT: traceparent}
            if (tracestate := headers.get(_TRACESTATE)) is not None:
                carrier[_TRACESTATE] = tracestate
            parent = _PROPAGATOR.extract(carrier, context=_ROOT)
        attributes: Attributes = {"gen_ai.operation.name": operation}
        if model:
            attributes["gen_ai.request.model"] = model
        started_ns = time_ns() - round((perf_counter() - call.started) * 1e9)
        span = self.tracer.start_span(
            span_name(operation, model),
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
            start_time=started_ns,
        )
        return RequestTrace(self, span, started_ns, operation)

    def settled(self, call: Call) -> None:
        traced = call.trace
        if isinstance(traced, RequestTrace) and traced.tracing is self:
            traced.end(call, self._capture, self._secrets)

    async def flush(self) -> bool:
        if self._closed:
            return False
        return await asyncio.to_thread(self._provider.force_flush)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._exporter.deadline = monotonic() + CLOSE_SECONDS
        # Its own thread, joined for a while only: the SDK's shutdown waits for its worker
        # (at most one export in flight, up to telemetry.timeout_seconds); a daemon thread
        # left behind does not hold up the process's exit.
        stopping = threading.Thread(
            target=self._provider.shutdown, name="localrouter-tracing-stop", daemon=True
        )
        stopping.start()
        await asyncio.to_thread(stopping.join, CLOSE_SECONDS + 1.0)
        if stopping.is_alive():
            log.warning("telemetry.stop_timed_out", endpoint=display_url(self.endpoint))

    @property
    def exported(self) -> int:
        return self._exporter.exported

    @property
    def failures(self) -> int:
        return self._exporter.failures
