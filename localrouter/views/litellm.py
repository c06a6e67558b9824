"""The list as a LiteLLM proxy's `GET /v1/model/info` (one row per deployment) and
`/model_group/info` (one row per model name) give it, for Cline and Roo, which read context
windows, prices and `supports_*` flags there. Prices are USD per token as numbers; what is not
known is null, as LiteLLM writes it."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from localrouter.http.bodies import Body
from localrouter.lists.entries import capabilities_of

if TYPE_CHECKING:
    from localrouter.views.merged import MergedModels

# Our capabilities -> LiteLLM's mode, for models that do something else than chat.
_MODES = {
    "embedding": "embedding",
    "image_generation": "image_generation",
    "speech": "audio_speech",
    "audio_generation": "audio_speech",
    "transcription": "audio_transcription",
    "moderation": "moderation",
    "rerank": "rerank",
    "video_generation": "video_generation",
    "ocr": "ocr",
}
_SCHEMA_PARAMETERS = ("response_format", "structured_outputs")


def litellm_info(merged: MergedModels) -> Body:
    return Body.of({"data": [deployment(entry) for entry in merged.by_id.values()]})


def litellm_groups(merged: MergedModels) -> Body:
    return Body.of({"data": [group(entry) for entry in merged.by_id.values()]})


def deployment(entry: dict[str, Any]) -> dict[str, Any]:
    upstream = str(entry.get("upstream_id") or entry["id"])
    facts = _facts(entry)
    return {
        "model_name": entry["id"],
        # As LiteLLM would reach it: through localrouter's OpenAI-compatible API.
        "litellm_params": {"model": f"openai/{entry['id']}"},
        "model_info": {
            "id": hashlib.sha256(entry["id"].encode()).hexdigest(),
            "key": upstream,
            "max_tokens": facts["max_output_tokens"] or facts["max_input_tokens"],
            **facts,
            "cache_read_input_token_cost": _price(entry, "input_cache_read"),
            "cache_creation_input_token_cost": _price(entry, "input_cache_write"),
            "litellm_provider": entry.get("provider"),
            "supports_system_messages": None,
            "supports_parallel_function_calling": None,
            "supported_openai_params": entry.get("supported_parameters") or None,
        },
    }


def group(entry: dict[str, Any]) -> dict[str, Any]:
    facts = _facts(entry)
    del facts["supports_response_schema"]  # not a field of a model group
    return {
        "model_group": entry["id"],
        "providers": [entry.get("provider")],
        **facts,
        "input_cost_per_pixel": None,
        "tpm": None,
        "rpm": None,
        "itpm": None,
        "otpm": None,
        "supports_parallel_function_calling": False,
        "supports_web_search": False,
        "supports_url_context": False,
        "supports_fast_mode": False,
        "supported_reasoning_efforts": [],
        "supported_openai_params": entry.get("supported_parameters") or [],
        "configurable_clientside_auth_params": None,
        "is_public_model_group": False,
        "health_status": None,
        "health_response_time": None,
        "health_checked_at": None,
    }


def _facts(entry: dict[str, Any]) -> dict[str, Any]:
    """What both shapes say of a model: limits, prices, mode and the supports_* flags."""
    capabilities = capabilities_of(entry)
    parameters = entry.get("supported_parameters") or ()
    return {
        "max_input_tokens": entry.get("context_length"),
        "max_output_tokens": entry.get("max_output_tokens"),
        "input_cost_per_token": _price(entry, "prompt"),
        "output_cost_per_token": _price(entry, "completion"),
        "mode": mode_of(capabilities),
        "supports_function_calling": "tools" in capabilities,
        "supports_vision": "vision" in capabilities,
        "supports_reasoning": "reasoning" in capabilities,
        "supports_response_schema": any(name in parameters for name in _SCHEMA_PARAMETERS),
    }


def mode_of(capabilities: Any) -> str:
    """`chat` for a chat model, else what the model does (LiteLLM's `mode`)."""
    if "chat" in capabilities:
        return "chat"
    for capability in capabilities:
        if capability in _MODES:
            return _MODES[capability]
    return "chat"


def _price(entry: dict[str, Any], kind: str) -> float | None:
    text = (entry.get("pricing") or {}).get(kind)
    return float(text) if text is not None else None
