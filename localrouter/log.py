"""structlog set-up: console on a TTY, JSON otherwise, secrets redacted from every event."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any

import structlog

from localrouter.secrets import REDACTED, redact

_SECRET_FIELDS = frozenset({"api_key", "authorization", "auth_token", "token", "password"})


REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)


def add_request_id(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    if (request_id := REQUEST_ID.get()) is not None:
        event_dict.setdefault("request_id", request_id)
    return event_dict


class SecretRedactor:
    """A structlog processor that blanks known secret values wherever they appear."""

    def __init__(self) -> None:
        self.secrets: tuple[str, ...] = ()

    def __call__(
        self, logger: Any, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in event_dict.items():
            if key.lower() in _SECRET_FIELDS and value is not None:
                event_dict[key] = REDACTED
            elif isinstance(value, str):
                event_dict[key] = redact(value, self.secrets)
        return event_dict


def configure_logging(level: str = "info", *, redactor: SecretRedactor | None = None) -> None:
    renderer: Any
    if sys.stderr.isatty():
        renderer = structlog.dev.ConsoleRenderer()
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_request_id,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redactor or SecretRedactor(),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
