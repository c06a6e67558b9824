"""LM Studio: the richer `GET {host}/api/v0/models` when the server has it, else `/v1/models`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from localrouter.base.errors import UpstreamError
from localrouter.providers.base import DefaultInclusion, ModelInfo, ProviderKind, ProviderSpec
from localrouter.providers.openai_compat import OpenAICompatProvider
from localrouter.providers.parsing import model_items, parse_items, positive_int, text

if TYPE_CHECKING:
    from localrouter.config.settings import ProviderSettings
    from localrouter.upstream.client import UpstreamClient

_TYPES = {
    "llm": (("chat",), ("text",)),
    "vlm": (("chat", "vision"), ("text", "image")),
    "embeddings": (("embedding",), ("text",)),
}


class LMStudioProvider:
    def __init__(self, settings: ProviderSettings, spec: ProviderSpec) -> None:
        self._plain = OpenAICompatProvider(settings, spec)
        host = settings.resolved_base_url.rstrip("/").removesuffix("/v1")
        self._rich_url = host + "/api/v0/models"
        self._headers = spec.list_headers(settings)

    async def list_models(self, http: UpstreamClient) -> list[ModelInfo]:
        try:
            body = await http.get_json(self._rich_url, headers=self._headers)
        except UpstreamError as exc:
            if exc.status != 404:  # an older server without /api/v0 answers 404
                raise
            return await self._plain.list_models(http)
        return await parse_items(model_items(body, "data"), _parse)


def _parse(item: dict[str, Any]) -> ModelInfo | None:
    model_id = text(item.get("id"))
    if model_id is None:
        return None
    capabilities, inputs = _TYPES.get(str(item.get("type")), (("chat",), ("text",)))
    details = [text(item.get(key)) for key in ("publisher", "arch", "quantization", "state")]
    return ModelInfo(
        id=model_id,
        description=", ".join(part for part in details if part) or None,
        context_length=positive_int(item.get("max_context_length")),
        capabilities=capabilities,
        input_modalities=inputs,
        output_modalities=("text",) if "chat" in capabilities else (),
        active=item.get("state") != "not-loaded",
    )


SPEC = ProviderSpec(
    type="lmstudio",
    factory=LMStudioProvider,
    kind=ProviderKind.LOCAL,
    default_base_url="http://127.0.0.1:1234/v1",
    default_inclusion=DefaultInclusion.ALWAYS,
    stream_usage=False,  # LM Studio answers a 400 to stream_options
)
