"""OpenAI-shaped presets read their provider's own extras from real captures, over HTTP."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from localrouter.providers import PROVIDERS
from tests.conftest import DaemonFactory, UpstreamFactory, fixture_bytes


async def listed(
    upstream: UpstreamFactory, daemon: DaemonFactory, provider_type: str, fixture: str
) -> dict[str, dict[str, Any]]:
    up = await upstream(fixture_bytes(fixture), expected_auth={"Authorization": "Bearer k-123456"})
    config = {
        "providers": [
            {"name": "p", "type": provider_type, "base_url": up.url, "api_key": "k-123456"}
        ]
    }
    client = await daemon(config)
    body = await (await client.get("/v1/models")).json()
    assert up.requests[0]["path"] == "/models"
    return {model["upstream_id"]: model for model in body["data"]}


async def test_mistral_capabilities_aliases_and_context(
    upstream: UpstreamFactory, daemon: DaemonFactory
):
    """Mistral's list gives one model per id with its context length, aliases and capabilities,
    vision wherever Mistral says so."""
    models = await listed(upstream, daemon, "mistral", "mistral/models.json")
    source = orjson.loads(fixture_bytes("mistral/models.json"))["data"]
    assert len(models) == len({item["id"] for item in source})
    small = models["ministral-3b-2410"]
    assert small["context_length"] == 131072
    assert small["aliases"] == ["ministral-3b-latest"]
    assert set(small["capabilities"]) == {"chat", "tools"}
    vision = [item["id"] for item in source if item["capabilities"]["vision"]]
    assert vision
    assert all("vision" in models[model_id]["capabilities"] for model_id in vision)


async def test_together_bare_array_types_and_prices_per_token(
    upstream: UpstreamFactory, daemon: DaemonFactory
):
    """Together's bare-array list is read whole: embedding models are marked as such, and prices per
    million tokens become prices per token."""
    models = await listed(upstream, daemon, "together", "together/models.json")
    source = {item["id"]: item for item in orjson.loads(fixture_bytes("together/models.json"))}
    assert set(models) == set(source)
    for model_id, item in source.items():
        model = models[model_id]
        if item["type"] == "embedding":
            assert model["capabilities"] == ["embedding"]
        price = item["pricing"]["input"]
        assert float(model["pricing"]["prompt"]) == pytest.approx(price / 1_000_000)


async def test_deepinfra_metadata_prices_per_token(
    upstream: UpstreamFactory, daemon: DaemonFactory
):
    """DeepInfra's metadata gives context length, per-token prices and vision; models without
    metadata are listed all the same."""
    models = await listed(upstream, daemon, "deepinfra", "deepinfra/models.json")
    source = orjson.loads(fixture_bytes("deepinfra/models.json"))["data"]
    qwen = models["Qwen/Qwen3.5-27B"]
    assert qwen["context_length"] == 262144
    assert float(qwen["pricing"]["prompt"]) == pytest.approx(0.26 / 1_000_000)
    assert float(qwen["pricing"]["completion"]) == pytest.approx(2.6 / 1_000_000)
    assert "vision" in qwen["capabilities"]
    without_metadata = [item["id"] for item in source if not item.get("metadata")]
    assert without_metadata
    assert all(model_id in models for model_id in without_metadata)


async def test_plain_openai_list_is_enriched_by_the_catalog_else_guessed_from_ids(
    upstream: UpstreamFactory, daemon: DaemonFactory
):
    models = await listed(upstream, daemon, "openai", "openai/models.json")
    assert models["text-embedding-3-small"]["capabilities"] == ["embedding"]
    gpt4o = models["gpt-4o"]
    assert {"chat", "vision", "tools"} <= set(gpt4o["capabilities"])
    assert gpt4o["catalog"] == {"id": "openai/gpt-4o", "matched_via": "provider_id"}
    assert gpt4o["context_length"] == 128000
    # Known to LiteLLM's cost map alone (the third source): what the model does comes from it.
    assert models["dall-e-3"]["capabilities"] == ["image_generation"]
    assert models["whisper-1"]["capabilities"] == ["transcription"]
    assert models["whisper-1"]["catalog"] == {
        "id": "litellm/openai/whisper-1",
        "matched_via": "litellm_id",
    }
    # In no source: guessed from the id, and no catalog reference claimed.
    custom = models["adamtart-gpt-4.1-mini-2025-04-14"]
    assert custom["capabilities"] == ["chat"]
    assert "catalog" not in custom


def test_every_openai_shaped_cloud_preset_has_a_default_url_and_key_variable():
    for type_name in ("openai", "groq", "mistral", "together", "cerebras", "xai", "deepinfra"):
        spec = PROVIDERS[type_name]
        assert spec.default_base_url is not None
        assert spec.default_base_url.startswith("https://")
        assert spec.key_env == f"{type_name.upper()}_API_KEY"
        assert spec.key_required
