"""Bounded upstream HTTP: a timeout, a body-size cap, and error messages safe to show."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson
from yarl import URL

from localrouter.errors import UpstreamError
from localrouter.secrets import redact

_ERROR_SNIPPET_BYTES = 4096
_HINTS = {
    401: "check the instance's API key",
    403: "the API key is not allowed to list models",
    404: "check the instance's base_url",
    429: "rate limited by the upstream; will retry with backoff",
}


def display_url(url: str | URL) -> str:
    """The URL without credentials or query string, safe for logs and messages."""
    return str(URL(url).with_user(None).with_password(None).with_query(None).with_fragment(None))


class UpstreamClient:
    """Requests on behalf of one instance over the shared session, within its limits."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        timeout_seconds: float,
        max_bytes: int,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self._session = session
        self._timeout = timeout_seconds
        self._max_bytes = max_bytes
        self._secrets = secrets

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
        where = display_url(url)
        data = orjson.dumps(body) if body is not None else None
        if data is not None:
            headers = {**(headers or {}), "Content-Type": "application/json"}
        try:
            async with (
                asyncio.timeout(self._timeout),
                self._session.request(
                    method, url, headers=headers, params=params, data=data
                ) as response,
            ):
                if response.status >= 400:
                    snippet = await response.content.read(_ERROR_SNIPPET_BYTES)
                    raise self._status_error(response.status, where, snippet)
                body = await self._read_limited(response, where)
        except TimeoutError:
            raise UpstreamError(f"{where} did not answer within {self._timeout:g} s") from None
        except aiohttp.ClientError as exc:
            reason = redact(str(exc) or type(exc).__name__, self._secrets)
            raise UpstreamError(f"cannot reach {where}: {reason}") from None
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"{where} answered with a body that is not JSON") from None

    async def _read_limited(self, response: aiohttp.ClientResponse, where: str) -> bytes:
        too_big = UpstreamError(f"{where} sent more than {self._max_bytes} bytes; giving up")
        if (response.content_length or 0) > self._max_bytes:
            raise too_big
        chunks: list[bytes] = []
        total = 0
        async for chunk in response.content.iter_chunked(65536):
            total += len(chunk)
            if total > self._max_bytes:
                raise too_big
            chunks.append(chunk)
        return b"".join(chunks)

    def _status_error(self, status: int, where: str, snippet: bytes) -> UpstreamError:
        detail = _upstream_message(snippet)
        parts = [f"HTTP {status} from {where}"]
        if detail:
            parts.append(redact(detail, self._secrets))
        if hint := _HINTS.get(status):
            parts.append(hint)
        return UpstreamError(": ".join(parts), status=status)


def _upstream_message(snippet: bytes) -> str:
    """The upstream's own error message if the body carries one, else a short text prefix."""
    try:
        data = orjson.loads(snippet)
    except orjson.JSONDecodeError:
        return snippet[:200].decode("utf-8", "replace").strip()
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            error = error.get("message") or error.get("error")
        if error is None:
            error = data.get("message")
        if isinstance(error, str):
            return error[:300]
    return ""
