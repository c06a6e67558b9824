"""Ollama: `GET /api/tags`, then `POST /api/show` per model for context length and capabilities."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from localrouter.base.errors import UpstreamError
from localrouter.providers.base import (
    DefaultInclusion,
    Endpoint,
    ModelInfo,
    ProviderKind,
    ProviderSpec,
    Wire,
    suffixed_base,
)
from localrouter.providers.parsing import (
    model_items,
    parse_items,
    positive_int,
    strings,
    text,
    unix_time,
)

if TYPE_CHECKING:
    from localrouter.config.settings import ProviderSettings
    from localrouter.upstream.client import UpstreamClient

SHOW_CONCURRENCY = 4
_CAPABILITIES = {
    "completion": "chat",
    "tools": "tools",
    "vision": "vision",
    "embedding": "embedding",
    "thinking": "reasoning",
    "insert": "fim",
}


class OllamaProvider:
    def __init__(self, settings: ProviderSettings, spec: ProviderSpec) -> None:
        base = settings.resolved_base_url.rstrip("/").removesuffix("/v1")
        self._tags_url = base + "/api/tags"
        self._show_url = base + "/api/show"
        self._headers = spec.list_headers(settings)

    async def list_models(self, http: UpstreamClient) -> list[ModelInfo]:
        body = await http.get_json(self._tags_url, headers=self._headers)
        listed = await parse_items(model_items(body, "models"), _parse_tag)
        limit = asyncio.Semaphore(SHOW_CONCURRENCY)

        async def detailed(model: ModelInfo) -> ModelInfo:
            async with limit:
                try:
                    shown = await http.post_json(
                        self._show_url, {"model": model.id}, headers=self._headers
                    )
                except UpstreamError:
                    return model  # listed without the details rather than not at all
            return _with_details(model, shown)

        return list(await asyncio.gather(*(detailed(model) for model in listed)))


def _parse_tag(item: dict[str, Any]) -> ModelInfo | None:
    name = text(item.get("name")) or text(item.get("model"))
    if name is None:
        return None
    details = item.get("details")
    details = details if isinstance(details, dict) else {}
    size = text(details.get("parameter_size"))
    quantization = text(details.get("quantization_level"))
    described = ", ".join(part for part in (size, quantization) if part)
    return ModelInfo(
        id=name,
        description=described or None,
        created=unix_time(item.get("modified_at")),
    )


def _with_details(model: ModelInfo, shown: Any) -> ModelInfo:
    if not isinstance(shown, dict):
        return model
    info = shown.get("model_info")
    info = info if isinstance(info, dict) else {}
    architecture = text(info.get("general.architecture"))
    context = positive_int(info.get(f"{architecture}.context_length")) if architecture else None
    reported = strings(shown.get("capabilities"))
    capabilities = tuple(_CAPABILITIES[c] for c in reported if c in _CAPABILITIES)
    return replace(
        model,
        context_length=context or model.context_length,
        capabilities=capabilities or model.capabilities,
        input_modalities=("text", "image") if "vision" in reported else ("text",),
        output_modalities=("text",) if "completion" in reported else (),
    )


SPEC = ProviderSpec(
    type="ollama",
    factory=OllamaProvider,
    kind=ProviderKind.LOCAL,
    default_base_url="http://127.0.0.1:11434",
    default_inclusion=DefaultInclusion.ALWAYS,
    wires={Wire.CHAT: Endpoint(base=suffixed_base("/v1")), Wire.OLLAMA: Endpoint()},
)
