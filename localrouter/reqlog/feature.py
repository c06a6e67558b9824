"""The request log as app.py builds it, on the usage ledger and its recorder: each settled
call's bodies kept as `request_log:` says (in the ledger's file, apart), each record published
to the live stream's readers, and the routes that read them."""

from __future__ import annotations

from aiohttp.typedefs import Handler

from localrouter.config.live import LiveSettings
from localrouter.config.settings import Settings
from localrouter.lists.cache import Clock
from localrouter.reqlog.api import RequestLogEndpoints
from localrouter.reqlog.capture import Captured, kept_bodies
from localrouter.reqlog.hub import Hub
from localrouter.usage.ledger import Ledger
from localrouter.usage.recording import Call, Keep, Recorder
from localrouter.usage.schema import request_of, row_of

# A stream's bytes kept to assemble its answer from, per max_body_bytes of answer: events
# carry a few characters of text in a hundred bytes of JSON.
STREAM_BYTES_PER_BODY_BYTE = 4


class RequestLog:
    def __init__(self, live: LiveSettings, recorder: Recorder, ledger: Ledger, clock: Clock):
        self._recorder, self._ledger = recorder, ledger
        self.hub = Hub()
        self.endpoints = RequestLogEndpoints(ledger, self.hub, clock)
        self._secrets: tuple[str, ...] = ()
        self._cap = 0
        self._enabled = True
        self.apply(live.current)
        live.subscribe(self.apply)
        recorder.observers.append(self.settled)

    def apply(self, settings: Settings) -> None:
        """A config (re)loaded: which bodies are kept from the next request, how long."""
        logged = settings.request_log
        self._enabled = logged.enabled and self._recorder.enabled
        self._secrets = settings.secret_values
        self._cap = logged.max_body_bytes
        self._recorder.keep = Keep[logged.bodies.upper()] if self._enabled else Keep.OFF
        self._recorder.stream_cap = logged.max_body_bytes * STREAM_BYTES_PER_BODY_BYTE
        self._ledger.body_retention_seconds = logged.body_retention_days * 86400.0

    def settled(self, call: Call) -> None:
        """A call's record is priced (the recorder's observer): its bodies to keep, and the
        record for the live stream's readers."""
        if not self._enabled:
            return
        record = call.record
        if call.keep and kept_bodies(call):
            record.bodies = Captured(call, self._secrets, self._cap)
        if self.hub.readers:
            self.hub.publish(request_of(row_of(record)))

    def routes(self) -> list[tuple[str, str, Handler]]:
        endpoints = self.endpoints
        return [
            ("GET", "/api/requests", endpoints.requests),
            ("GET", "/api/requests/stream", endpoints.stream),
            ("GET", "/api/requests/{request_id}", endpoints.one),
        ]
