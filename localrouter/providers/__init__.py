"""PROVIDERS: the explicit table from a config `type` to its ProviderSpec."""

from __future__ import annotations

from localrouter.providers.base import ProviderSpec
from localrouter.providers.openai_presets import OPENAI_PRESETS

PROVIDERS: dict[str, ProviderSpec] = {spec.type: spec for spec in (*OPENAI_PRESETS,)}

__all__ = ["PROVIDERS", "ProviderSpec"]
