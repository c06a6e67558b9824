"""What the spans say, per OpenTelemetry's GenAI semantic conventions: the operation of a route,
the provider's well-known name, the attributes of a settled record, and (when
telemetry.capture_content is on) the prompt and the answer, redacted and capped. Nothing here
needs the OpenTelemetry SDK."""

from __future__ import annotations

from collections.abc import Iterable

import orjson

from localrouter.base.secrets import shorten
from localrouter.usage.record import CallRecord, UsageSource

# gen_ai.operation.name by the end of a call route's path (or an upstream URL's): the first
# that matches. Chat Completions, Messages and Responses are all `chat`.
OPERATIONS: tuple[tuple[str, str], ...] = (
    ("/chat/completions", "chat"),
    ("/messages", "chat"),
    ("/responses", "chat"),
    ("/api/chat", "chat"),
    ("/completions", "text_completion"),
    ("/api/generate", "text_completion"),
    ("/embeddings", "embeddings"),
    ("/api/embed", "embeddings"),
)
CHAT = "chat"

# gen_ai.provider.name: the convention's well-known values, by our provider types; any other
# type is named as it is (ollama, openrouter, openai_compatible, ...).
PROVIDER_NAMES = {
    "openai": "openai",
    "anthropic": "anthropic",
    "cohere": "cohere",
    "gemini": "gcp.gemini",
    "groq": "groq",
    "mistral": "mistral_ai",
    "perplexity": "perplexity",
    "xai": "x_ai",
}

CONTENT_CHARS = 16 * 1024  # the most of a prompt or an answer a span carries
_PARSED_BYTES = 1024 * 1024  # a larger body is shown as its first bytes, not parsed
# The fields of a request and of an answer that hold the conversation, in each wire format.
_INPUT_FIELDS = ("system", "instructions", "messages", "input", "prompt")
_OUTPUT_FIELDS = ("choices", "content", "output", "message", "response")

Attributes = dict[str, str | bool | int | float]


def operation_of(path: str, default: str = CHAT) -> str:
    path = path.rstrip("/")
    for end, operation in OPERATIONS:
        if path.endswith(end):
            return operation
    return default


def provider_name(provider_type: str) -> str:
    return PROVIDER_NAMES.get(provider_type, provider_type)


def span_name(operation: str, model: str | None) -> str:
    """`{gen_ai.operation.name} {gen_ai.request.model}`, the operation alone without a model."""
    return f"{operation} {model}" if model else operation


def error_type(status: int | None, code: str | None) -> str | None:
    """error.type: our error's code, else the HTTP status of a refusal."""
    if code:
        return code
    if status is not None and status >= 400:
        return str(status)
    return None


def settled_attributes(record: CallRecord) -> Attributes:
    """A request span's attributes once its record is settled (priced)."""
    attributes: Attributes = {
        "localrouter.request_id": record.id,
        "localrouter.attempts": record.attempts,
        "localrouter.stream": record.stream,
        "localrouter.usage_source": record.usage_source.value,
        "localrouter.cost_source": record.cost_source.value,
    }
    status = record.status
    if status:
        attributes["http.response.status_code"] = status
    if record.client is not None:
        attributes["localrouter.client"] = record.client
    if record.provider_type is not None:
        attributes["gen_ai.provider.name"] = provider_name(record.provider_type)
    if record.instance is not None:
        attributes["localrouter.instance"] = record.instance
    if record.model is not None and 0 < status < 400:
        attributes["gen_ai.response.model"] = record.model
    if record.usage_source is not UsageSource.NONE:
        tokens = record.tokens
        attributes["gen_ai.usage.input_tokens"] = tokens.input_tokens
        attributes["gen_ai.usage.output_tokens"] = tokens.output_tokens
        if tokens.cache_read_tokens:
            attributes["gen_ai.usage.cache_read.input_tokens"] = tokens.cache_read_tokens
        if tokens.cache_write_tokens:
            attributes["gen_ai.usage.cache_creation.input_tokens"] = tokens.cache_write_tokens
        if tokens.reasoning_tokens:
            attributes["localrouter.usage.reasoning_tokens"] = tokens.reasoning_tokens
    if record.cost_usd is not None:
        attributes["localrouter.cost_usd"] = record.cost_usd
    if record.ttft_ms is not None:
        attributes["localrouter.ttft_ms"] = record.ttft_ms
    if record.cancelled:
        attributes["localrouter.cancelled"] = True
    failed = error_type(status, record.error_type)
    if failed is not None:
        attributes["error.type"] = failed
    return attributes


def captured_input(body: bytes | None, secrets: Iterable[str]) -> str | None:
    """gen_ai.input.messages: the request's conversation (its system text, messages, input or
    prompt) as JSON, redacted and capped."""
    return _captured(body, _INPUT_FIELDS, secrets)


def captured_output(body: bytes | None, secrets: Iterable[str]) -> str | None:
    """gen_ai.output.messages: the answer's choices, content or output as JSON, redacted and
    capped."""
    return _captured(body, _OUTPUT_FIELDS, secrets)


def _captured(body: bytes | None, fields: tuple[str, ...], secrets: Iterable[str]) -> str | None:
    if not body:
        return None
    text: str | None = None
    if len(body) <= _PARSED_BYTES:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
        else:
            if isinstance(parsed, dict):
                picked = {key: parsed[key] for key in fields if key in parsed}
                parsed = picked or parsed
            text = orjson.dumps(parsed).decode()
    if text is None:  # not JSON, or too large to parse: its start, as text
        text = body[: CONTENT_CHARS * 4].decode("utf-8", "replace")
    return shorten(text, CONTENT_CHARS, secrets)
