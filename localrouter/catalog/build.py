"""Turn the two public sources into one compact catalog (used by the build script and
`localrouter catalog update`, so the embedded and the updated catalog are made the same way).

Entries keep only what localrouter serves: name, description, created, context_length,
max_output_tokens, pricing (USD per token, OpenRouter's keys), modalities, capabilities,
supported_parameters, deprecated. Empty fields are left out.

The two sources stay apart here (one description per model keeps the file small); `Catalog`
merges what each knows for one model when it is matched.

Embedding models output vectors, not tokens: their output modality is `embeddings`, and the
vector size models.dev gives as the output limit is not taken as max_output_tokens.
"""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from typing import Any

import orjson

from localrouter.providers.base import ModelInfo
from localrouter.providers.parsing import (
    PER_MILLION,
    mapping,
    number,
    per_token_prices,
    positive_int,
    strings,
    text,
)

FORMAT = 1
Entry = dict[str, Any]

# models.dev cost keys -> OpenRouter price keys (models.dev prices are USD per 1M tokens).
_MODELS_DEV_COST = {
    "input": "prompt",
    "output": "completion",
    "cache_read": "input_cache_read",
    "cache_write": "input_cache_write",
}
_MODALITY = {"pdf": "file"}  # models.dev says pdf where OpenRouter says file


# Our catalog providers (models.dev's provider ids) -> the LiteLLM providers of their models.
LITELLM_PROVIDERS = {
    # Azure hosts OpenAI's models; its regional and per-size deployments ("azure:variant") come
    # last, for the ids nothing else holds (o1-preview, dall-e-3).
    "openai": ("openai", "text-completion-openai", "azure", "azure:variant"),
    "anthropic": ("anthropic",),
    "mistral": ("mistral", "codestral"),
    "google": ("gemini",),
    "xai": ("xai",),
    "cohere": ("cohere", "cohere_chat"),
    "perplexity": ("perplexity",),
    "deepseek": ("deepseek",),
    "groq": ("groq",),
    "cerebras": ("cerebras",),
    "deepinfra": ("deepinfra",),
    "togetherai": ("together_ai",),
    "fireworks-ai": ("fireworks_ai",),
    "openrouter": ("openrouter",),
}
# LiteLLM's mode -> what the model does, in our capabilities' words.
_LITELLM_MODES = {
    "embedding": "embedding",
    "image_generation": "image_generation",
    "image_edit": "image_generation",
    "audio_speech": "speech",
    "audio_transcription": "transcription",
    "moderation": "moderation",
    "rerank": "rerank",
    "video_generation": "video_generation",
    "ocr": "ocr",
}
_CHAT_MODES = frozenset({"chat", "completion", "responses", "realtime"})
# LiteLLM providers whose own model ids never hold a "/": one left after the prefix is a
# deployment variant (azure/eu/..., azure/hd/1024-x-1024/...).
_FLAT_PROVIDERS = frozenset({"openai", "text-completion-openai", "azure", "anthropic", "mistral"})


def build_catalog(
    openrouter: Any, models_dev: Any, sources: dict[str, str], litellm: Any = None
) -> dict[str, Any]:
    """The catalog document: OpenRouter's entries by id, models.dev's by provider then id,
    and LiteLLM's cost map by our provider then id (the ids as that provider's API gives
    them, without LiteLLM's provider prefix)."""
    router_items = openrouter.get("data", []) if isinstance(openrouter, dict) else []
    router = {
        item["id"]: _from_openrouter(item)
        for item in router_items
        if isinstance(item, dict) and isinstance(item.get("id"), str)
    }
    providers: dict[str, dict[str, Entry]] = {}
    for provider_id, provider in sorted((models_dev or {}).items()):
        models = provider.get("models") if isinstance(provider, dict) else None
        if not isinstance(models, dict):
            continue
        entries = {
            model_id: _from_models_dev(model_id, item)
            for model_id, item in sorted(models.items())
            if isinstance(item, dict)
        }
        if entries:
            providers[provider_id] = entries
    return {
        "format": FORMAT,
        "sources": sources,
        "openrouter": dict(sorted(router.items())),
        "providers": providers,
        "litellm": _litellm_scopes(litellm),
    }


def _litellm_scopes(cost_map: Any) -> dict[str, dict[str, Entry]]:
    """Per our provider, its LiteLLM providers' entries in their order of precedence (an id
    OpenAI and Azure both list takes OpenAI's). An id that keeps a `/` after the prefix of a
    provider whose ids have none is a deployment variant (a region, an image size): it is
    kept by its last part as `<provider>:variant`."""
    by_theirs: dict[str, dict[str, dict[str, Any]]] = {}
    for key, item in sorted((cost_map or {}).items()):
        theirs = item.get("litellm_provider") if isinstance(item, dict) else None
        if isinstance(theirs, str) and isinstance(key, str):
            model_id = key.removeprefix(f"{theirs}/")
            if "/" in model_id and theirs in _FLAT_PROVIDERS:
                theirs, model_id = f"{theirs}:variant", model_id.rpartition("/")[2]
            by_theirs.setdefault(theirs, {}).setdefault(model_id, item)
    scopes: dict[str, dict[str, Entry]] = {}
    for provider, all_theirs in LITELLM_PROVIDERS.items():
        entries: dict[str, Entry] = {}
        for theirs in all_theirs:
            for model_id, item in sorted(by_theirs.get(theirs, {}).items()):
                if model_id not in entries and (entry := _entry(_from_litellm(model_id, item))):
                    entries[model_id] = entry
        if entries:
            scopes[provider] = entries
    return scopes


def _from_litellm(model_id: str, item: dict[str, Any]) -> ModelInfo:
    mode = item.get("mode")
    chat = mode in _CHAT_MODES
    inputs = ("text", "image") if chat and item.get("supports_vision") is True else ("text",)
    pricing = {
        ours: value
        for theirs, ours in (
            ("input_cost_per_token", "prompt"),
            ("output_cost_per_token", "completion"),
            ("cache_read_input_token_cost", "input_cache_read"),
            ("cache_creation_input_token_cost", "input_cache_write"),
        )
        if (value := number(item.get(theirs))) is not None and value >= 0
    }
    if chat:
        capabilities = _capabilities(
            inputs,
            ("text",),
            tools=item.get("supports_function_calling") is True,
            reasoning=item.get("supports_reasoning") is True,
        )
    else:
        capabilities = [_LITELLM_MODES[mode]] if mode in _LITELLM_MODES else []
    parameters = [
        name
        for name, flag in (
            ("tools", "supports_function_calling"),
            ("response_format", "supports_response_schema"),
            ("reasoning", "supports_reasoning"),
        )
        if chat and item.get(flag) is True
    ]
    outputs = ("text",) if chat else ("embeddings",) if mode == "embedding" else ()
    return ModelInfo(
        id=model_id,
        context_length=positive_int(item.get("max_input_tokens")),
        max_output_tokens=positive_int(item.get("max_output_tokens")) if chat else None,
        pricing=pricing,
        input_modalities=inputs if chat or mode == "embedding" else (),
        output_modalities=outputs,
        capabilities=tuple(capabilities),
        supported_parameters=tuple(parameters),
    )


def serialise(document: dict[str, Any]) -> bytes:
    """Deterministic bytes: sorted keys, gzip without a timestamp."""
    raw = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
    return gzip.compress(raw, compresslevel=9, mtime=0)


def _from_openrouter(item: dict[str, Any]) -> Entry:
    architecture = mapping(item.get("architecture"))
    top = mapping(item.get("top_provider"))
    inputs = strings(architecture.get("input_modalities"))
    outputs = strings(architecture.get("output_modalities"))
    supported = strings(item.get("supported_parameters"))
    capabilities = _capabilities(
        inputs, outputs, tools="tools" in supported, reasoning="reasoning" in supported
    )
    return _entry(
        ModelInfo(
            id=item["id"],
            name=text(item.get("name")),
            description=text(item.get("description")),
            created=positive_int(item.get("created")) or 0,
            context_length=positive_int(item.get("context_length")),
            max_output_tokens=positive_int(top.get("max_completion_tokens")),
            pricing=per_token_prices(item.get("pricing")),
            input_modalities=inputs,
            output_modalities=outputs,
            capabilities=tuple(capabilities),
            supported_parameters=supported,
        )
    )


def _from_models_dev(model_id: str, item: dict[str, Any]) -> Entry:
    limit = mapping(item.get("limit"))
    modalities = mapping(item.get("modalities"))
    inputs = tuple(_MODALITY.get(m, m) for m in strings(modalities.get("input")))
    outputs = tuple(_MODALITY.get(m, m) for m in strings(modalities.get("output")))
    cost = mapping(item.get("cost"))
    pricing = {
        ours: value / PER_MILLION
        for theirs, ours in _MODELS_DEV_COST.items()
        if (value := number(cost.get(theirs))) is not None and value >= 0
    }
    embedding = "embed" in str(item.get("family", "")) or "embed" in str(item.get("id", ""))
    capabilities = (
        ["embedding"]
        if embedding
        else _capabilities(
            inputs,
            outputs,
            tools=item.get("tool_call") is True,
            reasoning=item.get("reasoning") is True,
        )
    )
    return _entry(
        ModelInfo(
            id=model_id,
            name=text(item.get("name")),
            created=_date(item.get("release_date")) or 0,
            context_length=positive_int(limit.get("context")),
            # An embedding model's output limit is its vector size, not a number of tokens.
            max_output_tokens=None if embedding else positive_int(limit.get("output")),
            pricing=pricing,
            input_modalities=inputs,
            output_modalities=("embeddings",) if embedding else outputs,
            capabilities=tuple(capabilities),
            deprecated=item.get("status") == "deprecated",
        )
    )


def _capabilities(
    inputs: tuple[str, ...], outputs: tuple[str, ...], *, tools: bool, reasoning: bool
) -> list[str]:
    found = []
    if "text" in outputs:
        found.append("chat")
    if "image" in inputs:
        found.append("vision")
    if tools:
        found.append("tools")
    if reasoning:
        found.append("reasoning")
    if "image" in outputs:
        found.append("image_generation")
    if "audio" in outputs:
        found.append("audio_generation")
    return found


def _date(value: Any) -> int | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value if len(value) > 7 else f"{value}-01")
    except ValueError:
        return None
    return int(parsed.replace(tzinfo=parsed.tzinfo or UTC).timestamp())


def _entry(model: ModelInfo) -> Entry:
    """A catalog entry is a ModelInfo's plain form without its id (the id is the key)."""
    entry = model.plain()
    del entry["id"]
    return entry
