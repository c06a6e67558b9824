"""Tolerant readers for upstream JSON: wrong types become "unknown", never an exception."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

import structlog

from localrouter.base.errors import UpstreamError
from localrouter.base.offload import INLINE_ITEMS, dismantle, heavy
from localrouter.providers.base import ModelInfo

log = structlog.get_logger(__name__)

PER_MILLION = 1_000_000.0
# What an upstream may say, at most. Past these a value is unknown, not an error: one model's
# 1e20 must never stop a list (or another instance's list) from being served.
MAX_TOKENS = 2**31 - 1  # context and output sizes
MAX_UNIX_TIME = 2**32  # the year 2106
MAX_PRICE = 1_000_000.0  # USD per token (or per unit)
MAX_ID_LENGTH = 512

Parse = Callable[[dict[str, Any]], ModelInfo | None]


async def parse_items(items: list[dict[str, Any]], parse: Parse) -> list[ModelInfo]:
    """Every item that parses, in order; off the event loop for a long list."""

    def run() -> list[ModelInfo]:
        return [model for item in items if (model := parse(item)) is not None]

    if len(items) <= INLINE_ITEMS:
        return run()

    def run_and_free() -> list[ModelInfo]:
        parsed = run()
        dismantle(items)  # the decoded entries, freed here a slice at a time, not on the loop
        return parsed

    return await heavy(run_and_free, len(items))


def model_items(data: Any, *keys: str) -> list[dict[str, Any]]:
    """The list of model objects in a body: a bare array, or the first list under one of `keys`."""
    items: Any = data
    if isinstance(data, Mapping):
        items = next((data[key] for key in keys if isinstance(data.get(key), list)), None)
    if not isinstance(items, list):
        found = type(data).__name__ if not isinstance(data, Mapping) else f"keys {sorted(data)[:8]}"
        raise UpstreamError(f"the upstream answered with something not a model list ({found})")
    if all(isinstance(item, dict) for item in items):
        return items  # the body's own list: parse_items frees its entries off the loop
    return [item for item in items if isinstance(item, dict)]


def field(body: Any, key: str) -> Any:
    """A top-level field of a page, or None when the page is not an object."""
    return body.get(key) if isinstance(body, Mapping) else None


def too_many_pages(limit: int) -> UpstreamError:
    return UpstreamError(
        f"the model list has more than {limit} pages; raise max_pages for this instance"
    )


def mapping(value: Any) -> dict[str, Any]:
    """An object field, or an empty one when the upstream sent something else."""
    return value if isinstance(value, dict) else {}


def text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def positive_int(value: Any, maximum: int = MAX_TOKENS) -> int | None:
    """A whole number in 1..maximum, else None (unknown)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str) and value.isdigit() and len(value) <= 20:
        value = int(value)
    if isinstance(value, (int, float)) and 0 < value <= maximum:
        return int(value)
    return None


def number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:
            return None
        return number if math.isfinite(number) and abs(number) <= MAX_PRICE else None
    return None


def unix_time(value: Any) -> int:
    """Seconds since the epoch from an int or an RFC 3339 string; 0 when unknown."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except (ValueError, OverflowError, OSError):
            return 0
    return positive_int(value, MAX_UNIX_TIME) or 0


def strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(item for item in value if isinstance(item, str) and item)


def per_token_prices(pricing: Any, scale: float = 1.0) -> dict[str, float]:
    """Prices keyed as OpenRouter names them, divided by `scale` to reach USD per token.

    Negative values (OpenRouter's "-1" for "varies") are dropped, as are unparsable ones.
    """
    if not isinstance(pricing, Mapping):
        return {}
    prices: dict[str, float] = {}
    for key, raw in pricing.items():
        value = number(raw)
        if isinstance(key, str) and value is not None and value >= 0:
            prices[key] = value / scale
    return prices


# Substrings of model ids that say what a model does, for lists that say nothing else.
_ID_HINTS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("embed",), "embedding"),
    (("whisper", "transcribe"), "transcription"),
    (("tts",), "speech"),
    (("dall-e", "gpt-image", "imagen", "flux", "stable-diffusion", "sdxl"), "image_generation"),
    (("sora", "veo"), "video_generation"),
    (("moderation", "guard"), "moderation"),
    (("rerank",), "rerank"),
)


def capabilities_from_id(model_id: str) -> tuple[str, ...]:
    """A best guess from the id alone: one kind if a hint matches, else chat."""
    lowered = model_id.lower()
    for hints, capability in _ID_HINTS:
        if any(hint in lowered for hint in hints):
            return (capability,)
    return ("chat",)


def sane_id(model_id: str) -> bool:
    """An id a terminal, a log line and a URL can carry: no control characters, not huge."""
    return 0 < len(model_id) <= MAX_ID_LENGTH and model_id.isprintable()


def sane_models(models: list[ModelInfo], instance: str) -> list[ModelInfo]:
    """What any adapter returned, within the limits above: models with unusable ids are left
    out (and counted in the log), numbers out of range become unknown."""
    kept: list[ModelInfo] = []
    dropped = 0
    for model in models:
        if not sane_id(model.id):
            dropped += 1
            continue
        kept.append(_within_limits(model))
    if dropped:
        log.warning("provider.models_dropped", instance=instance, count=dropped, reason="bad id")
    return kept


def _within_limits(model: ModelInfo) -> ModelInfo:
    created = positive_int(model.created, MAX_UNIX_TIME) or 0
    context = positive_int(model.context_length)
    output = positive_int(model.max_output_tokens)
    prices = {
        key: value for key, raw in model.pricing.items() if (value := number(raw)) is not None
    }
    if (
        created == model.created
        and context == model.context_length
        and output == model.max_output_tokens
        and len(prices) == len(model.pricing)
    ):
        return model
    return replace(
        model, created=created, context_length=context, max_output_tokens=output, pricing=prices
    )
