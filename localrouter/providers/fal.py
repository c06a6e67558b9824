"""fal.ai: image/video models. `GET /v1/models`, `Authorization: Key ...` (optional), cursor pages.

An instance lists the active models of the categories in its `categories` option.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from localrouter.providers.base import (
    Auth,
    DefaultInclusion,
    ModelInfo,
    ProviderKind,
    ProviderSpec,
)
from localrouter.providers.paging import paged_models
from localrouter.providers.parsing import field, text, unix_time

if TYPE_CHECKING:
    from localrouter.config.settings import ProviderSettings
    from localrouter.upstream.client import UpstreamClient

DEFAULT_CATEGORIES = ("text-to-image", "image-to-image", "text-to-video", "image-to-video")
_CAPABILITY = {
    "text-to-image": "image_generation",
    "image-to-image": "image_editing",
    "text-to-video": "video_generation",
    "image-to-video": "video_generation",
    "video-to-video": "video_editing",
    "text-to-speech": "speech",
    "text-to-audio": "audio_generation",
    "speech-to-text": "transcription",
}


class FalProvider:
    def __init__(self, settings: ProviderSettings, spec: ProviderSpec) -> None:
        self._url = settings.resolved_base_url.rstrip("/") + "/models"
        self._headers = spec.list_headers(settings)
        self._categories = tuple(settings.categories or DEFAULT_CATEGORIES)
        self._max_pages = settings.max_pages

    async def list_models(self, http: UpstreamClient) -> list[ModelInfo]:
        models: dict[str, ModelInfo] = {}
        for category in self._categories:  # max_pages bounds each category's pages
            listed = await paged_models(
                http,
                self._url,
                headers=self._headers,
                params={"status": "active", "limit": 100, "category": category},
                items_key="models",
                next_param="cursor",
                next_token=_next_cursor,
                parse=partial(_parse, requested=category),
                max_pages=self._max_pages,
            )
            for model in listed:
                models.setdefault(model.id, model)
        return list(models.values())


def _next_cursor(body: Any) -> str | None:
    return text(field(body, "next_cursor")) if field(body, "has_more") is True else None


def _parse(item: dict[str, Any], requested: str) -> ModelInfo | None:
    endpoint = text(item.get("endpoint_id"))
    metadata = item.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    category = text(metadata.get("category")) or requested
    status = text(metadata.get("status"))
    if endpoint is None or category != requested or status not in (None, "active"):
        return None
    source, _, target = category.partition("-to-")
    capability = _CAPABILITY.get(category)
    return ModelInfo(
        id=endpoint,
        name=text(metadata.get("display_name")),
        description=text(metadata.get("description")),
        created=unix_time(metadata.get("updated_at")),
        input_modalities=(source,) if target else (),
        output_modalities=(target,) if target else (),
        capabilities=(capability,) if capability else (category,),
    )


SPEC = ProviderSpec(
    auth=Auth(scheme="Key"),
    wires={},  # image, video and audio models: no chat endpoint
    type="fal",
    factory=FalProvider,
    kind=ProviderKind.CLOUD,
    default_base_url="https://api.fal.ai/v1",
    key_env="FAL_KEY",
    default_inclusion=DefaultInclusion.ALWAYS,
)
