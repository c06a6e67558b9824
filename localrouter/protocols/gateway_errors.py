"""An upstream call's failure as the client's error: what went wrong on the way to the upstream
or back (send in forward.py) as a 502 or 504 GatewayError."""

from __future__ import annotations

import aiohttp
import orjson

from localrouter.base.errors import GatewayError, Redirected, UpstreamError
from localrouter.upstream.client import UpstreamClient, Where


def gateway_error(
    exc: Exception, where: Where, http: UpstreamClient, seconds: float, *, answering: bool
) -> GatewayError | None:
    """The client's 502 or 504 for `exc`, raised by a call to `where` (each route renders it
    its way), or None for what is not the upstream's failure: a client that left (its
    connection reset), or our own error. Retryable unless bytes had reached the client
    (`answering`)."""
    if isinstance(exc, ConnectionResetError):  # the client left: not ours
        return None
    if isinstance(exc, Redirected):
        exc = exc.at(where)
    if isinstance(exc, UpstreamError):
        error = GatewayError(exc.message, status=502, code=exc.code or "upstream_error")
    elif isinstance(exc, orjson.JSONDecodeError):
        error = GatewayError(
            f"{where} answered with a body that is not JSON", status=502, code="upstream_error"
        )
    elif isinstance(exc, TimeoutError):
        error = GatewayError(
            f"{where} did not answer within {seconds:g} s", status=504, code="upstream_timeout"
        )
    elif isinstance(exc, aiohttp.ClientError):
        error = GatewayError(
            f"cannot reach {where}: {http.reason(exc)}", status=502, code="upstream_unreachable"
        )
    else:
        return None
    error.retryable = not answering
    return error
