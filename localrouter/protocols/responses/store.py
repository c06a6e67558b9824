"""Responses kept for `previous_response_id` and `GET`/`DELETE /v1/responses/{id}`: in memory,
bounded by count and bytes, oldest out first. Each is kept under the caller that made it (the
client the guard found, however it sent its token; see `caller_of`) and is invisible to any
other caller."""

from __future__ import annotations

import functools
import hashlib
from collections import OrderedDict
from typing import NamedTuple

from aiohttp import web

from localrouter.base.jsonload import Json
from localrouter.config.server import ServerSettings
from localrouter.http.guard import CLIENT

MAX_RESPONSES = 1000
MAX_BYTES = 64 * 1024 * 1024


class Stored(NamedTuple):  # made on every translated response: a tuple is cheapest
    caller: str
    items: list[Json]  # the conversation up to and including this response's output
    body: bytes  # the Response object as it was served
    size: int


class ResponseStore:
    def __init__(self, max_responses: int = MAX_RESPONSES, max_bytes: int = MAX_BYTES) -> None:
        self._max_responses = max_responses
        self._max_bytes = max_bytes
        self._kept: OrderedDict[str, Stored] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._kept)

    def put(self, response_id: str, caller: str, items: list[Json], body: bytes, size: int) -> None:
        """Keep a response; `size` is what its items and body weigh (serialised)."""
        if size > self._max_bytes:
            return
        self.delete(response_id, caller)
        self._kept[response_id] = Stored(caller, items, body, size)
        self._bytes += size
        while len(self._kept) > self._max_responses or self._bytes > self._max_bytes:
            _, oldest = self._kept.popitem(last=False)
            self._bytes -= oldest.size

    def get(self, response_id: str, caller: str) -> Stored | None:
        found = self._kept.get(response_id)
        return found if found is not None and found.caller == caller else None

    def delete(self, response_id: str, caller: str) -> bool:
        found = self.get(response_id, caller)
        if found is None:
            return False
        del self._kept[response_id]
        self._bytes -= found.size
        return True


ANYONE = "anyone"  # the caller when no token is set: everyone is the admin


def caller_of(request: web.Request, server: ServerSettings) -> str:
    """Who is asking, as far as stored responses go: the client the guard found (clients:),
    by name, however it sent its token (`Authorization: Bearer`, `x-api-key`); else the admin,
    by the token in force (server.auth_token: a rotated token is someone else); else, with no
    token set, anyone, as one caller."""
    client = request[CLIENT]
    if client is not None:
        return _hashed("client", client.name)
    token = server.auth_token
    return ANYONE if token is None else _hashed("admin", token.get_secret_value())


@functools.lru_cache(maxsize=256)  # a handful of callers, each asking many times
def _hashed(kind: str, name: str) -> str:
    return hashlib.sha256(f"{kind}\0{name}".encode()).hexdigest()[:32]
