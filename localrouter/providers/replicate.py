"""Replicate: image, video and audio models. Bearer key required; absolute `next` page URLs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from yarl import URL

from localrouter.base.errors import UpstreamError
from localrouter.providers.base import ModelInfo, ProviderKind, ProviderSpec
from localrouter.providers.parsing import field, model_items, parse_items, text, too_many_pages

if TYPE_CHECKING:
    from localrouter.config.settings import ProviderSettings
    from localrouter.upstream.client import UpstreamClient

# Keywords in a model's name or description, first match wins: Replicate says nothing else.
_KEYWORDS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("video",), "video_generation"),
    (("upscal", "super-resolution"), "image_upscaling"),
    (("speech", "tts", "voice"), "speech"),
    (("music", "audio", "sound"), "audio_generation"),
    (("whisper", "transcri"), "transcription"),
    (("image", "diffusion", "flux", "sdxl", "photo", "paint"), "image_generation"),
    (("llama", "language model", "chat", "instruct"), "chat"),
)


class ReplicateProvider:
    def __init__(self, settings: ProviderSettings, spec: ProviderSpec) -> None:
        self._url = URL(settings.resolved_base_url.rstrip("/") + "/models")
        self._headers = spec.list_headers(settings)
        self._max_pages = settings.max_pages

    async def list_models(self, http: UpstreamClient) -> list[ModelInfo]:
        url: URL | None = self._url
        models: list[ModelInfo] = []
        for _ in range(self._max_pages):
            assert url is not None
            body = await http.get_json(url, headers=self._headers)
            models += await parse_items(model_items(body, "results"), _parse)
            url = self._next_page(field(body, "next"))
            if url is None:
                return models
        raise too_many_pages(self._max_pages)

    def _next_page(self, link: Any) -> URL | None:
        if not isinstance(link, str) or not link:
            return None
        target = self._url.join(URL(link))
        if target.origin() != self._url.origin():  # the key must not travel to another host
            raise UpstreamError(f"refusing to follow a next page on another host: {target.host}")
        return target


def infer_capability(name: str, description: str) -> str | None:
    haystack = f"{name} {description}".lower()
    return next((kind for words, kind in _KEYWORDS if any(w in haystack for w in words)), None)


def _parse(item: dict[str, Any]) -> ModelInfo | None:
    owner, name = text(item.get("owner")), text(item.get("name"))
    if owner is None or name is None:
        return None
    description = text(item.get("description"))
    capability = infer_capability(name, description or "")
    return ModelInfo(
        id=f"{owner}/{name}",
        description=description,
        capabilities=(capability,) if capability else (),
    )


SPEC = ProviderSpec(
    wires={},  # image, video and audio models: no chat endpoint
    type="replicate",
    factory=ReplicateProvider,
    kind=ProviderKind.CLOUD,
    default_base_url="https://api.replicate.com/v1",
    key_env="REPLICATE_API_TOKEN",
    key_required=True,
)
