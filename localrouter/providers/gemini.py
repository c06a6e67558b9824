"""Gemini: `GET /v1beta/models`, x-goog-api-key header (never the key in the URL), pageToken."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from localrouter.providers.base import (
    Auth,
    Endpoint,
    ModelInfo,
    ProviderKind,
    ProviderSpec,
    Wire,
    suffixed_base,
)
from localrouter.providers.paging import paged_models
from localrouter.providers.parsing import field, positive_int, strings, text

if TYPE_CHECKING:
    from localrouter.config.settings import ProviderSettings
    from localrouter.upstream.client import UpstreamClient

_METHODS = {"generateContent": "chat", "embedContent": "embedding"}


class GeminiProvider:
    def __init__(self, settings: ProviderSettings, spec: ProviderSpec) -> None:
        self._url = settings.resolved_base_url.rstrip("/") + "/models"
        self._headers = spec.list_headers(settings)
        self._max_pages = settings.max_pages

    async def list_models(self, http: UpstreamClient) -> list[ModelInfo]:
        return await paged_models(
            http,
            self._url,
            headers=self._headers,
            params={"pageSize": 1000},
            items_key="models",
            next_param="pageToken",
            next_token=lambda body: text(field(body, "nextPageToken")),
            parse=_parse,
            max_pages=self._max_pages,
        )


def _parse(item: dict[str, Any]) -> ModelInfo | None:
    name = text(item.get("name"))
    methods = strings(item.get("supportedGenerationMethods"))
    capabilities = tuple(dict.fromkeys(_METHODS[m] for m in methods if m in _METHODS))
    if name is None or not capabilities:
        return None
    chat = "chat" in capabilities
    return ModelInfo(
        id=name.removeprefix("models/"),
        name=text(item.get("displayName")),
        description=text(item.get("description")),
        context_length=positive_int(item.get("inputTokenLimit")),
        max_output_tokens=positive_int(item.get("outputTokenLimit")) if chat else None,
        input_modalities=("text", "image") if chat else ("text",),
        output_modalities=("text",) if chat else (),
        capabilities=(*capabilities, "vision") if chat else capabilities,
    )


SPEC = ProviderSpec(
    type="gemini",
    factory=GeminiProvider,
    kind=ProviderKind.CLOUD,
    default_base_url="https://generativelanguage.googleapis.com/v1beta",
    key_env="GEMINI_API_KEY",
    key_required=True,
    catalog_provider="google",
    auth=Auth(header="x-goog-api-key", scheme=None),  # never the key in the URL
    wires={Wire.CHAT: Endpoint(base=suffixed_base("/openai"))},
)
