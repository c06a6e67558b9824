"""An upstream call's failure as the client's error: `GatewayErrors` wraps a call (send in
forward.py) and turns what went wrong on the way into a 502 or 504 GatewayError."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from localrouter.base.errors import GatewayError, Redirected, UpstreamError
from localrouter.upstream.client import UpstreamClient, Where


class GatewayErrors:
    """A failed upstream call as the client's 502 or 504 (each route renders it its way); a
    client that left (its request cancelled, or its connection reset) is not an error."""

    __slots__ = ("_http", "answering", "seconds", "where")

    def __init__(self, where: Where, http: UpstreamClient, seconds: float) -> None:
        self.where, self._http, self.seconds = where, http, seconds
        self.answering = False  # a failure from here on is not retried

    def __enter__(self) -> GatewayErrors:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _: Any) -> None:
        if exc is None or isinstance(exc, ConnectionResetError):  # the client left: not ours
            return
        error = self._error(exc)
        if error is not None:
            error.retryable = not self.answering
            raise error from None

    def _error(self, exc: BaseException) -> GatewayError | None:
        where = self.where
        if isinstance(exc, Redirected):
            exc = exc.at(where)
        if isinstance(exc, UpstreamError):
            return GatewayError(exc.message, status=502, code=exc.code or "upstream_error")
        if isinstance(exc, orjson.JSONDecodeError):
            return GatewayError(
                f"{where} answered with a body that is not JSON", status=502, code="upstream_error"
            )
        if isinstance(exc, TimeoutError):
            return GatewayError(
                f"{where} did not answer within {self.seconds:g} s",
                status=504,
                code="upstream_timeout",
            )
        if isinstance(exc, aiohttp.ClientError):
            return GatewayError(
                f"cannot reach {where}: {self._http.reason(exc)}",
                status=502,
                code="upstream_unreachable",
            )
        return None
