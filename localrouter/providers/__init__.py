"""PROVIDERS: the explicit table from a config `type` to its ProviderSpec."""

from __future__ import annotations

from localrouter.providers import (
    anthropic,
    cohere,
    fal,
    gemini,
    llamacpp,
    lmstudio,
    ollama,
    replicate,
)
from localrouter.providers.base import ProviderSpec
from localrouter.providers.openai_presets import OPENAI_PRESETS
from localrouter.providers.static import PERPLEXITY

PROVIDERS: dict[str, ProviderSpec] = {
    spec.type: spec
    for spec in (
        *OPENAI_PRESETS,
        lmstudio.SPEC,
        llamacpp.SPEC,
        anthropic.SPEC,
        gemini.SPEC,
        ollama.SPEC,
        cohere.SPEC,
        replicate.SPEC,
        fal.SPEC,
        PERPLEXITY,
    )
}

__all__ = ["PROVIDERS", "ProviderSpec"]
