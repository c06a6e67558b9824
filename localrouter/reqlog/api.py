"""The request log over HTTP: `GET /api/requests` (newest first, cursor-paged, narrowed by
time, client, model, instance, status and route), `GET /api/requests/{id}` (a record with
its bodies, when kept) and `GET /api/requests/stream` (each record as it settles, as
server-sent events, with a heartbeat). A client's token sees its own requests only."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from typing import Any

import orjson
from aiohttp import hdrs, web

from localrouter.base.errors import BadRequest, NotFound
from localrouter.http.bodies import JSON
from localrouter.http.guard import CLIENT, add_cors
from localrouter.lists.cache import Clock
from localrouter.reqlog.capture import shown_body
from localrouter.reqlog.hub import END, Hub
from localrouter.usage.api import moment
from localrouter.usage.ledger import Ledger
from localrouter.usage.schema import PAGE_FILTERS

DEFAULT_LIMIT, MAX_LIMIT = 50, 500
HEARTBEAT_SECONDS = 15.0


def cursor_of(row: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([row["started_at"], row["id"]])).decode()


def _cursor(raw: str | None) -> tuple[float, str] | None:
    if not raw:
        return None
    try:
        started, request_id = orjson.loads(base64.urlsafe_b64decode(raw.encode()))
        return float(started), str(request_id)
    except (ValueError, TypeError):
        raise BadRequest(
            "cursor: not one this daemon gave (use next_cursor as it came)", param="cursor"
        ) from None


class RequestLogEndpoints:
    def __init__(self, ledger: Ledger, hub: Hub, clock: Clock) -> None:
        self._ledger, self._hub, self._clock = ledger, hub, clock

    async def requests(self, request: web.Request) -> web.Response:
        query = request.query
        filters: dict[str, object] = {}
        for name in PAGE_FILTERS:
            if (value := query.get(name)) is not None and value != "":
                filters[name] = value
        failed = filters.get("status") == "failed"
        if failed:
            del filters["status"]
        elif "status" in filters:
            status = str(filters["status"])
            if not status.isdigit():
                raise BadRequest(
                    f"status: a number or 'failed', got {status[:20]!r}", param="status"
                )
            filters["status"] = int(status)
        if (client := request[CLIENT]) is not None:
            filters["client"] = client.name  # a client sees its own requests only
        since = moment(query.get("since"), self._clock(), "since")
        limit = _limit(query.get("limit"))
        rows = await self._ledger.page(_cursor(query.get("cursor")), since, filters, failed, limit)
        shown = {
            "data": rows,
            "next_cursor": cursor_of(rows[-1]) if len(rows) == limit else None,
            "recording": self._ledger.enabled,  # false: usage.enabled is off, nothing is kept
        }
        return web.Response(body=orjson.dumps(shown), content_type=JSON)

    async def one(self, request: web.Request) -> web.Response:
        wanted = request.match_info["request_id"]
        row = await self._ledger.generation(wanted)
        client = request[CLIENT]
        if row is None or (client is not None and row.get("client") != client.name):
            raise NotFound(
                f"No request {wanted[:100]!r}: not recorded (yet: records are written within "
                "a second of the answer's end), past retention, or another caller's."
            )
        stored = await self._ledger.bodies(wanted)
        row["bodies"] = (
            {
                "request": shown_body(stored["request"]),
                "request_truncated": bool(stored["request_truncated"]),
                "headers": shown_body(stored["headers"]),
                "response": shown_body(stored["response"]),
                "response_truncated": bool(stored["response_truncated"]),
                "response_kind": stored["response_kind"],
            }
            if stored is not None
            else None
        )
        return web.Response(body=orjson.dumps({"data": row}), content_type=JSON)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        client = request[CLIENT]
        response = web.StreamResponse(
            headers={hdrs.CONTENT_TYPE: "text/event-stream", hdrs.CACHE_CONTROL: "no-cache"}
        )
        add_cors(request, response)
        await response.prepare(request)
        reader = self._hub.open(client.name if client is not None else None, request.transport)
        try:
            await response.write(b": localrouter request log\n\n")
            while True:
                try:
                    async with asyncio.timeout(HEARTBEAT_SECONDS):
                        event = await reader.queue.get()
                except TimeoutError:
                    event = b": heartbeat\n\n"
                if event == END:
                    break
                await response.write(event)
        except ConnectionResetError:
            pass  # the reader left, or was dropped
        finally:
            self._hub.close(reader)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response


def _limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 0 < int(raw) <= MAX_LIMIT:
        raise BadRequest(f"limit: a number from 1 to {MAX_LIMIT}, got {raw[:20]!r}", param="limit")
    return int(raw)
