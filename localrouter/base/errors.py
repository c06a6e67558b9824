"""Every exception localrouter defines, in one tree under one root:

    LocalRouterError                  anything of ours
    ├── ConfigError                   the config cannot be used (says why and where)
    ├── UpstreamError                 an upstream call failed (a list fetch records it; a call
    │   └── Redirected                  answers it as a GatewayError); a refused redirect
    ├── NoKeyFree                     every key of an instance's pool rests or was refused
    ├── DaemonError                   the CLI cannot get an answer from the running daemon
    └── ApiError                      an answer a client sees: HTTP status, type, code
        ├── BadRequest (400)
        │   ├── NotAChatModel
        │   └── TwoCredentials
        ├── Unauthorized (401)
        ├── AdminOnly (403)
        ├── ModelNotAllowed (403)
        │   └── UnpricedRefused
        ├── NotFound (404)
        │   └── ModelNotFound
        ├── MisdirectedRequest (421)
        ├── NotServedHere (501)
        ├── GatewayError (502, 504, 429)
        ├── RateLimited (429)             a client's rate or max_parallel limit
        └── BudgetExceeded (429, 402, 403) a client's dollar budget

The route wrapper (http/endpoint.py) renders an ApiError in the route's protocol's error
shape (ErrorShape, below: OpenAI's, Anthropic's, Ollama's or OpenRouter's), the one place each
is decided.
No message carries a secret."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from localrouter.base.jsonload import Json


class LocalRouterError(Exception):
    """The root of every exception localrouter raises on purpose."""


class ConfigError(LocalRouterError):
    """The config file (or the embedded default) cannot be used; the message says why and where."""


class UpstreamError(LocalRouterError):
    """An upstream call failed (raised by the upstream client; a list fetch records it, the
    proxy answers it as a GatewayError). The message never contains a secret."""

    def __init__(self, message: str, *, status: int | None = None, code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code  # for a client-facing error: upstream_redirect, upstream_too_large
        self.retry_after: str | None = None  # the upstream's Retry-After, with a 429


class Redirected(UpstreamError):
    """An upstream answered with a redirect, which is not followed (it would carry the key to
    another address). `at(where)` is the error as a caller reports it, naming the upstream."""

    def __init__(self, status: int, target: str) -> None:
        super().__init__(
            f"answered HTTP {status}, a redirect to {target}; localrouter does not follow "
            "redirects (they would carry the API key to another address): set the instance's "
            "base_url to where it points",
            status=502,
            code="upstream_redirect",
        )

    def at(self, where: object) -> UpstreamError:
        return UpstreamError(f"{where} {self.message}", status=502, code="upstream_redirect")


class NoKeyFree(LocalRouterError):
    """Every key of a pool rests or was refused; `wait` is the shortest rest left (None: all
    refused)."""

    def __init__(self, wait: float | None) -> None:
        super().__init__(wait)
        self.wait = wait

    def describe(self, instance: str) -> str:
        if self.wait is None:
            return (
                f"every key of instance '{instance}' was refused (HTTP 401/403); fix them "
                "in the config"
            )
        return (
            f"every key of instance '{instance}' is rate limited; the first is free "
            f"again in {self.wait:.0f} s"
        )


class DaemonError(LocalRouterError):
    """The CLI could not get an answer from the running daemon; the message says why."""


class ApiError(LocalRouterError):
    """An error a client may see: an HTTP status plus an OpenAI error type and code."""

    status = 500
    error_type = "server_error"
    code = "internal_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers: dict[str, str] = {}  # put on the error response (Retry-After, ...)


class BadRequest(ApiError):
    status = 400
    error_type = "invalid_request_error"
    code = "bad_request"


class NotFound(ApiError):
    status = 404
    error_type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class NotAChatModel(BadRequest):
    code = "model_not_supported"


class MisdirectedRequest(ApiError):
    status = 421
    code = "host_not_allowed"
    error_type = "invalid_request_error"


class Unauthorized(ApiError):
    status = 401
    code = "invalid_api_key"
    error_type = "invalid_request_error"


class AdminOnly(ApiError):
    status = 403
    code = "admin_only"
    error_type = "permission_error"


class ModelNotAllowed(ApiError):
    status = 403
    code = "model_not_allowed"
    error_type = "permission_error"


class UnpricedRefused(ModelNotAllowed):
    """A model of no known price, for a client whose dollar budget refuses those."""

    code = "unpriced_model_refused"


class RateLimited(ApiError):
    """A client's rate limit (requests or tokens per minute) or max_parallel: try again
    later (`headers` say when)."""

    status = 429
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, error_type: str, headers: dict[str, str]) -> None:
        super().__init__(message)
        self.error_type = error_type  # OpenAI's: "requests" or "tokens"
        self.headers.update(headers)


class BudgetExceeded(ApiError):
    """A client's dollar budget is spent: no retry helps before it resets, so none is
    invited (no Retry-After, and `x-should-retry: false`, which the official SDKs obey)."""

    error_type = "insufficient_quota"
    code = "budget_exceeded"

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status
        self.headers["x-should-retry"] = "false"


class TwoCredentials(BadRequest):
    code = "ambiguous_credentials"


class NotServedHere(ApiError):
    """Something a gateway does not do (Ollama's model management, ...)."""

    status = 501
    code = "not_supported"
    error_type = "invalid_request_error"


class GatewayError(ApiError):
    """What a client is answered when the upstream call made for it failed (502, 504): the
    client-facing side of an UpstreamError."""

    error_type = "upstream_error"

    def __init__(self, message: str, *, status: int, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retryable = True  # False once any byte of the answer reached the client


_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


# Our codes that Anthropic's errors name in `error.details.error_code`.
_ANTHROPIC_DETAILS = {"budget_exceeded": "enforced_spend_limit_reached"}


def anthropic_error_body(message: str, status: int, code: str | None = None) -> dict[str, Any]:
    kind = _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    error: dict[str, Any] = {"type": kind, "message": message}
    if (detail := _ANTHROPIC_DETAILS.get(code or "")) is not None:
        error["details"] = {"error_code": detail}
    return {"type": "error", "error": error}


def error_body(
    message: str, error_type: str, code: str | None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "code": code, "param": param}}


def openrouter_error_body(
    message: str, status: int, error_type: str, code: str | None, param: str | None
) -> dict[str, Any]:
    """OpenRouter's shape: `code` is the HTTP status, a number (its SDK rejects anything
    else); what OpenAI's shape says besides goes into `metadata`."""
    metadata = {"type": error_type, "reason": code, "param": param}
    return {
        "error": {
            "code": status,
            "message": message,
            "metadata": {key: value for key, value in metadata.items() if value is not None},
        }
    }


@dataclass(frozen=True, slots=True)
class ErrorShape:
    """How one protocol's clients expect an error's body: `body(message, status, type, code,
    param)`. Every error a route answers (ours, and an upstream's refusal re-shaped) goes
    through its route's shape."""

    name: str
    body: Callable[[str, int, str, str | None, str | None], Json]

    def of(self, error: ApiError) -> Json:
        return self.body(error.message, error.status, error.error_type, error.code, error.param)

    def message(self, message: str, status: int, code: str = "upstream_error") -> Json:
        """A plain message at `status` (an upstream's refusal, a broken stream)."""
        kind = "invalid_request_error" if status < 500 else "upstream_error"
        return self.body(message, status, kind, code, None)


OPENAI = ErrorShape(
    "openai", lambda message, _status, kind, code, param: error_body(message, kind, code, param)
)
ANTHROPIC = ErrorShape(
    "anthropic",
    lambda message, status, _kind, code, _param: anthropic_error_body(message, status, code),
)
OLLAMA = ErrorShape("ollama", lambda message, _status, _kind, _code, _param: {"error": message})
OPENROUTER = ErrorShape("openrouter", openrouter_error_body)
