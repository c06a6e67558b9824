"""An upstream's token counts, in its own wire format, to the ledger's convention (input
inclusive of cache reads and writes: usage/record.py). Each function takes what the upstream
sent (anything: a value that is not a count counts as 0) and gives None when it reported
nothing countable."""

from __future__ import annotations

from typing import Any

from localrouter.usage.record import Tokens


def _count(value: Any) -> int:
    """A token count, or 0 for anything that is not one (a bool is an int to Python)."""
    return value if type(value) is int and value > 0 else 0


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def from_openai(usage: Any) -> Tokens | None:
    """Chat Completions (and every OpenAI-compatible server): `prompt_tokens` already holds
    the cached ones (`prompt_tokens_details.cached_tokens`); a cache write is reported by a
    few (`cache_write_tokens`, or Anthropic's name through OpenRouter); DeepSeek names its
    hits `prompt_cache_hit_tokens`."""
    if not isinstance(usage, dict):
        return None
    details = _object(usage.get("prompt_tokens_details"))
    cache_read = _count(details.get("cached_tokens")) or _count(
        usage.get("prompt_cache_hit_tokens")
    )
    cache_write = _count(details.get("cache_write_tokens")) or _count(
        details.get("cache_creation_input_tokens")
    )
    completion = _object(usage.get("completion_tokens_details"))
    made = Tokens(
        input_tokens=_count(usage.get("prompt_tokens")),
        output_tokens=_count(usage.get("completion_tokens")),
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        reasoning_tokens=_count(completion.get("reasoning_tokens")),
    )
    return made if made or cache_read else None


def from_responses(usage: Any) -> Tokens | None:
    """OpenAI's Responses API: `input_tokens` holds the cached ones."""
    if not isinstance(usage, dict):
        return None
    made = Tokens(
        input_tokens=_count(usage.get("input_tokens")),
        output_tokens=_count(usage.get("output_tokens")),
        cache_read_tokens=_count(_object(usage.get("input_tokens_details")).get("cached_tokens")),
        reasoning_tokens=_count(
            _object(usage.get("output_tokens_details")).get("reasoning_tokens")
        ),
    )
    return made if made else None


def from_anthropic(usage: Any) -> Tokens | None:
    """Anthropic's Messages: `input_tokens` leaves out cache reads and writes, which come
    apart (`cache_read_input_tokens`, `cache_creation_input_tokens`)."""
    if not isinstance(usage, dict):
        return None
    read = _count(usage.get("cache_read_input_tokens"))
    written = _count(usage.get("cache_creation_input_tokens"))
    made = Tokens(
        input_tokens=_count(usage.get("input_tokens")) + read + written,
        output_tokens=_count(usage.get("output_tokens")),
        cache_read_tokens=read,
        cache_write_tokens=written,
    )
    return made if made else None


def from_gemini(usage_metadata: Any) -> Tokens | None:
    """Gemini's `usageMetadata`: `promptTokenCount` holds the cached ones
    (`cachedContentTokenCount`); thinking (`thoughtsTokenCount`) is counted apart from the
    answer's `candidatesTokenCount`, and both are output."""
    if not isinstance(usage_metadata, dict):
        return None
    thoughts = _count(usage_metadata.get("thoughtsTokenCount"))
    made = Tokens(
        input_tokens=_count(usage_metadata.get("promptTokenCount")),
        output_tokens=_count(usage_metadata.get("candidatesTokenCount")) + thoughts,
        cache_read_tokens=_count(usage_metadata.get("cachedContentTokenCount")),
        reasoning_tokens=thoughts,
    )
    return made if made else None


def from_ollama(answer: Any) -> Tokens | None:
    """Ollama's native answer (the last line of a stream): `prompt_eval_count` and
    `eval_count`. Ollama reports no cache."""
    if not isinstance(answer, dict):
        return None
    made = Tokens(
        input_tokens=_count(answer.get("prompt_eval_count")),
        output_tokens=_count(answer.get("eval_count")),
    )
    return made if made else None


def from_llamacpp(timings: Any) -> Tokens | None:
    """llama.cpp's server `timings`: `prompt_n` tokens evaluated now, `cache_n` taken from
    its prompt cache (so input is their sum), `predicted_n` generated."""
    if not isinstance(timings, dict):
        return None
    cached = _count(timings.get("cache_n"))
    made = Tokens(
        input_tokens=_count(timings.get("prompt_n")) + cached,
        output_tokens=_count(timings.get("predicted_n")),
        cache_read_tokens=cached,
    )
    return made if made else None


def from_chat_answer(answer: Any) -> Tokens | None:
    """What an OpenAI-shaped answer or chunk reports: its `usage`, else llama.cpp's
    `timings`, else Gemini's `usageMetadata` where a server passes it on."""
    if not isinstance(answer, dict):
        return None
    return (
        from_openai(answer.get("usage"))
        or from_llamacpp(answer.get("timings"))
        or from_gemini(answer.get("usageMetadata"))
    )


# About four characters a token over English and code: what an estimate counts with.
CHARS_PER_TOKEN = 4


def estimated(text_chars: int) -> int:
    """Tokens for `text_chars` characters of text, when nothing was reported."""
    return -(-text_chars // CHARS_PER_TOKEN)
