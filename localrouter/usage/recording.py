"""Each client request's record, from its start to the ledger.

The call path starts a record (`start`) when something reads it (the ledger, the caller's
limits, the tracer; else it makes only the request id, `new_id`), fills it as it goes (which
instance and key answered, the tokens the upstream reported, the first byte of a stream) and
finishes it when the answer has ended, however it ended (`finish`, synchronous, in a
`finally`). What remains is done off the request's path, in batches: the cost at the
answering model's prices, the metrics, and the ledger's write (which is batched again, in its
own thread)."""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from time import perf_counter
from typing import Protocol

import orjson
import structlog
from multidict import istr

from localrouter.lists.cache import Clock
from localrouter.lists.instance import Instance
from localrouter.usage.cost import configured_prices, priced, prices_for
from localrouter.usage.ledger import Ledger
from localrouter.usage.metrics import UsageMetrics
from localrouter.usage.record import CallRecord, Tokens, UsageSource
from localrouter.usage.tokens import estimated

log = structlog.get_logger(__name__)

# Sent with every proxied answer: the id `GET /api/v1/generation?id=` takes.
REQUEST_ID_HEADER: str = istr("x-localrouter-request-id")


class Reservation(Protocol):
    """What a call reserved before it was made (limits/gate.py's Ticket): released when its
    answer ends, settled once its usage is priced (when it `settles`: it reserved tokens or
    dollars)."""

    settles: bool

    def release(self) -> None: ...

    def settle(self, record: CallRecord) -> None: ...


class Trace(Protocol):
    """A request's span while it is answered (telemetry/): one child span per upstream
    attempt, whose context the attempt carries upstream (`traceparent`)."""

    def attempt(self, instance: Instance, upstream_id: str, url: str) -> Mapping[str, str]:
        """An attempt starts; the headers it sends upstream."""
        ...

    def attempt_ended(self, status: int | None, error: str | None) -> None: ...


class Keep(IntEnum):
    """Which bodies the request log keeps (request_log.bodies)."""

    OFF = 0
    ERRORS = 1
    ALL = 2


@dataclass(slots=True, eq=False)
class Call:
    """A request's record while it is answered, with what only the call path knows: the
    instance and upstream id that answered (to price it), when it started (for durations),
    and what an estimate would count from when no usage comes."""

    record: CallRecord
    started: float  # perf_counter
    recording: bool = True  # whether the ledger keeps it (else usage is not even read)
    instance: Instance | None = None
    upstream_id: str | None = None
    request_bytes: int = 0
    answer_events: int = 0  # events (stream) or answers (whole) that carried text
    first_byte: float | None = None
    reservation: Reservation | None = None
    trace: Trace | None = None
    # What the request log keeps of the bodies (`keep`): the request as it came and its
    # headers, a whole answer (or error) as the client got it, or a stream's upstream bytes
    # in `stream_format` (a UsageFormat's name), up to `stream_cap` bytes.
    keep: Keep = Keep.OFF
    request_body: bytes | None = None
    request_headers: dict[str, str] | None = None
    response_body: bytes | None = None
    stream: bytearray | None = None
    stream_format: str = ""
    stream_cap: int = 0
    stream_cut: bool = False

    def streamed(self, chunk: bytes | bytearray, wire: str) -> None:
        """Bytes of the upstream's stream, for the request log (kept up to `stream_cap`)."""
        kept = self.stream
        if kept is None:
            kept = self.stream = bytearray()
            self.stream_format = wire
        room = self.stream_cap - len(kept)
        if len(chunk) > room:
            self.stream_cut = True
            chunk = chunk[: max(room, 0)]
        kept += chunk

    def reserved(self, reservation: Reservation) -> None:
        """A limit's reservation, released when the answer ends and, when it settles, settled
        with this record (so usage is read from now on)."""
        self.reservation = reservation
        if reservation.settles:
            self.recording = True

    def answered_by(
        self, instance: Instance, upstream_id: str, key: int | None, attempts: int
    ) -> None:
        """The call that answered, or was tried last: its instance, model and key (None:
        the instance's one), after `attempts` upstream calls for the request."""
        record = self.record
        record.attempts = attempts
        record.model = f"{instance.name}/{upstream_id}"
        record.instance = instance.name
        record.provider_type = instance.settings.type
        record.key_position = key
        self.instance, self.upstream_id = instance, upstream_id

    def reported(self, tokens: Tokens | None) -> None:
        """The upstream's own counts (already in the ledger's convention)."""
        if tokens is not None:
            self.record.tokens = tokens
            self.record.usage_source = UsageSource.REPORTED

    def first_bytes(self) -> None:
        if self.first_byte is None:
            self.first_byte = perf_counter()


class RequestIds:
    """Ours, never the client's (a client's X-Request-Id could name another's record): a
    random prefix for this process and a count, unique without a system call a request."""

    __slots__ = ("_count", "prefix")

    def __init__(self) -> None:
        self.prefix = "gen-" + secrets.token_hex(6) + "-"
        self._count = itertools.count(1)

    def __call__(self) -> str:
        return f"{self.prefix}{next(self._count):x}"


@dataclass(slots=True)
class Recorder:
    """Starts, finishes and settles the records of the app's call routes."""

    ledger: Ledger
    clock: Clock
    metrics: UsageMetrics
    enabled: bool = True
    _finished: deque[Call] = field(default_factory=deque)
    _settling: asyncio.Lock = field(default_factory=asyncio.Lock)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    new_id: RequestIds = field(default_factory=RequestIds)
    # The request log's: which bodies to keep, how much of a stream, and what each settled
    # record is handed to (the request log, the tracer) before the ledger writes it.
    keep: Keep = Keep.OFF
    stream_cap: int = 0
    observers: list[Callable[[Call], None]] = field(default_factory=list)

    def start(
        self, request_id: str, route: str, model: str, client: str | None, request_bytes: int
    ) -> Call:
        """A call's record begins (`request_id`: from `new_id`, made for every request)."""
        record = CallRecord(
            id=request_id,
            started_at=self.clock(),
            route=route,
            client=client,
            requested_model=model,
        )
        call = Call(record, perf_counter(), self.enabled, request_bytes=request_bytes)
        if self.keep:
            call.keep, call.stream_cap = self.keep, self.stream_cap
        return call

    def finish(self, call: Call, status: int, *, error_type: str | None, cancelled: bool) -> None:
        """The answer has ended (O(1); settled later, off the request's path)."""
        record = call.record
        now = perf_counter()
        record.status, record.error_type, record.cancelled = status, error_type, cancelled
        record.duration_ms = round((now - call.started) * 1000.0, 3)
        if call.first_byte is not None and record.stream:
            record.ttft_ms = round((call.first_byte - call.started) * 1000.0, 3)
        if call.reservation is not None:
            call.reservation.release()
        if call.recording:
            self._finished.append(call)
            self._wake.set()

    async def run(self) -> None:
        """Settle what finished, in batches, until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.settle()

    async def settle(self) -> None:
        """Price, count and hand to the ledger every finished record. One settling at a time
        (a flush waits for the one under way); a record leaves the line only once handed on,
        so a settling cancelled at its one await (a listing's index being built) loses none."""
        finished = self._finished
        async with self._settling:
            while finished:
                call = finished[0]
                await self._price(call)
                finished.popleft()
                record = call.record
                if call.reservation is not None:
                    call.reservation.settle(record)
                for observer in self.observers:
                    try:
                        observer(call)
                    except Exception:  # one broken observer must not stop the ledger
                        log.exception("usage.observer_failed", observer=repr(observer))
                if self.enabled:
                    self.metrics.count(record)
                    self.ledger.add(record)

    async def _price(self, call: Call) -> None:
        record = call.record
        if record.usage_source is UsageSource.NONE and record.instance and record.status < 400:
            _estimate(call)
        instance, upstream_id = call.instance, call.upstream_id
        if instance is None or upstream_id is None:
            return
        prices = configured_prices(instance.settings, upstream_id)
        if prices is None:  # the config does not say: the listing's prices decide
            listed = (  # the listing the call used: no fetch for a record
                await instance.listed(upstream_id, 0.0)
                if instance.cache.current is not None
                else None
            )
            prices = prices_for(instance.settings, upstream_id, listed.pricing if listed else None)
        record.cost_usd, record.cost_source = priced(record.tokens, *prices)

    async def flush(self) -> None:
        """Settle and write everything now (for reads that must see the last requests)."""
        await self.settle()
        await self.ledger.flush()


def _estimate(call: Call) -> None:
    """Counts from what went by, when the upstream reported none (an interrupted stream, a
    server that never sends usage): the request's size, and an answer's events (a streamed
    event carries about one token)."""
    record = call.record
    record.tokens = Tokens(
        input_tokens=estimated(call.request_bytes),
        output_tokens=call.answer_events,
    )
    record.usage_source = UsageSource.ESTIMATED


MAX_ERROR_CHARS = 1000


def error_text(body: object) -> str | None:
    """The message of an error answer's body as the client got it (already redacted): the
    `error.message` of OpenAI's and Anthropic's shapes, Ollama's `error`, else the start of
    the text."""
    if not isinstance(body, (bytes, bytearray)) or not body:
        return None
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return bytes(body[:MAX_ERROR_CHARS]).decode("utf-8", "replace")
    error = parsed.get("error") if isinstance(parsed, dict) else None
    message = error.get("message") if isinstance(error, dict) else error
    if not isinstance(message, str):
        message = bytes(body[:MAX_ERROR_CHARS]).decode("utf-8", "replace")
    return message[:MAX_ERROR_CHARS]
