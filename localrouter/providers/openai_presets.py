"""The OpenAI-shaped providers, one row each, and the few fields each adds to the plain shape."""

from __future__ import annotations

from functools import partial
from typing import Any

from localrouter.providers.base import (
    DefaultInclusion,
    Endpoint,
    ProviderKind,
    ProviderSpec,
    Wire,
)
from localrouter.providers.openai_compat import Extras, OpenAICompatProvider, OpenAIShape
from localrouter.providers.parsing import PER_MILLION, number, positive_int, strings, text

_MISTRAL_CAPABILITIES = {
    "completion_chat": "chat",
    "completion_fim": "fim",
    "function_calling": "tools",
    "vision": "vision",
    "classification": "classification",
}
_TOGETHER_TYPES = {
    "chat": ("chat",),
    "language": ("completion",),
    "code": ("completion",),
    "image": ("image_generation",),
    "video": ("video_generation",),
    "embedding": ("embedding",),
    "moderation": ("moderation",),
    "rerank": ("rerank",),
    "audio": ("speech",),
    "transcribe": ("transcription",),
}


def mistral_extras(item: dict[str, Any]) -> Extras:
    flags = item.get("capabilities")
    flags = flags if isinstance(flags, dict) else {}
    capabilities = tuple(name for key, name in _MISTRAL_CAPABILITIES.items() if flags.get(key))
    return {
        "capabilities": capabilities,
        "input_modalities": ("text", "image") if flags.get("vision") else ("text",),
        "output_modalities": ("text",),
        "aliases": strings(item.get("aliases")),
        "deprecated": item.get("deprecation") is not None,
    }


def together_extras(item: dict[str, Any]) -> Extras:
    pricing = item.get("pricing")
    pricing = pricing if isinstance(pricing, dict) else {}
    prices = {
        ours: value / PER_MILLION
        for ours, theirs in (("prompt", "input"), ("completion", "output"))
        if (value := number(pricing.get(theirs))) is not None and value >= 0
    }
    return {
        "name": text(item.get("display_name")),
        "capabilities": _TOGETHER_TYPES.get(str(item.get("type")), ()),
        "pricing": prices,
    }


def deepinfra_extras(item: dict[str, Any]) -> Extras:
    metadata = item.get("metadata")
    if not isinstance(metadata, dict):
        return {}
    pricing = metadata.get("pricing")
    pricing = pricing if isinstance(pricing, dict) else {}
    prices = {
        ours: value / PER_MILLION
        for ours, theirs in (("prompt", "input_tokens"), ("completion", "output_tokens"))
        if (value := number(pricing.get(theirs))) is not None and value >= 0
    }
    tags = strings(metadata.get("tags"))
    capabilities = ["chat"] if prices else []
    if "vision" in tags:
        capabilities.append("vision")
    if "reasoning" in tags or "reasoning_effort" in tags:
        capabilities.append("reasoning")
    return {
        "description": text(metadata.get("description")),
        "context_length": positive_int(metadata.get("context_length")),
        "max_output_tokens": positive_int(metadata.get("max_tokens")),
        "pricing": prices,
        "capabilities": tuple(capabilities),
        "input_modalities": ("text", "image") if "vision" in tags else (),
    }


def _preset(type_name: str, shape: OpenAIShape | None = None, **spec: Any) -> ProviderSpec:
    factory = partial(OpenAICompatProvider, shape=shape or OpenAIShape())
    return ProviderSpec(type=type_name, factory=factory, **spec)


def _cloud(type_name: str, base_url: str, key_env: str, **extra: Any) -> ProviderSpec:
    extra.setdefault("catalog_provider", type_name)
    return _preset(
        type_name,
        kind=ProviderKind.CLOUD,
        default_base_url=base_url,
        key_env=key_env,
        key_required=True,
        **extra,
    )


OPENAI_PRESETS: tuple[ProviderSpec, ...] = (
    _cloud(
        "openai",
        "https://api.openai.com/v1",
        "OPENAI_API_KEY",
        wires={Wire.CHAT: Endpoint(), Wire.RESPONSES: Endpoint()},
        prompt_cache_key=True,
    ),
    _cloud("groq", "https://api.groq.com/openai/v1", "GROQ_API_KEY"),
    _cloud(
        "mistral",
        "https://api.mistral.ai/v1",
        "MISTRAL_API_KEY",
        shape=OpenAIShape(extras=mistral_extras),
    ),
    _cloud(
        "together",
        "https://api.together.xyz/v1",
        "TOGETHER_API_KEY",
        shape=OpenAIShape(extras=together_extras),
        catalog_provider="togetherai",
    ),
    _cloud("cerebras", "https://api.cerebras.ai/v1", "CEREBRAS_API_KEY"),
    _cloud("xai", "https://api.x.ai/v1", "XAI_API_KEY"),
    _cloud(
        "deepinfra",
        "https://api.deepinfra.com/v1/openai",
        "DEEPINFRA_API_KEY",
        shape=OpenAIShape(extras=deepinfra_extras),
    ),
    _preset(
        "openrouter",
        OpenAIShape(price_scale=1.0),
        kind=ProviderKind.CLOUD,
        default_base_url="https://openrouter.ai/api/v1",
        key_env="OPENROUTER_API_KEY",
        default_inclusion=DefaultInclusion.ALWAYS,
        catalog_provider="openrouter",
        cache_markers=True,  # cache_control on chat content parts, for Anthropic and Gemini
    ),
    _preset(
        "openai_compatible",
        kind=ProviderKind.BY_URL,
        default_inclusion=DefaultInclusion.NEVER,
    ),
)
