"""The request log's live stream: each record, as it settles, to every reader of
`GET /api/requests/stream` that may see it. A reader has a bounded queue; one that does not
keep up (it stopped reading, or reads slower than requests end) is dropped, its connection
closed, never buffered without bound."""

from __future__ import annotations

import asyncio

import orjson
import structlog

from localrouter.base.jsonload import Json

log = structlog.get_logger(__name__)

MAX_QUEUED = 256  # records waiting for one reader
END = b""  # queued for a dropped reader: its handler ends


class Reader:
    __slots__ = ("client", "dropped", "queue", "transport")

    def __init__(self, client: str | None, transport: asyncio.Transport | None) -> None:
        self.client = client  # None: the admin, who sees every record
        self.transport = transport
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(MAX_QUEUED)
        self.dropped = False


class Hub:
    def __init__(self) -> None:
        self.readers: set[Reader] = set()
        self.dropped = 0  # readers dropped for not keeping up

    def open(self, client: str | None, transport: asyncio.Transport | None) -> Reader:
        reader = Reader(client, transport)
        self.readers.add(reader)
        return reader

    def close(self, reader: Reader) -> None:
        self.readers.discard(reader)

    def publish(self, record: Json) -> None:
        if not self.readers:
            return
        event = b"data: " + orjson.dumps(record) + b"\n\n"
        owner = record.get("client")
        for reader in list(self.readers):
            if reader.client is not None and reader.client != owner:
                continue
            try:
                reader.queue.put_nowait(event)
            except asyncio.QueueFull:
                self._drop(reader)

    def _drop(self, reader: Reader) -> None:
        """A reader that fell MAX_QUEUED records behind: its queue let go, its connection
        closed (what the socket still held is discarded), its handler told to end."""
        self.readers.discard(reader)
        self.dropped += 1
        reader.dropped = True
        while not reader.queue.empty():
            reader.queue.get_nowait()
        reader.queue.put_nowait(END)
        if reader.transport is not None:
            reader.transport.abort()
        log.warning("reqlog.reader_dropped", client=reader.client, behind=MAX_QUEUED)
