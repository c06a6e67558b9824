"""One client request as the usage ledger keeps it: who called what, which instance and key
answered after how many attempts, how it ended, its tokens and what they cost.

Token convention (OpenTelemetry's GenAI one): `input_tokens` counts every input token,
cache reads and cache writes included; `cache_read_tokens` and `cache_write_tokens` say how
many of them were read from or written to a prompt cache; `reasoning_tokens` are part of
`output_tokens`. Counts are converted from the upstream's wire format (usage/tokens.py)
before any translation."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class UsageSource(StrEnum):
    REPORTED = "reported"  # the upstream said so
    ESTIMATED = "estimated"  # counted here from the text (an interrupted stream, no usage sent)
    NONE = "none"  # nothing to count (a refusal before any call, an error)


class CostSource(StrEnum):
    CATALOG = "catalog"  # the answering model's prices (catalog, or a price in the config)
    FREE = "free"  # a local instance with no price in the config
    UNPRICED = "unpriced"  # no price known: cost_usd is null, never 0


@dataclass(slots=True)
class Tokens:
    """Token counts in the ledger's convention (see the module's docstring)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    def __bool__(self) -> bool:
        return bool(self.input_tokens or self.output_tokens)


class Bodies(Protocol):
    """What the request log keeps of a call's bodies (reqlog/capture.py): made into their
    row (redacted, cut, compressed) in the ledger's worker thread, off the event loop."""

    def row(self) -> tuple[object, ...]:
        """(request, request_truncated, headers, response, response_truncated,
        response_kind): schema.BODY_COLUMNS."""
        ...


@dataclass(slots=True)
class CallRecord:
    """One client request, filled in as it goes and written once its answer ended."""

    id: str  # the request id, sent to the client as x-localrouter-request-id
    started_at: float  # unix seconds
    route: str  # the route's path, e.g. /v1/chat/completions
    client: str | None = None  # the client's name; None for the admin or anyone
    requested_model: str | None = None
    stream: bool = False
    session: str | None = None
    model: str | None = None  # the instance/model that answered (or was last tried)
    instance: str | None = None
    provider_type: str | None = None
    key_position: int | None = None  # which key of the instance's pool, by position
    attempts: int = 0
    status: int = 0
    error_type: str | None = None
    cancelled: bool = False
    duration_ms: float = 0.0
    ttft_ms: float | None = None  # to the first byte of a stream
    tokens: Tokens = field(default_factory=Tokens)
    usage_source: UsageSource = UsageSource.NONE
    cost_usd: float | None = None
    cost_source: CostSource = CostSource.UNPRICED
    upstream_status: int | None = None  # what the last upstream call answered (None: none made)
    error: str | None = None  # the error's message, as the client got it (never a secret)
    path: str | None = None  # "native" (the client's protocol upstream) or "translated"
    bodies: Bodies | None = None  # kept by the request log (not a column: a row of its own)
