"""Providers without a model-list endpoint: a fixed list; the catalog fills in the details."""

from __future__ import annotations

from typing import TYPE_CHECKING

from localrouter.providers.base import ModelInfo, ProviderKind, ProviderSpec

if TYPE_CHECKING:
    from localrouter.config.settings import ProviderSettings
    from localrouter.upstream.client import UpstreamClient


class StaticProvider:
    def __init__(self, settings: ProviderSettings, spec: ProviderSpec) -> None:
        self._models = [
            ModelInfo(id=model_id, capabilities=("chat",)) for model_id in spec.static_models
        ]

    async def list_models(self, http: UpstreamClient) -> list[ModelInfo]:
        return list(self._models)


PERPLEXITY = ProviderSpec(
    type="perplexity",
    factory=StaticProvider,
    kind=ProviderKind.STATIC,
    default_base_url="https://api.perplexity.ai",
    key_env="PERPLEXITY_API_KEY",
    key_required=True,
    catalog_provider="perplexity",
    static_models=(
        "sonar",
        "sonar-pro",
        "sonar-reasoning",
        "sonar-reasoning-pro",
        "sonar-deep-research",
    ),
)
