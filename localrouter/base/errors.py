"""A shallow error hierarchy; the route wrapper (routing.py) renders each as OpenAI-shaped
JSON with its status."""

from __future__ import annotations

from typing import Any


class LocalRouterError(Exception):
    """An error a client may see: an HTTP status plus an OpenAI error type and code."""

    status = 500
    error_type = "server_error"
    code = "internal_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers: dict[str, str] = {}  # put on the error response (Retry-After, ...)

    def to_body(self) -> dict[str, Any]:
        return error_body(self.message, self.error_type, self.code, self.param)

    def to_anthropic_body(self) -> dict[str, Any]:
        """The same error as Anthropic's API shapes it (for /v1/messages)."""
        return anthropic_error_body(self.message, self.status)

    def to_ollama_body(self) -> dict[str, Any]:
        """The same error as Ollama's API shapes it (for /api/chat and the rest)."""
        return ollama_error_body(self.message, self.status)


class BadRequest(LocalRouterError):
    status = 400
    error_type = "invalid_request_error"
    code = "bad_request"


class NotFound(LocalRouterError):
    status = 404
    error_type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class NotAChatModel(BadRequest):
    code = "model_not_supported"


class MisdirectedRequest(LocalRouterError):
    status = 421
    code = "host_not_allowed"
    error_type = "invalid_request_error"


class Unauthorized(LocalRouterError):
    status = 401
    code = "invalid_api_key"
    error_type = "invalid_request_error"


class AdminOnly(LocalRouterError):
    status = 403
    code = "admin_only"
    error_type = "permission_error"


class ModelNotAllowed(LocalRouterError):
    status = 403
    code = "model_not_allowed"
    error_type = "permission_error"


class TwoCredentials(LocalRouterError):
    status = 400
    code = "ambiguous_credentials"
    error_type = "invalid_request_error"


class GatewayError(LocalRouterError):
    """What a client is answered when the upstream call made for it failed (502, 504): the
    client-facing side of an UpstreamError."""

    error_type = "upstream_error"

    def __init__(self, message: str, *, status: int, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retryable = True  # False once any byte of the answer reached the client


class ConfigError(Exception):
    """The config file (or the embedded default) cannot be used; the message says why and where."""


class UpstreamError(Exception):
    """An upstream call failed (raised by the upstream client; a list fetch records it, the
    proxy answers it as a GatewayError). The message never contains a secret."""

    def __init__(self, message: str, *, status: int | None = None, code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code  # for a client-facing error: upstream_redirect, upstream_too_large
        self.retry_after: str | None = None  # the upstream's Retry-After, with a 429


_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def anthropic_error_body(message: str, status: int) -> dict[str, Any]:
    kind = _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def error_body(
    message: str, error_type: str, code: str | None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "code": code, "param": param}}


def ollama_error_body(message: str, _status: int) -> dict[str, Any]:
    """Ollama's error shape: the message alone (the status is the response's)."""
    return {"error": message}
