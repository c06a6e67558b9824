"""The contract every provider type in PROVIDERS keeps, against a scripted loopback upstream."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from localrouter.providers import PROVIDERS
from localrouter.providers.base import ProviderKind
from tests.conftest import FIXTURES, DaemonFactory, UpstreamFactory, openai_compatible, settled

KEY = "sk-contract-7d1f93a2"

Route = Callable[[URL, bytes], str | None]  # -> fixture path under tests/fixtures


@dataclass(frozen=True)
class Scenario:
    route: Route
    expected_ids: frozenset[str]
    auth: dict[str, str] = field(default_factory=dict)
    base_path: str = "/v1"
    config: dict[str, Any] = field(default_factory=dict)
    keyed: bool = True


def single(fixture: str, path: str = "/v1/models") -> Route:
    return lambda url, body: fixture if url.path == path else None


def by_query(path: str, key: str, pages: dict[str | None, str]) -> Route:
    def route(url: URL, body: bytes) -> str | None:
        return pages.get(url.query.get(key)) if url.path == path else None

    return route


def ids_of(fixture: str, *keys: str) -> frozenset[str]:
    data = orjson.loads((FIXTURES / fixture).read_bytes())
    items = data if isinstance(data, list) else next(data[k] for k in keys if k in data)
    return frozenset(item["id"] for item in items)


def ollama_route(url: URL, body: bytes) -> str | None:
    if url.path == "/api/tags":
        return "ollama/tags.json"
    if url.path == "/api/show":
        name = orjson.loads(body)["model"].replace(":", "_")
        path = f"ollama/show-{name}.json"
        return path if (FIXTURES / path).exists() else None  # nomic: /api/show fails
    return None


BEARER = {"Authorization": f"Bearer {KEY}"}
SCENARIOS: dict[str, Scenario] = {
    "openai": Scenario(single("openai/models.json"), ids_of("openai/models.json", "data"), BEARER),
    "groq": Scenario(single("groq/models.json"), ids_of("groq/models.json", "data"), BEARER),
    "mistral": Scenario(
        single("mistral/models.json"), ids_of("mistral/models.json", "data"), BEARER
    ),
    "together": Scenario(single("together/models.json"), ids_of("together/models.json"), BEARER),
    "cerebras": Scenario(
        single("cerebras/models.json"), ids_of("cerebras/models.json", "data"), BEARER
    ),
    "xai": Scenario(single("xai/models.json"), ids_of("xai/models.json", "data"), BEARER),
    "deepinfra": Scenario(
        single("deepinfra/models.json"), ids_of("deepinfra/models.json", "data"), BEARER
    ),
    "openrouter": Scenario(
        single("openrouter/models.json"), ids_of("openrouter/models.json", "data"), BEARER
    ),
    "lmstudio": Scenario(
        single("lmstudio/v0-models.json", "/api/v0/models"),
        ids_of("lmstudio/v0-models.json", "data"),
        keyed=False,
    ),
    "llamacpp": Scenario(
        lambda url, body: {
            "/v1/models": "llamacpp/v1-models.json",
            "/props": "llamacpp/props.json",
        }.get(url.path),
        ids_of("llamacpp/v1-models.json", "data"),
        keyed=False,
    ),
    "openai_compatible": Scenario(
        single("openai_compatible/models.json"),
        ids_of("openai_compatible/models.json", "data"),
        keyed=False,
    ),
    "anthropic": Scenario(
        by_query(
            "/v1/models",
            "after_id",
            {
                None: "anthropic/page1.json",
                "claude-opus-4-20250514": "anthropic/page2.json",
                "claude-sonnet-4-20250514": "anthropic/page3.json",
            },
        ),
        frozenset(
            {"claude-opus-4-20250514", "claude-sonnet-4-20250514", "claude-3-5-haiku-20241022"}
        ),
        {"x-api-key": KEY, "anthropic-version": "2023-06-01"},
    ),
    "gemini": Scenario(
        by_query(
            "/v1beta/models",
            "pageToken",
            {None: "gemini/page1.json", "tok-2": "gemini/page2.json", "tok-3": "gemini/page3.json"},
        ),
        frozenset({"gemini-2.0-flash", "text-embedding-004", "gemini-2.5-pro"}),  # not aqa
        {"x-goog-api-key": KEY},
        base_path="/v1beta",
    ),
    "cohere": Scenario(
        by_query(
            "/v1/models",
            "page_token",
            {None: "cohere/page1.json", "p2": "cohere/page2.json", "p3": "cohere/page3.json"},
        ),
        frozenset({"command-r-plus", "embed-english-v3.0", "rerank-v3.5"}),
        BEARER,
    ),
    "ollama": Scenario(
        ollama_route,
        frozenset({"llama3.2:3b", "llava:7b", "nomic-embed-text:latest"}),
        base_path="",
        keyed=False,
    ),
    "replicate": Scenario(
        by_query(
            "/v1/models",
            "cursor",
            {
                None: "replicate/page1.json",
                "c2": "replicate/page2.json",
                "c3": "replicate/page3.json",
            },
        ),
        frozenset({"black-forest-labs/flux-schnell", "minimax/video-01", "meta/musicgen"}),
        BEARER,
    ),
    "fal": Scenario(
        by_query(
            "/v1/models",
            "cursor",
            {None: "fal/page1.json", "n2": "fal/page2.json", "n3": "fal/page3.json"},
        ),
        frozenset({"fal-ai/flux/dev", "fal-ai/recraft-v3", "fal-ai/hidream-i1-full"}),
        {"Authorization": f"Key {KEY}"},
        config={"categories": ["text-to-image"]},
    ),
    "perplexity": Scenario(
        lambda url, body: None,
        frozenset(PROVIDERS["perplexity"].static_models),
    ),
}


@dataclass
class Scripted:
    scenario: Scenario
    failure: str | None = None
    requests: list[web.Request] = field(default_factory=list)
    server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        body = await request.read()
        for name, value in self.scenario.auth.items():
            if request.headers.get(name) != value:
                return web.json_response({"error": {"message": f"bad {name}"}}, status=401)
        if self.failure in ("401", "429", "500"):
            status = int(self.failure)
            return web.json_response({"error": {"message": "upstream says no"}}, status=status)
        if self.failure == "timeout":
            await asyncio.sleep(5)
        if self.failure == "garbage":
            return web.Response(text="<html>maintenance</html>", content_type="text/html")
        if self.failure == "not_a_list":
            return web.json_response({"status": "ok", "message": "hello"})
        fixture = self.scenario.route(request.rel_url, body)
        if fixture is None:
            return web.json_response({"error": {"message": "no such thing"}}, status=404)
        data = (FIXTURES / fixture).read_bytes().replace(b"UPSTREAM", f"{self.url}/v1".encode())
        if self.failure == "oversized":
            data += b" " * 5000
        return web.Response(body=data, content_type="application/json")


@pytest.fixture
def scripted(aiohttp_server: Callable[..., Any]) -> Callable[..., Any]:
    async def start(scenario: Scenario, failure: str | None = None) -> Scripted:
        fake = Scripted(scenario, failure)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", fake.handle)
        fake.server = await aiohttp_server(app)
        return fake

    return start


def instance_config(type_name: str, fake: Scripted, **extra: Any) -> dict[str, Any]:
    scenario = fake.scenario
    config: dict[str, Any] = {
        "name": "p",
        "type": type_name,
        "base_url": fake.url + scenario.base_path,
        **scenario.config,
        **extra,
    }
    if scenario.keyed:
        config["api_key"] = KEY
    return config


def test_every_provider_type_has_a_scenario_and_a_fixture_folder():
    assert set(SCENARIOS) == set(PROVIDERS)
    for type_name in PROVIDERS:
        assert (FIXTURES / type_name).is_dir(), f"tests/fixtures/{type_name}/ is missing"


@pytest.mark.parametrize("type_name", sorted(PROVIDERS))
async def test_lists_parses_and_namespaces(
    type_name: str,
    scripted: Callable[..., Any],
    daemon: DaemonFactory,
    capsys: pytest.CaptureFixture[str],
):
    """Each provider type's list is fetched, parsed and served in OpenAI's shape under the
    instance's name, with no error, the key never in a URL or a log, and no Authorization for
    keyless types."""
    fake = await scripted(SCENARIOS[type_name])
    client = await daemon({"providers": [instance_config(type_name, fake)]})
    body = await (await client.get("/v1/models")).json()
    ids = {model["id"] for model in body["data"]}
    assert ids == {f"p/{model_id}" for model_id in SCENARIOS[type_name].expected_ids}
    for model in body["data"]:
        assert model["object"] == "model"
        assert isinstance(model["created"], int)
        assert model["owned_by"] == "p"
        assert model["provider"] == type_name
        assert isinstance(model["name"], str)
    for request in fake.requests:
        assert KEY not in str(request.url)
        if not SCENARIOS[type_name].keyed:
            assert "Authorization" not in request.headers
    stats = await settled(client)
    assert stats["instances"]["p"]["last_error"] is None
    logged = capsys.readouterr()
    assert KEY not in logged.out + logged.err


FAILURES = {
    "401": "HTTP 401",
    "429": "HTTP 429",
    "500": "HTTP 500",
    "garbage": "not JSON",
    "not_a_list": "not a model list",
    "oversized": "more than 1000 bytes",
    "timeout": "did not answer within 0.3 s",
}
FETCHING = sorted(t for t, spec in PROVIDERS.items() if spec.kind is not ProviderKind.STATIC)


@pytest.mark.parametrize("failure", sorted(FAILURES))
@pytest.mark.parametrize("type_name", FETCHING)
async def test_failures_are_instance_errors_and_others_still_list(
    type_name: str,
    failure: str,
    scripted: Callable[..., Any],
    upstream: UpstreamFactory,
    daemon: DaemonFactory,
    capsys: pytest.CaptureFixture[str],
):
    fake = await scripted(SCENARIOS[type_name], failure)
    healthy = await upstream()
    healthy.serve_models(["fine"])
    config = {
        "server": {"models_deadline_seconds": 1.0},
        "providers": [
            instance_config(type_name, fake, timeout_seconds=0.3, max_response_bytes=1000),
            openai_compatible("ok", healthy.url),
        ],
        "model_cache": {"use_catalog_fallback": False},  # the error itself is under test
    }
    client = await daemon(config)
    response = await client.get("/v1/models")
    assert response.status == 200
    ids = {model["id"] for model in (await response.json())["data"]}
    assert "ok/fine" in ids
    assert not any(model_id.startswith("p/") for model_id in ids)
    stats = await settled(client)
    error = stats["instances"]["p"]["last_error"]
    assert error is not None
    assert FAILURES[failure] in error
    assert KEY not in error
    logged = capsys.readouterr()
    assert KEY not in logged.out + logged.err


async def test_failing_ollama_show_keeps_the_model_without_details(
    scripted: Callable[..., Any], daemon: DaemonFactory
):
    fake = await scripted(SCENARIOS["ollama"])
    client = await daemon({"providers": [instance_config("ollama", fake)]})
    body = await (await client.get("/v1/models")).json()
    models = {model["upstream_id"]: model for model in body["data"]}
    assert models["llama3.2:3b"]["context_length"] == 131072
    assert set(models["llama3.2:3b"]["capabilities"]) == {"chat", "tools"}
    assert "vision" in models["llava:7b"]["capabilities"]
    assert "context_length" not in models["nomic-embed-text:latest"]
    assert models["nomic-embed-text:latest"]["description"] == "137M, F16"


async def test_replicate_refuses_a_next_page_on_another_host(
    upstream: UpstreamFactory, daemon: DaemonFactory
):
    page = {"next": "http://198.51.100.7/v1/models?cursor=x", "results": []}
    up = await upstream(orjson.dumps(page), expected_auth=BEARER)
    config = {"providers": [{"name": "r", "type": "replicate", "base_url": up.url, "api_key": KEY}]}
    client = await daemon(config)
    await client.get("/v1/models")
    stats = await settled(client)
    assert "another host" in stats["instances"]["r"]["last_error"]
    assert up.calls == 1


async def test_lmstudio_reads_v0_details_and_falls_back_to_v1(
    scripted: Callable[..., Any], daemon: DaemonFactory
):
    rich = await scripted(SCENARIOS["lmstudio"])
    plain = await scripted(Scenario(single("lmstudio/v1-models.json"), frozenset(), keyed=False))
    client = await daemon(
        {
            "providers": [
                instance_config("lmstudio", rich),
                {**instance_config("lmstudio", plain), "name": "old"},
            ]
        }
    )
    body = await (await client.get("/v1/models")).json()
    models = {model["id"]: model for model in body["data"]}
    vision = models["p/qwen2-vl-7b-instruct"]
    assert vision["context_length"] == 32768
    assert set(vision["capabilities"]) == {"chat", "vision"}
    assert vision["active"] is False  # not loaded
    assert models["p/text-embedding-nomic-embed-text-v1.5"]["capabilities"] == ["embedding"]
    old = {model_id for model_id in models if model_id.startswith("old/")}
    assert old == {f"old/{i}" for i in ids_of("lmstudio/v1-models.json", "data")}
    assert [r.path for r in plain.requests] == ["/api/v0/models", "/v1/models"]


async def test_page_cap_is_an_instance_error(scripted: Callable[..., Any], daemon: DaemonFactory):
    fake = await scripted(SCENARIOS["anthropic"])
    client = await daemon({"providers": [instance_config("anthropic", fake, max_pages=2)]})
    await client.get("/v1/models")
    stats = await settled(client)
    assert "more than 2 pages" in stats["instances"]["p"]["last_error"]
    assert len(fake.requests) == 2


async def test_fal_works_without_a_key(upstream: UpstreamFactory, daemon: DaemonFactory):
    up = await upstream((FIXTURES / "fal/page3.json").read_bytes())
    config = {
        "providers": [
            {"name": "f", "type": "fal", "base_url": up.url, "categories": ["text-to-image"]}
        ]
    }
    client = await daemon(config, env={})
    body = await (await client.get("/v1/models")).json()
    assert [model["id"] for model in body["data"]] == ["f/fal-ai/hidream-i1-full"]
    assert "Authorization" not in up.requests[0]["headers"]
    assert "category=text-to-image" in up.requests[0]["path"]


async def test_cloudflare_result_wrapper_is_a_model_list(
    upstream: UpstreamFactory, daemon: DaemonFactory
):
    up = await upstream(orjson.dumps({"result": [{"id": "@cf/meta/llama-3-8b-instruct"}]}))
    client = await daemon({"providers": [openai_compatible("cf", up.url)]})
    body = await (await client.get("/v1/models")).json()
    assert [m["id"] for m in body["data"]] == ["cf/@cf/meta/llama-3-8b-instruct"]
