"""What the request log keeps of a call's bodies, and how: redacted before anything is cut,
cut at `request_log.max_body_bytes` (and marked), compressed. Made into its row in the usage
ledger's worker thread, off the event loop (usage/record.py's Bodies)."""

from __future__ import annotations

import zlib

import orjson

from localrouter.base.secrets import redact_bytes
from localrouter.reqlog.assemble import assemble
from localrouter.usage.recording import Call, Keep

WHOLE = "body"  # a response kept as the client got it; a stream is "stream:<its wire format>"
STREAM = "stream"
_LEVEL = 6
# A body this short is kept as it is: setting up a compressor costs more than it saves (most
# requests and answers of a chat are a few hundred bytes). The first byte says which it is.
COMPRESS_FROM = 1024
_RAW, _DEFLATED = b"r", b"z"


class Captured:
    """A call's request, headers and answer (a whole body, or a stream's upstream bytes in
    `stream_format`), with the secrets to take out of them and the cap."""

    __slots__ = (
        "cap",
        "headers",
        "request",
        "response",
        "secrets",
        "stream_cut",
        "streamed",
        "wire",
    )

    def __init__(self, call: Call, secrets: tuple[str, ...], cap: int) -> None:
        self.request = call.request_body
        self.headers = call.request_headers
        self.wire = call.stream_format if call.stream is not None else ""
        self.response: bytes | bytearray | None = (
            call.stream if call.stream is not None else call.response_body
        )
        self.stream_cut = call.stream_cut
        self.streamed = call.record.stream  # a stream cut off before its first byte kept none
        self.secrets, self.cap = secrets, cap

    def row(self) -> tuple[object, ...]:
        """(request, request_truncated, headers, response, response_truncated, kind)."""
        request, request_cut = self._kept(self.request)
        headers = None
        if self.headers is not None:
            headers, _ = self._kept(orjson.dumps(self.headers))
        answer: bytes | bytearray | None = self.response
        kind = STREAM if self.streamed else WHOLE
        if answer is not None and self.wire:
            answer = orjson.dumps(assemble(self.wire, bytes(answer)))
            kind = f"{STREAM}:{self.wire}"
        response, response_cut = self._kept(answer)
        return (
            request,
            int(request_cut),
            headers,
            response,
            int(response_cut or self.stream_cut),
            kind,
        )

    def _kept(self, data: bytes | bytearray | None) -> tuple[bytes | None, bool]:
        if data is None:
            return None, False
        clean = redact_bytes(data, self.secrets)  # redacted first: a cut could split a secret
        cut = len(clean) > self.cap
        kept = bytes(clean[: self.cap])
        if len(kept) < COMPRESS_FROM:
            return _RAW + kept, cut
        return _DEFLATED + zlib.compress(kept, _LEVEL), cut


def kept_bodies(call: Call) -> bool:
    """Whether the request log keeps this call's bodies (`errors`: only a failed call's)."""
    if call.keep is Keep.ALL:
        return True
    record = call.record
    return call.keep is Keep.ERRORS and (record.cancelled or not 200 <= record.status < 400)


def opened(stored: bytes) -> bytes:
    """A stored body's bytes (kept as they are, or deflated)."""
    return zlib.decompress(stored[1:]) if stored[:1] == _DEFLATED else stored[1:]


def shown_body(stored: object) -> object:
    """A stored body as the API shows it: its JSON when it is JSON, else its text."""
    if not isinstance(stored, bytes):
        return None
    raw = opened(stored)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")
