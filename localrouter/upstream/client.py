"""The upstream client every call to a provider goes through: list fetches and proxied calls.

It owns the limits, so no caller can forget one:
- redirects are never followed: a transport raises `Redirected` for a 3xx, an error naming the
  instance and the Location (aiohttp would re-send custom auth headers such as x-api-key, and a
  307 the whole prompt, to any host);
- bodies are read up to `max_bytes` of decoded data (aiohttp inflates gzip in bounded steps, and
  we count what comes out), so a compressed or endless answer cannot exhaust memory;
- every message is redacted before it is shortened, and never shows a secret;
- requests identify as `localrouter/<version>`.

Bytes move through a `Transport`: `SessionTransport` over the daemon's aiohttp session, or
`CannedTransport`, which answers from memory (adapter tests feed captured bodies through it, and
`catalog match` reads a file with it) with the same limits applied.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

import aiohttp
import orjson
from aiohttp import hdrs
from yarl import URL

from localrouter import PRODUCT
from localrouter.base.errors import Redirected, UpstreamError
from localrouter.base.jsonload import loads_off_loop
from localrouter.base.secrets import display_url, drop_partial_secret, redact, shorten

USER_AGENT = PRODUCT
ERROR_SNIPPET_BYTES = 64 * 1024
_READ_WHOLE_BYTES = 1024 * 1024  # a declared length up to this is read in one call
_MESSAGE_CHARS = 300
_HINTS = {
    401: "check the instance's API key",
    403: "the API key is not allowed to list models",
    404: "check the instance's base_url",
    429: "rate limited by the upstream; will retry with backoff",
}


class Where:
    """How messages name an upstream: its instance and URL without secrets, made only when a
    message is written (most requests never need it)."""

    __slots__ = ("_label", "url")

    def __init__(self, label: str | None, url: str | URL) -> None:
        self._label, self.url = label, url

    def __str__(self) -> str:
        shown = display_url(self.url)
        return f"{self._label} ({shown})" if self._label else shown

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


class BodyReader(Protocol):
    async def read(self, n: int = -1) -> bytes: ...
    def iter_any(self) -> AsyncIterator[bytes]: ...


class UpstreamResponse(Protocol):
    """What the client reads of an answer (aiohttp's ClientResponse is one)."""

    @property
    def status(self) -> int: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def url(self) -> URL: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def content_type(self) -> str: ...
    @property
    def content_length(self) -> int | None: ...
    @property
    def content(self) -> BodyReader: ...


class Transport(Protocol):
    """Sends one request; never follows a redirect: a 3xx raises `Redirected` (its response
    closed)."""

    def send(
        self,
        method: str,
        url: str | URL,
        *,
        headers: Mapping[str, str],
        params: Mapping[str, str | int] | None,
        data: bytes | None,
        limits: aiohttp.ClientTimeout,
    ) -> AbstractAsyncContextManager[UpstreamResponse]: ...


def redirected(response: UpstreamResponse) -> Redirected:
    """The error for an upstream's redirect, naming where it points (without credentials)."""
    location = response.headers.get("Location")
    target = display_url(response.url.join(URL(location))) if location else "nowhere"
    return Redirected(response.status, target)


async def _refuse_redirects(response: aiohttp.ClientResponse) -> None:
    if 300 <= response.status < 400:
        raise redirected(response)


class SessionTransport:
    """Real requests over an aiohttp session; a redirect is refused by the hook aiohttp calls
    with every response (its raise_for_status), which costs less than a wrapper around the
    request's context manager. Given a session, or opening its own (`opened`) while the app
    runs: the daemon builds its components before the loop runs, and a session needs it."""

    _session: aiohttp.ClientSession

    def __init__(self, session: aiohttp.ClientSession | None = None) -> None:
        if session is not None:
            self._session = session

    @asynccontextmanager
    async def opened(self, *, trust_env: bool) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(trust_env=trust_env, raise_for_status=False) as session:
            self._session = session
            yield

    def send(
        self,
        method: str,
        url: str | URL,
        *,
        headers: Mapping[str, str],
        params: Mapping[str, str | int] | None,
        data: bytes | None,
        limits: aiohttp.ClientTimeout,
    ) -> AbstractAsyncContextManager[UpstreamResponse]:
        return self._session.request(  # aiohttp's own context manager: no wrapper on the way
            method,
            url,
            headers=headers,
            params=params,
            data=data,
            allow_redirects=False,
            raise_for_status=_refuse_redirects,
            timeout=limits,
        )


@dataclass(frozen=True, slots=True)
class Canned:
    """One answer from memory."""

    body: bytes
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=lambda: {"Content-Type": JSON_TYPE})


JSON_TYPE = "application/json"


class _CannedBody:
    def __init__(self, body: bytes) -> None:
        self._body = body
        self._position = 0

    async def read(self, n: int = -1) -> bytes:
        end = len(self._body) if n < 0 else self._position + n
        chunk, self._position = self._body[self._position : end], min(end, len(self._body))
        return chunk

    async def iter_any(self) -> AsyncIterator[bytes]:
        while chunk := await self.read(64 * 1024):
            yield chunk


@dataclass(slots=True)
class _CannedResponse:
    status: int
    url: URL
    headers: Mapping[str, str]
    content: _CannedBody
    reason: str | None = None

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";")[0].strip()

    @property
    def content_length(self) -> int | None:
        return len(self.content._body)


class CannedTransport:
    """Answers from memory: `answer(method, url, body)` gives each request's answer (the query
    string is part of the URL). Nothing is sent anywhere; `sent` records what was asked."""

    def __init__(self, answer: Callable[[str, URL, bytes], Canned]) -> None:
        self._answer = answer
        self.sent: list[tuple[str, URL, dict[str, str]]] = []

    @asynccontextmanager
    async def send(
        self,
        method: str,
        url: str | URL,
        *,
        headers: Mapping[str, str],
        params: Mapping[str, str | int] | None,
        data: bytes | None,
        limits: aiohttp.ClientTimeout,
    ) -> AsyncIterator[UpstreamResponse]:
        full = URL(url).update_query(params) if params else URL(url)
        self.sent.append((method, full, dict(headers)))
        canned = self._answer(method, full, data or b"")
        response = _CannedResponse(canned.status, full, canned.headers, _CannedBody(canned.body))
        if 300 <= canned.status < 400:
            raise redirected(response)
        yield response


class UpstreamClient:
    """Requests on behalf of one instance through a transport, within its limits."""

    def __init__(
        self,
        transport: Transport,
        *,
        timeout_seconds: float,
        max_bytes: int,
        secrets: tuple[str, ...] = (),
        instance: str | None = None,
    ) -> None:
        self._transport = transport
        self._timeout = timeout_seconds
        self.max_bytes = max_bytes
        self.secrets = secrets
        self.label = f"instance '{instance}'" if instance else None

    def where(self, url: str | URL) -> Where:
        """How a message names the upstream: the instance and its URL without secrets."""
        return Where(self.label, url)

    async def get_json(
        self,
        url: str | URL,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str | int] | None = None,
    ) -> Any:
        return await self._json("GET", url, headers=headers, params=params)

    async def post_json(
        self, url: str | URL, body: Any, *, headers: Mapping[str, str] | None = None
    ) -> Any:
        return await self._json("POST", url, headers=headers, body=body)

    async def _json(
        self,
        method: str,
        url: str | URL,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str | int] | None = None,
        body: Any = None,
    ) -> Any:
        where = self.where(url)
        data = orjson.dumps(body) if body is not None else None
        try:
            async with (
                asyncio.timeout(self._timeout),
                self.request(method, url, headers=headers, params=params, data=data) as response,
            ):
                raw = await self.read_body(response, where)
        except Redirected as exc:
            raise exc.at(where) from None
        except TimeoutError:
            raise UpstreamError(f"{where} did not answer within {self._timeout:g} s") from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"cannot reach {where}: {self.reason(exc)}") from None
        try:
            return await loads_off_loop(raw)
        except ValueError:
            raise UpstreamError(f"{where} answered with a body that is not JSON") from None

    def request(
        self,
        method: str,
        url: str | URL,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, str] | None = None,
        params: Mapping[str, str | int] | None = None,
        data: bytes | None = None,
        limits: aiohttp.ClientTimeout | None = None,
    ) -> AbstractAsyncContextManager[UpstreamResponse]:
        """One request with `headers` and then `extra` (the instance's, then the call's),
        redirects refused: a 3xx raises `Redirected` (report it with `.at(where)`). Any other
        status is the caller's to handle."""
        base = _WITH_BODY if data is not None else _WITHOUT_BODY
        sent = {**base, **(headers or _NONE), **(extra or _NONE)} if headers or extra else base
        return self._transport.send(
            method,
            url,
            headers=sent,
            params=params,
            data=data,
            limits=limits or _NO_LIMITS,
        )

    async def read_body(self, response: UpstreamResponse, where: Where) -> bytes | bytearray:
        """The whole decoded body, at most `max_bytes`; a status >= 400 raises its error.
        `where` names the upstream in messages (anything printable; made only when needed)."""
        if response.status >= 400:
            snippet = await response.content.read(ERROR_SNIPPET_BYTES)
            error = self._status_error(response.status, str(where), snippet)
            error.retry_after = response.headers.get(hdrs.RETRY_AFTER)
            raise error
        headers = response.headers
        declared = headers.get(hdrs.CONTENT_LENGTH)
        if declared is not None and declared.isdecimal() and not headers.get(hdrs.CONTENT_ENCODING):
            length = int(declared)
            if length > self.max_bytes:
                raise self._too_big(where)
            if length <= _READ_WHOLE_BYTES:  # the common small answer: one read, no buffer
                return await response.content.read(-1)
        # iter_any hands over buffered chunks whole (iter_chunked re-slices a large buffered
        # chunk on every read: 150 ms of loop time for a 30 MB body), and growing one buffer
        # copies a chunk at a time where a final join of 30 MB held the loop 56 ms.
        body = bytearray()
        async for chunk in response.content.iter_any():
            if len(body) + len(chunk) > self.max_bytes:
                raise self._too_big(where)
            body += chunk
        return body

    def _too_big(self, where: Where) -> UpstreamError:
        return UpstreamError(
            f"{where} sent more than {self.max_bytes} bytes (max_response_bytes); giving up",
            status=502,
            code="upstream_too_large",
        )

    def reason(self, exc: BaseException) -> str:
        return shorten(str(exc) or type(exc).__name__, _MESSAGE_CHARS, self.secrets)

    def _status_error(self, status: int, where: str, snippet: bytes) -> UpstreamError:
        detail = upstream_message(snippet, self.secrets)
        parts = [f"HTTP {status} from {where}"]
        if detail:
            parts.append(detail)
        if hint := _HINTS.get(status):
            parts.append(hint)
        return UpstreamError(": ".join(parts), status=status)


_NO_LIMITS = aiohttp.ClientTimeout(total=None)
_NONE: Mapping[str, str] = MappingProxyType({})
_WITHOUT_BODY = MappingProxyType({"User-Agent": USER_AGENT})
_WITH_BODY = MappingProxyType({"User-Agent": USER_AGENT, "Content-Type": JSON_TYPE})


def upstream_message(snippet: bytes, secrets: tuple[str, ...]) -> str:
    """The upstream's own error message if the body carries one, else a short text prefix;
    redacted, then shortened."""
    text = drop_partial_secret(snippet.decode("utf-8", "replace"), secrets)
    try:
        data = orjson.loads(snippet)
    except orjson.JSONDecodeError:
        return shorten(text.strip(), _MESSAGE_CHARS, secrets)
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            error = error.get("message") or error.get("error")
        if error is None:
            error = data.get("message")
        if isinstance(error, str):
            return shorten(redact(error, secrets), _MESSAGE_CHARS, secrets)
    return ""
