"""Response helpers: orjson bodies, and pre-serialised bytes with ETag, gzip and 304."""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

JSON = "application/json"
_GZIP_LEVEL = 6


def json_response(data: Any, *, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type=JSON)


@dataclass(frozen=True, slots=True)
class Body:
    """A response body serialised once, with its gzip form and its ETag."""

    raw: bytes
    gzipped: bytes
    etag: str

    @classmethod
    def of(cls, data: Any) -> Body:
        raw = orjson.dumps(data)
        digest = hashlib.blake2b(raw, digest_size=16).hexdigest()
        # Weak: the gzip and identity forms are the same resource, so one validator fits both.
        return cls(raw, gzip.compress(raw, compresslevel=_GZIP_LEVEL, mtime=0), f'W/"{digest}"')


def cached_response(request: web.Request, body: Body) -> web.Response:
    headers = {"ETag": body.etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding"}
    if _matches(request.headers.get("If-None-Match"), body.etag):
        return web.Response(status=304, headers=headers)
    if _accepts_gzip(request.headers.get("Accept-Encoding", "")):
        headers["Content-Encoding"] = "gzip"
        return web.Response(body=body.gzipped, content_type=JSON, headers=headers)
    return web.Response(body=body.raw, content_type=JSON, headers=headers)


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    opaque = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == opaque for tag in if_none_match.split(","))


def _accepts_gzip(accept_encoding: str) -> bool:
    for coding in accept_encoding.lower().split(","):
        name, _, params = coding.strip().partition(";")
        if name.strip() in ("gzip", "*"):
            quality = params.strip().removeprefix("q=").strip()
            return not quality or _positive(quality)
    return False


def _positive(quality: str) -> bool:
    try:
        return float(quality) > 0
    except ValueError:
        return False
