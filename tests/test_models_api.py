"""GET /v1/models and /v1/models/{id}: shape, order, caching, errors, the official client."""

from __future__ import annotations

import gzip
from typing import Any

import openai
import orjson
import pytest

from localrouter.config.live import LiveSettings
from localrouter.config.settings import Settings
from localrouter.lists.cache import ModelList, Served, Source
from localrouter.lists.entries import price_text
from localrouter.lists.registry import InstanceLists, Registry
from localrouter.lists.resolve import Resolver
from localrouter.providers.base import ModelInfo
from localrouter.upstream.client import SessionTransport
from localrouter.views.merged import ModelsView
from tests.conftest import DaemonFactory, UpstreamFactory, fixture_bytes, openai_compatible

OPENAI_FIXTURE = orjson.loads(fixture_bytes("openai/models.json"))


async def two_instances(upstream: UpstreamFactory, daemon: DaemonFactory) -> Any:
    openai_up = await upstream(
        fixture_bytes("openai/models.json"), expected_auth={"Authorization": "Bearer sk-test-123"}
    )
    local_up = await upstream(fixture_bytes("lmstudio/v1-models.json"))
    config = {
        "providers": [
            {"name": "oa", "type": "openai", "base_url": openai_up.url, "api_key": "sk-test-123"},
            openai_compatible("lab", local_up.url),
        ]
    }
    return await daemon(config)


async def test_lists_every_instance_namespaced_and_sorted(
    upstream: UpstreamFactory, daemon: DaemonFactory
):
    client = await two_instances(upstream, daemon)
    response = await client.get("/v1/models")
    assert response.status == 200
    body = await response.json()
    assert body["object"] == "list"
    ids = [model["id"] for model in body["data"]]
    assert ids == sorted(ids)
    expected = {f"oa/{m['id']}" for m in OPENAI_FIXTURE["data"]}
    expected |= {
        f"lab/{m['id']}" for m in orjson.loads(fixture_bytes("lmstudio/v1-models.json"))["data"]
    }
    assert set(ids) == expected
    assert len(ids) == 82 + 8
    for model in body["data"]:
        instance, _, upstream_id = model["id"].partition("/")
        assert model["object"] == "model"
        assert isinstance(model["created"], int)
        assert model["owned_by"] == instance
        assert model["upstream_id"] == upstream_id
        assert model["source"] == "live"
        assert isinstance(model["name"], str)
        assert isinstance(model["description"], str)
    lab = next(m for m in body["data"] if m["id"] == "lab/deepseek-r1-distill-qwen-7b")
    assert lab["created"] == 0  # LM Studio omits created: 0, never missing
    assert lab["provider"] == "openai_compatible"


async def test_openrouter_metadata_is_carried_through(
    upstream: UpstreamFactory, daemon: DaemonFactory
):
    up = await upstream(fixture_bytes("openrouter/models.json"))
    client = await daemon({"providers": [{"name": "or", "type": "openrouter", "base_url": up.url}]})
    body = await (await client.get("/v1/models")).json()
    source = next(
        m
        for m in orjson.loads(fixture_bytes("openrouter/models.json"))["data"]
        if m["id"] == "anthropic/claude-opus-4.7-fast"
    )
    model = next(m for m in body["data"] if m["id"] == "or/anthropic/claude-opus-4.7-fast")
    assert model["context_length"] == source["context_length"]
    assert model["pricing"]["prompt"] == source["pricing"]["prompt"]
    assert model["pricing"]["completion"] == source["pricing"]["completion"]
    assert model["architecture"]["input_modalities"] == ["text", "image", "file"]
    assert model["top_provider"]["max_completion_tokens"] == 128000
    assert "tools" in model["supported_parameters"]
    assert {"chat", "vision", "tools"} <= set(model["capabilities"])


async def test_etag_304_gzip_and_cache_control(upstream: UpstreamFactory, daemon: DaemonFactory):
    """/v1/models carries an ETag and Cache-Control: no-cache, is gzipped (same bytes, same ETag)
    only for a client that accepts gzip, and answers a matching If-None-Match with an empty 304."""
    client = await two_instances(upstream, daemon)
    plain = await client.get("/v1/models", headers={"Accept-Encoding": "identity"})
    raw = await plain.read()
    etag = plain.headers["ETag"]
    assert plain.headers["Cache-Control"] == "no-cache"
    assert "Content-Encoding" not in plain.headers

    zipped = await client.get(
        "/v1/models", headers={"Accept-Encoding": "gzip, br"}, auto_decompress=False
    )
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(await zipped.read()) == raw
    assert zipped.headers["ETag"] == etag
    assert len(await zipped.read()) < len(raw) / 4

    not_modified = await client.get("/v1/models", headers={"If-None-Match": etag})
    assert not_modified.status == 304
    assert await not_modified.read() == b""
    changed = await client.get("/v1/models", headers={"If-None-Match": 'W/"other"'})
    assert changed.status == 200
    refused = await client.get("/v1/models", headers={"Accept-Encoding": "gzip;q=0"})
    assert "Content-Encoding" not in refused.headers


async def test_view_serialises_once_per_change():
    settings = Settings()
    registry = Registry(settings, SessionTransport())
    live = LiveSettings(settings, origin="test")
    view = ModelsView(registry, live, Resolver(registry, live))

    async def merged_view(labels: Any, served: Any) -> Any:
        return await view.merged(InstanceLists((), labels, served))

    first = ModelList((ModelInfo(id="a"),), Source.LIVE, 0.0, 10.0)
    second = ModelList((ModelInfo(id="a"),), Source.LIVE, 0.0, 10.0)

    labels = (("x", "openai"),)
    live = Served(first, Source.LIVE)
    merged = await merged_view(labels, (live,))
    assert await merged_view(labels, (live,)) is merged
    stale = await merged_view(labels, (Served(first, Source.STALE),))
    assert stale is not merged  # the source is part of the body
    assert b'"source":"stale"' in stale.body.raw
    again = await merged_view(labels, (Served(second, Source.STALE),))
    assert again is not stale  # a new answer is a change, even with equal content
    assert again.body.raw == stale.body.raw
    renamed = await merged_view((("y", "openai"),), (Served(second, Source.STALE),))
    assert b'"id":"y/a"' in renamed.body.raw


async def test_retrieve_model_with_slashes_and_unknown_model(
    upstream: UpstreamFactory, daemon: DaemonFactory
):
    """A model whose upstream id has slashes is retrieved by its full id; an unknown id is an
    OpenAI-shaped 404 that suggests the close match."""
    client = await two_instances(upstream, daemon)
    response = await client.get("/v1/models/lab/google/gemma-3n-e4b")
    assert response.status == 200
    model = await response.json()
    assert model["id"] == "lab/google/gemma-3n-e4b"
    assert model["upstream_id"] == "google/gemma-3n-e4b"

    missing = await client.get("/v1/models/oa/gpt-4o-minii")
    assert missing.status == 404
    error = (await missing.json())["error"]
    assert error["code"] == "model_not_found"
    assert error["type"] == "invalid_request_error"
    assert "oa/gpt-4o-mini" in error["message"]


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/v1/nothing-here", 404, "not_found"),
        ("POST", "/v1/models", 405, "method_not_allowed"),
        ("DELETE", "/health", 405, "method_not_allowed"),
    ],
)
async def test_errors_are_openai_shaped(
    upstream: UpstreamFactory, daemon: DaemonFactory, method: str, path: str, status: int, code: str
):
    client = await daemon({"providers": []})
    response = await client.request(method, path)
    assert response.status == status
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert "Traceback" not in await response.text()


async def test_no_instances_is_an_empty_list(daemon: DaemonFactory):
    client = await daemon({"providers": []})
    body = await (await client.get("/v1/models")).json()
    assert body == {"object": "list", "data": []}


async def test_official_openai_client_lists_and_retrieves(
    upstream: UpstreamFactory, daemon: DaemonFactory
):
    client = await two_instances(upstream, daemon)
    sdk = openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key="unused", max_retries=0)
    async with sdk:
        page = await sdk.models.list()
        ids = [model.id for model in page.data]
        assert "oa/gpt-4o-audio-preview-2024-12-17" in ids
        assert len(ids) == 90
        model = await sdk.models.retrieve("lab/google/gemma-3n-e4b")
        assert model.id == "lab/google/gemma-3n-e4b"
        assert model.owned_by == "lab"
        with pytest.raises(openai.NotFoundError):
            await sdk.models.retrieve("oa/no-such-model")


@pytest.mark.parametrize(
    ("usd", "text"),
    [(3e-06, "0.000003"), (0.0, "0"), (1.5e-07, "0.00000015"), (0.01, "0.01"), (2.0, "2")],
)
def test_prices_render_as_plain_decimal_strings(usd: float, text: str):
    assert price_text(usd) == text
