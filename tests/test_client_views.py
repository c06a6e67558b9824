"""The list in other servers' shapes (LM Studio, LiteLLM, OpenRouter, Ollama), checked against
real captures of those servers: the same keys, and values of the same types."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.conftest import DaemonFactory, UpstreamFactory, fixture_bytes

KEY = "sk-views-test-0a1b2c"
OPEN_KEYS = frozenset({"pricing"})  # OpenRouter lists only the prices a model has
OPENROUTER_CAPTURE = orjson.loads(fixture_bytes("openrouter/models.json"))["data"]


def capture(name: str) -> Any:
    return orjson.loads(fixture_bytes(f"client-views/{name}"))


def same_shape(ours: dict[str, Any], theirs: dict[str, Any], where: str) -> None:
    """The same keys; each value of the same JSON type where both are known (not null)."""
    assert set(ours) == set(theirs), f"{where}: {set(ours) ^ set(theirs)}"
    for key, value in theirs.items():
        if value is None or ours[key] is None:
            continue
        kind = (int, float) if isinstance(value, int | float) else type(value)
        assert isinstance(ours[key], kind), f"{where}.{key}: {ours[key]!r} vs {value!r}"
        if key in OPEN_KEYS:  # which keys appear differs by model: only their values' types
            assert {type(v) for v in ours[key].values()} <= {type(v) for v in value.values()}
        elif isinstance(value, dict) and value and ours[key]:
            same_shape(ours[key], value, f"{where}.{key}")


@pytest.fixture
async def served(upstream: UpstreamFactory, daemon: DaemonFactory) -> Any:
    openai = await upstream(fixture_bytes("openai/models.json"))
    config = {
        "server": {"auth_token": "admin-token-3e4f5a"},
        "providers": [
            {"name": "oa", "type": "openai", "base_url": f"{openai.url}/v1", "api_key": KEY}
        ],
        "clients": [{"name": "cline", "token": "cline-token-6b7c8d", "allow": ["oa/gpt-4o*"]}],
    }
    return await daemon(config)


ADMIN = {"Authorization": "Bearer admin-token-3e4f5a"}
CLINE = {"Authorization": "Bearer cline-token-6b7c8d"}


async def get(client: Any, path: str, headers: dict[str, str] = ADMIN) -> Any:
    answer = await client.get(path, headers=headers)
    assert answer.status == 200, await answer.text()
    return await answer.json()


async def test_lm_studio_models_have_lm_studio_keys_and_types(served: Any):
    listed = (await get(served, "/api/v0/models"))["data"]
    theirs = capture("lmstudio-api-v0-models.json")["data"]
    by_id = {entry["id"]: entry for entry in listed}
    same_shape(by_id["oa/gpt-4o"], theirs[0], "gpt-4o")
    assert by_id["oa/gpt-4o"]["type"] == "vlm"
    assert by_id["oa/gpt-4o"]["max_context_length"] == 128000
    assert by_id["oa/text-embedding-3-small"]["type"] == "embeddings"
    assert by_id["oa/gpt-3.5-turbo"]["type"] == "llm"
    one = await get(served, "/api/v0/models/oa/gpt-4o")
    assert one == by_id["oa/gpt-4o"]


async def test_litellm_model_info_and_groups_have_litellm_keys_and_types(served: Any):
    theirs = capture("litellm-v1-model-info.json")["data"][0]  # gpt-4o on a real proxy
    for path in ("/v1/model/info", "/model/info"):
        rows = {row["model_name"]: row for row in (await get(served, path))["data"]}
        ours = rows["oa/gpt-4o"]
        assert isinstance(ours["litellm_params"]["model"], str)
        wanted = [
            "max_tokens",
            "max_input_tokens",
            "max_output_tokens",
            "input_cost_per_token",
            "output_cost_per_token",
            "mode",
            "supports_function_calling",
            "supports_vision",
            "supports_reasoning",
            "supports_response_schema",
        ]
        for key in wanted:  # every field Cline and Roo read, known for a catalog model
            assert ours["model_info"][key] is not None, key
            if theirs["model_info"][key] is not None:  # the proxy left some unknown
                assert type(ours["model_info"][key]) is type(theirs["model_info"][key]), key
            elif key.startswith("supports_"):
                assert isinstance(ours["model_info"][key], bool), key
        assert ours["model_info"]["max_input_tokens"] == 128000
        assert ours["model_info"]["input_cost_per_token"] == pytest.approx(2.5e-06)
        assert ours["model_info"]["supports_function_calling"] is True
        assert rows["oa/text-embedding-3-small"]["model_info"]["mode"] == "embedding"
        # Known to LiteLLM's cost map alone: its mode is what the views say the model is.
        assert rows["oa/whisper-1"]["model_info"]["mode"] == "audio_transcription"
        assert rows["oa/tts-1"]["model_info"]["mode"] == "audio_speech"
        assert rows["oa/omni-moderation-latest"]["model_info"]["mode"] == "moderation"
        assert rows["oa/babbage-002"]["model_info"]["max_input_tokens"] == 16384

    group_capture = capture("litellm-model-group-info.json")["data"][0]
    groups = {row["model_group"]: row for row in (await get(served, "/model_group/info"))["data"]}
    same_shape(groups["oa/gpt-4o"], group_capture, "group gpt-4o")
    assert groups["oa/gpt-4o"]["max_input_tokens"] == 128000


async def test_openrouter_schema_matches_openrouter(served: Any):
    listed = {entry["id"]: entry for entry in (await get(served, "/api/v1/models"))["data"]}
    ours = listed["oa/gpt-4o"]
    same_shape(ours, OPENROUTER_CAPTURE[0], "gpt-4o")
    assert ours["context_length"] == 128000
    assert isinstance(ours["pricing"]["prompt"], str)
    assert float(ours["pricing"]["prompt"]) == pytest.approx(2.5e-06)


async def test_ollama_tags_have_ollama_keys_and_types(served: Any):
    listed = (await get(served, "/api/tags"))["models"]
    same_shape(listed[0], capture("ollama-api-tags.json")["models"][0], listed[0]["name"])


@pytest.mark.parametrize(
    ("path", "field", "key"),
    [
        ("/api/v0/models", "data", "id"),
        ("/v1/model/info", "data", "model_name"),
        ("/model_group/info", "data", "model_group"),
        ("/api/v1/models", "data", "id"),
        ("/api/tags", "models", "name"),
    ],
)
async def test_each_view_shows_a_client_its_allowlist_with_its_own_etag(
    served: Any, path: str, field: str, key: str
):
    everyone = await served.get(path, headers=ADMIN)
    cline = await served.get(path, headers=CLINE)
    names = sorted(row[key] for row in (await cline.json())[field])
    assert names
    assert all("gpt-4o" in name for name in names)
    assert len((await everyone.json())[field]) > len(names)
    assert cline.headers["ETag"] != everyone.headers["ETag"]
    again = await served.get(path, headers={**CLINE, "If-None-Match": cline.headers["ETag"]})
    assert again.status == 304


async def test_a_model_that_does_not_chat_is_not_offered_for_chat(served: Any):
    for name, expected in (("oa/whisper-1", []), ("oa/text-embedding-3-small", ["embedding"])):
        shown = await served.post("/api/show", json={"model": name}, headers=ADMIN)
        assert (await shown.json())["capabilities"] == expected
    studio = {row["id"]: row for row in (await get(served, "/api/v0/models"))["data"]}
    assert studio["oa/text-embedding-3-small"]["type"] == "embeddings"
