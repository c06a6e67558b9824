"""The adapter for every provider that serves an OpenAI-shaped `GET {base}/models`.

The presets (one row per provider type) are in openai_presets.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from localrouter.providers.base import ModelInfo, ProviderSpec
from localrouter.providers.parsing import (
    model_items,
    parse_items,
    per_token_prices,
    positive_int,
    strings,
    text,
    unix_time,
)

if TYPE_CHECKING:
    from localrouter.config.settings import ProviderSettings
    from localrouter.upstream.client import UpstreamClient


# ModelInfo fields a provider's own extra keys fill in; empty values leave the plain ones.
Extras = dict[str, Any]


@dataclass(frozen=True, slots=True)
class OpenAIShape:
    """How one OpenAI-shaped provider differs from the plain shape."""

    # Divide the provider's prices by this to get USD per token; None: its prices are not read.
    price_scale: float | None = None
    extras: Callable[[dict[str, Any]], Extras] | None = None


class OpenAICompatProvider:
    def __init__(
        self, settings: ProviderSettings, spec: ProviderSpec, shape: OpenAIShape = OpenAIShape()
    ) -> None:
        base_url = settings.base_url or spec.default_base_url
        assert base_url is not None, "config validation guarantees a base_url"
        self._models_url = base_url.rstrip("/") + "/models"
        self._headers = spec.list_headers(settings)
        self._shape = shape

    async def list_models(self, http: UpstreamClient) -> list[ModelInfo]:
        body = await http.get_json(self._models_url, headers=self._headers)
        return await parse_items(model_items(body, "data", "result", "models"), self._parse)

    def _parse(self, item: dict[str, Any]) -> ModelInfo | None:
        model_id = text(item.get("id"))
        if model_id is None:
            return None
        architecture = item.get("architecture")
        if not isinstance(architecture, dict):
            architecture = {}
        top_provider = item.get("top_provider")
        if not isinstance(top_provider, dict):
            top_provider = {}
        input_modalities = strings(architecture.get("input_modalities"))
        output_modalities = strings(architecture.get("output_modalities"))
        supported = strings(item.get("supported_parameters"))
        scale = self._shape.price_scale
        model = ModelInfo(
            id=model_id,
            name=text(item.get("name")) or text(item.get("display_name")),
            description=text(item.get("description")),
            created=unix_time(item.get("created")),
            context_length=positive_int(item.get("context_length"))
            or positive_int(item.get("context_window"))
            or positive_int(item.get("max_context_length"))
            or positive_int(item.get("max_model_len")),  # vLLM's
            max_output_tokens=positive_int(top_provider.get("max_completion_tokens"))
            or positive_int(item.get("max_completion_tokens")),
            pricing=per_token_prices(item.get("pricing"), scale) if scale else {},
            input_modalities=input_modalities,
            output_modalities=output_modalities,
            capabilities=_capabilities(input_modalities, output_modalities, supported),
            supported_parameters=supported,
            active=item.get("active") is not False,
        )
        if self._shape.extras is not None:
            found = {key: value for key, value in self._shape.extras(item).items() if value}
            model = replace(model, **found)
        return model


def _capabilities(
    inputs: tuple[str, ...], outputs: tuple[str, ...], supported: tuple[str, ...]
) -> tuple[str, ...]:
    found: list[str] = []
    if "text" in outputs:
        found.append("chat")
    if "image" in inputs:
        found.append("vision")
    if "tools" in supported:
        found.append("tools")
    if "image" in outputs:
        found.append("image_generation")
    return tuple(found)
