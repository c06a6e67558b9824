"""Cohere: `GET /v1/models`, Bearer, paginated by page_token."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from yarl import URL

from localrouter.providers.base import Endpoint, ModelInfo, ProviderKind, ProviderSpec, Wire
from localrouter.providers.paging import paged_models
from localrouter.providers.parsing import field, positive_int, strings, text

if TYPE_CHECKING:
    from localrouter.config.settings import ProviderSettings
    from localrouter.upstream.client import UpstreamClient

_ENDPOINTS = {
    "chat": "chat",
    "generate": "completion",
    "embed": "embedding",
    "rerank": "rerank",
    "classify": "classification",
}


class CohereProvider:
    def __init__(self, settings: ProviderSettings, spec: ProviderSpec) -> None:
        self._url = settings.resolved_base_url.rstrip("/") + "/models"
        self._headers = spec.list_headers(settings)
        self._max_pages = settings.max_pages

    async def list_models(self, http: UpstreamClient) -> list[ModelInfo]:
        return await paged_models(
            http,
            self._url,
            headers=self._headers,
            params={"page_size": 1000},
            items_key="models",
            next_param="page_token",
            next_token=lambda body: text(field(body, "next_page_token")),
            parse=_parse,
            max_pages=self._max_pages,
        )


def _parse(item: dict[str, Any]) -> ModelInfo | None:
    name = text(item.get("name"))
    if name is None:
        return None
    endpoints = strings(item.get("endpoints"))
    capabilities = tuple(dict.fromkeys(_ENDPOINTS[e] for e in endpoints if e in _ENDPOINTS))
    if item.get("supports_vision"):
        capabilities += ("vision",)
    return ModelInfo(
        id=name,
        context_length=positive_int(item.get("context_length")),
        capabilities=capabilities,
        input_modalities=("text", "image") if item.get("supports_vision") else ("text",),
        output_modalities=("text",) if "chat" in capabilities else (),
        deprecated=item.get("is_deprecated") is True,
    )


def compatibility_base(settings: ProviderSettings) -> str:
    """Cohere's OpenAI-compatible API lives at /compatibility/v1 on the API host."""
    return str(URL(settings.resolved_base_url).with_path("/compatibility/v1"))


SPEC = ProviderSpec(
    type="cohere",
    factory=CohereProvider,
    kind=ProviderKind.CLOUD,
    default_base_url="https://api.cohere.com/v1",
    key_env="COHERE_API_KEY",
    key_required=True,
    catalog_provider="cohere",
    wires={Wire.CHAT: Endpoint(base=compatibility_base)},
)
