"""Response helpers: orjson bodies, and pre-serialised bytes with ETag, gzip and 304."""

from __future__ import annotations

import functools
import gzip
import hashlib
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import hdrs, web
from multidict import CIMultiDict, istr

from localrouter.base.errors import BadRequest

JSON = "application/json"
# How deep a request body may nest: what orjson serialises (a body must survive being
# forwarded), far past any real request (Claude Code's nest under 10).
MAX_JSON_DEPTH = 254
_ETAG = istr("ETag")  # as it is usually spelled (aiohttp's hdrs.ETAG is "Etag")
_GZIP_LEVEL = 6


def json_response(data: Any, *, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type=JSON)


@dataclass(frozen=True, slots=True)
class Body:
    """A response body serialised once, with its gzip form, its ETag and its headers."""

    raw: bytes | bytearray  # a long list's body is built in place (offload.py), never copied
    gzipped: bytes
    etag: str
    validator_headers: CIMultiDict[str]
    raw_headers: CIMultiDict[str]
    gzip_headers: CIMultiDict[str]

    @classmethod
    def of(cls, data: Any) -> Body:
        return cls.of_bytes(orjson.dumps(data))

    @classmethod
    def of_bytes(cls, raw: bytes | bytearray) -> Body:
        digest = hashlib.blake2b(raw, digest_size=16).hexdigest()
        # Weak: the gzip and identity forms are the same resource, so one validator fits both.
        etag = f'W/"{digest}"'
        # Keyed by aiohttp's istr names: a plain str key costs an istr made on every response
        # when the headers are written (multidict's items()).
        validators = CIMultiDict(
            ((_ETAG, etag), (hdrs.CACHE_CONTROL, "no-cache"), (hdrs.VARY, "Accept-Encoding"))
        )
        raw_headers = CIMultiDict(validators)
        raw_headers[hdrs.CONTENT_TYPE] = JSON
        gzip_headers = CIMultiDict(raw_headers)
        gzip_headers[hdrs.CONTENT_ENCODING] = "gzip"
        gzipped = gzip.compress(raw, compresslevel=_GZIP_LEVEL, mtime=0)
        return cls(raw, gzipped, etag, validators, raw_headers, gzip_headers)


def cached_response(request: web.Request, body: Body) -> web.Response:
    """The hot path of every cached view: headers are prebuilt, nothing is serialised here."""
    headers = request.headers
    if_none_match = headers.get(hdrs.IF_NONE_MATCH)
    if if_none_match and matches(if_none_match, body.etag):
        return web.Response(status=304, headers=body.validator_headers)
    if accepts_gzip(headers.get(hdrs.ACCEPT_ENCODING, "")):
        return web.Response(body=body.gzipped, headers=body.gzip_headers)
    return web.Response(body=body.raw, headers=body.raw_headers)


def matches(if_none_match: str, etag: str) -> bool:
    if if_none_match.strip() == "*":
        return True
    opaque = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == opaque for tag in if_none_match.split(","))


@functools.lru_cache(maxsize=64)  # clients repeat the same few header values
def accepts_gzip(accept_encoding: str) -> bool:
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


async def request_json(request: web.Request, *, empty: Any = None) -> Any:
    """The request body as JSON; a malformed one is a 400 that says so, never a 500."""
    raw = await request.read()
    if not raw.strip():
        if empty is not None:
            return empty
        raise BadRequest("The request body is empty; send a JSON object.")
    return _parsed(raw)


def _parsed(raw: bytes) -> Any:
    try:
        parsed = orjson.loads(raw)  # refuses past 1024 levels itself
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}") from None
    if len(raw) > 2 * MAX_JSON_DEPTH and _too_deep(parsed):
        raise BadRequest(
            f"The request body nests JSON deeper than {MAX_JSON_DEPTH} levels; no API this "
            "gateway speaks needs that. Flatten it."
        )
    return parsed


def _too_deep(parsed: Any) -> bool:
    """Whether `parsed` nests deeper than orjson serialises (it refuses at MAX_JSON_DEPTH):
    such a body would fail later, once forwarded or translated, or recurse in a walker.
    Serialising is the check: C speed, and only for bodies long enough to be that deep."""
    try:
        orjson.dumps(parsed)
    except TypeError:  # orjson.JSONEncodeError: "Recursion limit reached"
        return True
    return False


async def model_request(request: web.Request) -> tuple[dict[str, Any], str, bytes]:
    """A body that names a model (every POST that reaches an upstream): the object, its
    `model` and the raw bytes, or a 400 that says what is missing."""
    raw = await request.read()
    if not raw.strip():
        raise BadRequest("The request body is empty; send a JSON object.")
    body = _parsed(raw)
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required: an id from GET /v1/models.", param="model")
    return body, model, raw
