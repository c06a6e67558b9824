"""Anthropic: `GET /v1/models`, x-api-key + anthropic-version, paginated by after_id."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from localrouter.providers.base import (
    ANTHROPIC_AUTH,
    ANTHROPIC_MESSAGES,
    Endpoint,
    ModelInfo,
    ProviderKind,
    ProviderSpec,
    Wire,
)
from localrouter.providers.paging import paged_models
from localrouter.providers.parsing import field, text, unix_time

if TYPE_CHECKING:
    from localrouter.config.settings import ProviderSettings
    from localrouter.upstream.client import UpstreamClient


class AnthropicProvider:
    def __init__(self, settings: ProviderSettings, spec: ProviderSpec) -> None:
        self._url = settings.resolved_base_url.rstrip("/") + "/models"
        self._headers = spec.list_headers(settings)
        self._max_pages = settings.max_pages

    async def list_models(self, http: UpstreamClient) -> list[ModelInfo]:
        return await paged_models(
            http,
            self._url,
            headers=self._headers,
            params={"limit": 1000},
            items_key="data",
            next_param="after_id",
            next_token=_next_token,
            parse=_parse,
            max_pages=self._max_pages,
        )


def _next_token(body: Any) -> str | None:
    return text(field(body, "last_id")) if field(body, "has_more") is True else None


def _parse(item: dict[str, Any]) -> ModelInfo | None:
    model_id = text(item.get("id"))
    if model_id is None:
        return None
    return ModelInfo(
        id=model_id,
        name=text(item.get("display_name")),
        created=unix_time(item.get("created_at")),
        input_modalities=("text", "image"),
        output_modalities=("text",),
        capabilities=("chat", "vision", "tools"),
    )


SPEC = ProviderSpec(
    type="anthropic",
    factory=AnthropicProvider,
    kind=ProviderKind.CLOUD,
    default_base_url="https://api.anthropic.com/v1",
    key_env="ANTHROPIC_API_KEY",
    key_required=True,
    catalog_provider="anthropic",
    auth=ANTHROPIC_AUTH,
    wires={Wire.CHAT: Endpoint(), Wire.MESSAGES: ANTHROPIC_MESSAGES},
)
