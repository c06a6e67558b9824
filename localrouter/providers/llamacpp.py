"""llama.cpp's server (llama-server, and llamafile, which is built on it): its OpenAI-shaped
`GET {base}/models`, with what `GET {host}/props` adds: the context the server was started
with (`default_generation_settings.n_ctx`, which is what a call may use, not the model's
training length) and whether it takes images. `/props` is optional: an older server, or one
that refuses it, still lists its models."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from localrouter.base.errors import UpstreamError
from localrouter.providers.base import DefaultInclusion, ModelInfo, ProviderKind, ProviderSpec
from localrouter.providers.openai_compat import OpenAICompatProvider
from localrouter.providers.parsing import positive_int

if TYPE_CHECKING:
    from localrouter.config.settings import ProviderSettings
    from localrouter.upstream.client import UpstreamClient


class LlamaCppProvider:
    def __init__(self, settings: ProviderSettings, spec: ProviderSpec) -> None:
        self._plain = OpenAICompatProvider(settings, spec)
        host = settings.resolved_base_url.rstrip("/").removesuffix("/v1")
        self._props_url = host + "/props"
        self._headers = spec.list_headers(settings)

    async def list_models(self, http: UpstreamClient) -> list[ModelInfo]:
        models = await self._plain.list_models(http)
        try:
            props = await http.get_json(self._props_url, headers=self._headers)
        except UpstreamError:
            return models
        return [_with_props(model, props) for model in models]


def _with_props(model: ModelInfo, props: Any) -> ModelInfo:
    if not isinstance(props, dict):
        return model
    settings = props.get("default_generation_settings")
    context = positive_int(settings.get("n_ctx")) if isinstance(settings, dict) else None
    context = context or positive_int(props.get("n_ctx"))
    modalities = props.get("modalities")
    vision = isinstance(modalities, dict) and modalities.get("vision") is True
    capabilities = model.capabilities or ("chat",)
    if vision and "vision" not in capabilities:
        capabilities = (*capabilities, "vision")
    return replace(
        model,
        context_length=context or model.context_length,
        capabilities=capabilities,
        input_modalities=("text", "image") if vision else model.input_modalities or ("text",),
        output_modalities=model.output_modalities or ("text",),
    )


SPEC = ProviderSpec(
    type="llamacpp",
    factory=LlamaCppProvider,
    kind=ProviderKind.BY_URL,
    default_base_url="http://127.0.0.1:8080/v1",
    default_inclusion=DefaultInclusion.NEVER,  # discovery finds a running one
)
