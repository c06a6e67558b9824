"""Tolerant readers for upstream JSON: wrong types become "unknown", never an exception."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from localrouter.errors import UpstreamError

PER_MILLION = 1_000_000.0


def model_items(data: Any, *keys: str) -> list[dict[str, Any]]:
    """The list of model objects in a body: a bare array, or the first list under one of `keys`."""
    items: Any = data
    if isinstance(data, Mapping):
        items = next((data[key] for key in keys if isinstance(data.get(key), list)), None)
    if not isinstance(items, list):
        found = type(data).__name__ if not isinstance(data, Mapping) else f"keys {sorted(data)[:8]}"
        raise UpstreamError(f"the upstream answered with something not a model list ({found})")
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


def positive_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) and value > 0:
        return int(value)
    if isinstance(value, str) and value.isdigit():
        return int(value) or None
    return None


def number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def unix_time(value: Any) -> int:
    """Seconds since the epoch from an int or an RFC 3339 string; 0 when unknown."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return int(value)
    if isinstance(value, str):
        try:
            return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
        except ValueError:
            return 0
    return 0


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
