"""The embedded catalog: reproducible build, matching, enrichment, fallback and update."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from localrouter.base.errors import UpstreamError
from localrouter.catalog import UPDATED, Catalog, CatalogStore, load_catalog, parse_catalog
from localrouter.catalog.build import FORMAT, build_catalog, serialise
from localrouter.catalog.match import Scope, find, normalise
from localrouter.catalog_update import SourceUrls, fetch_catalog, match_body
from localrouter.cli import main
from localrouter.lists.persist import write_atomically
from tests.conftest import FIXTURES, DaemonFactory, UpstreamFactory

ROOT = Path(__file__).parent.parent
SOURCES = ROOT / "scripts" / "catalog-sources"
CAPTURES = ("openai", "anthropic", "mistral", "together", "deepinfra")


@pytest.fixture(scope="module")
def catalog() -> Any:
    return load_catalog(None)


def test_committed_catalog_is_what_the_script_builds():
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_catalog.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def expected_pairs(provider: str) -> list[tuple[str, str | None, str | None]]:
    rows = []
    for line in (FIXTURES / "catalog-matches" / f"{provider}.tsv").read_text().splitlines():
        if line.startswith("#"):
            continue
        model_id, catalog_id, via = line.split("\t")
        rows.append(
            (model_id, None if catalog_id == "-" else catalog_id, None if via == "-" else via)
        )
    return rows


@pytest.mark.parametrize("provider", CAPTURES)
async def test_real_captures_match_exactly_the_reviewed_pairs(provider: str, catalog: Any):
    body = (FIXTURES / provider / "models.json").read_bytes()
    report = await match_body(body, provider, catalog)
    found = sorted(
        (model_id, ref.id if ref else None, ref.matched_via if ref else None)
        for model_id, ref in report.rows
    )
    assert found == expected_pairs(provider)


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("GPT-4o", "gpt-4o"),
        ("models/gemini-2.0-flash", "gemini-2-0-flash"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("mistral-large-latest", "mistral-large"),
        ("meta-llama/llama-3.3-70b-instruct:free", "meta-llama/llama-3-3-70b-instruct"),
        ("anthropic/claude-3.5-sonnet:beta", "anthropic/claude-3-5-sonnet"),
        ("zai-org/GLM-4.6", "z-ai/glm-4-6"),
        ("llama3.2:3b", "llama3-2:3b"),  # a size tag is kept: sizes never blur together
        ("gpt-4-0613", "gpt-4-0613"),  # four digits are not a date we can read
    ],
)
def test_normalise(raw: str, normal: str):
    """An id is normalised to its catalog key: lower case, dots as dashes, no "models/" prefix,
    date, "-latest" or ":variant" suffix, the vendor as the catalog names it; a size tag and a
    four-digit number are kept."""
    assert normalise(raw) == normal


def test_ties_go_to_the_plain_form_then_the_shortest_id():
    empty = Scope(None, {})
    plain = Scope("p", {"foo-20240101": {}, "foo-latest": {}, "foo": {}, "Foo": {}})
    found = find("foo-20250101", plain, empty, None)
    assert found is not None
    assert (found.id, found.matched_via) == ("p/foo", "normalized_provider_id")
    dated = Scope("p", {"foo-20240101": {}, "foo-latest": {}})
    found = find("foo-20250101", dated, empty, None)
    assert found is not None
    assert found.id == "p/foo-latest"


def test_an_ollama_tag_matches_only_a_unique_base_name():
    empty = Scope(None, {})
    unique = Scope("p", {"llama3.2": {}, "qwen2.5-14b": {}})
    found = find("llama3.2:3b", unique, empty, None)
    assert found is not None
    assert (found.id, found.matched_via) == ("p/llama3.2", "base_name")
    assert find("qwen2.5:7b", unique, empty, None) is None  # no guessing across sizes
    ambiguous = Scope("p", {"llama3.2-20240101": {}, "llama3.2-20250101": {}})
    assert find("llama3.2:3b", ambiguous, empty, None) is None


def test_a_bare_id_without_a_vendor_is_not_guessed_into_openrouter():
    router = Scope(None, {"meta-llama/llama-3.3-70b-instruct": {}})
    assert find("llama-3.3-70b-instruct", None, router, None) is None


def test_prices_are_usd_per_token_from_both_sources(catalog: Any):
    router = {
        m["id"]: m
        for m in orjson.loads((SOURCES / "openrouter-models-2026-05-15.json").read_bytes())["data"]
    }
    for model_id in ("openai/gpt-4o", "anthropic/claude-opus-4.7-fast", "google/gemini-2.5-pro"):
        entry = catalog.openrouter.entries[model_id]
        assert entry["pricing"]["prompt"] == float(router[model_id]["pricing"]["prompt"])
        assert entry["pricing"]["completion"] == float(router[model_id]["pricing"]["completion"])
    dev = orjson.loads((SOURCES / "models-dev-api-2026-06-13.json").read_bytes())
    for provider, model_id in (("anthropic", "claude-3-5-sonnet-20241022"), ("openai", "gpt-4o")):
        cost = dev[provider]["models"][model_id]["cost"]
        entry = catalog.scope(provider).entries[model_id]
        assert entry["pricing"]["prompt"] == pytest.approx(cost["input"] / 1_000_000)
        assert entry["pricing"]["completion"] == pytest.approx(cost["output"] / 1_000_000)


async def test_provider_data_wins_and_the_catalog_fills_gaps(
    upstream: UpstreamFactory, daemon: DaemonFactory
):
    up = await upstream(orjson.dumps({"data": [{"id": "gpt-4o", "context_length": 999}]}))
    client = await daemon(
        {"providers": [{"name": "oa", "type": "openai", "base_url": up.url, "api_key": "k"}]}
    )
    model = (await (await client.get("/v1/models")).json())["data"][0]
    assert model["context_length"] == 999  # the provider's own value
    assert model["pricing"] == {  # the catalog's, from models.dev's openai entry
        "prompt": "0.0000025",
        "completion": "0.00001",
        "input_cache_read": "0.00000125",
    }
    assert model["catalog"] == {"id": "openai/gpt-4o", "matched_via": "provider_id"}


async def test_what_each_source_knows_of_one_model_is_merged(
    upstream: UpstreamFactory, daemon: DaemonFactory
):
    """models.dev matched gpt-4o, and OpenRouter's entry for it adds what models.dev lacks;
    an embedding model is described as one."""
    ids = ["o1", "text-embedding-3-small"]
    up = await upstream(orjson.dumps({"data": [{"id": i} for i in ids]}))
    client = await daemon(
        {"providers": [{"name": "oa", "type": "openai", "base_url": up.url, "api_key": "k"}]}
    )
    models = {m["id"]: m for m in (await (await client.get("/v1/models")).json())["data"]}
    o1 = models["oa/o1"]
    assert o1["catalog"]["matched_via"] == "provider_id"  # the models.dev entry
    assert o1["description"]  # from the OpenRouter entry of the same model
    assert "reasoning" in o1["supported_parameters"]
    assert o1["context_length"] == 200000  # models.dev's own value stays
    embedding = models["oa/text-embedding-3-small"]
    assert embedding["architecture"]["modality"] == "text->embeddings"
    assert "max_output_tokens" not in embedding  # 1536 is its vector size, not a token limit
    assert "supported_parameters" not in embedding
    assert embedding["capabilities"] == ["embedding"]


def test_an_openrouter_match_takes_what_its_publisher_says(catalog: Any):
    bare = {
        "openrouter": {"mistralai/m-1": {"name": "M 1"}},
        "providers": {
            "mistral": {"m-1": {"name": "Mistral M1", "context_length": 32000, "created": 5}},
            "groq": {"m-1": {"name": "groq's m-1"}},
        },
        "format": FORMAT,
    }
    small = Catalog(bare, "test")
    found = small.match("mistralai/m-1", None)
    assert found is not None
    assert found.entry == {"name": "M 1", "context_length": 32000, "created": 5}
    assert small.match("m-1", "groq").entry == {"name": "groq's m-1"}  # no vendor: no guess


async def test_anthropic_capture_gets_catalog_prices(
    upstream: UpstreamFactory, daemon: DaemonFactory
):
    up = await upstream((FIXTURES / "anthropic/models.json").read_bytes())
    client = await daemon(
        {"providers": [{"name": "a", "type": "anthropic", "base_url": up.url, "api_key": "k"}]}
    )
    models = {m["id"]: m for m in (await (await client.get("/v1/models")).json())["data"]}
    sonnet = models["a/claude-3-5-sonnet-20241022"]
    assert sonnet["pricing"]["prompt"] == "0.000003"
    assert sonnet["pricing"]["completion"] == "0.000015"
    assert sonnet["context_length"] == 200000
    assert sonnet["name"] == "Claude Sonnet 3.5 (New)"  # the provider's display name wins


async def test_catalog_fallback_only_for_catalog_providers(
    daemon: DaemonFactory, unused_tcp_port: int
):
    closed = f"http://127.0.0.1:{unused_tcp_port}"
    config = {
        "providers": [
            {"name": "oa", "type": "openai", "base_url": closed, "api_key": "k"},
            {"name": "local", "type": "ollama", "base_url": closed},
            {"name": "mapped", "type": "ollama", "base_url": closed, "catalog_provider": "mistral"},
        ]
    }
    client = await daemon(config)
    data = (await (await client.get("/v1/models")).json())["data"]
    by_instance: dict[str, set[str]] = {}
    for model in data:
        by_instance.setdefault(model["owned_by"], set()).add(model["upstream_id"])
        assert model["source"] == "catalog"
    assert "gpt-4o" in by_instance["oa"]
    assert "local" not in by_instance  # ollama maps to no catalog provider
    assert "mistral-large-latest" in by_instance["mapped"]


async def test_catalog_fallback_can_be_switched_off(daemon: DaemonFactory, unused_tcp_port: int):
    closed = f"http://127.0.0.1:{unused_tcp_port}"
    config = {
        "providers": [{"name": "oa", "type": "openai", "base_url": closed, "api_key": "k"}],
        "model_cache": {"use_catalog_fallback": False},
    }
    client = await daemon(config)
    assert (await (await client.get("/v1/models")).json())["data"] == []


def test_catalog_match_command(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """`localrouter catalog match FILE --provider anthropic` prints the matched ids and ends with
    how many of the list's models matched."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert (
        main(
            ["catalog", "match", str(FIXTURES / "anthropic/models.json"), "--provider", "anthropic"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "claude-3-5-sonnet-20241022" in out
    assert out.strip().endswith("matched 9 of 11 (81.8 %)")


@pytest.mark.parametrize(
    ("content", "provider", "said"),
    [
        (None, "openai", "cannot read"),
        (b"<html>not json</html>", "openai", "not JSON; expected a saved answer"),
        (b"[]", "openai", "no models in it for provider type openai"),
        (b'{"data": []}', "anthropic", "no models in it"),
        (b'{"status": "ok"}', "openai", "not a model list"),
    ],
)
def test_catalog_match_says_what_is_wrong_with_the_file(
    content: bytes | None,
    provider: str,
    said: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = tmp_path / "answer.json"
    if content is not None:
        path.write_bytes(content)
    assert main(["catalog", "match", str(path), "--provider", provider]) == 1
    captured = capsys.readouterr()
    assert said in captured.err
    assert str(path) in captured.err
    assert "Traceback" not in captured.err
    assert "127.0.0.1" not in captured.err + captured.out


async def sources_server(
    aiohttp_server: Any, openrouter: bytes, models_dev: bytes, litellm: bytes = b"{}"
) -> str:
    async def serve(request: web.Request) -> web.Response:
        body = {"/or": openrouter, "/dev": models_dev}.get(request.path, litellm)
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/{source}", serve)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


async def test_update_writes_a_checked_catalog_the_daemon_picks_up(
    aiohttp_server: Any, tmp_path: Path
):
    router = (SOURCES / "openrouter-models-2026-05-15.json").read_bytes()
    dev = (SOURCES / "models-dev-api-2026-06-13.json").read_bytes()
    costs = (SOURCES / "litellm-model-prices-1.106.2.json").read_bytes()
    base = await sources_server(aiohttp_server, router, dev, costs)
    store = CatalogStore(tmp_path)
    assert store.current().origin == "embedded"
    urls = SourceUrls(f"{base}/or", f"{base}/dev", f"{base}/lit")
    data, size = await fetch_catalog(store.current(), urls)
    assert size == store.current().size
    write_atomically(tmp_path / UPDATED, data)
    os.utime(tmp_path / UPDATED, (1, 1))  # a different mtime than any earlier look
    assert store.current().origin == str(tmp_path / UPDATED)
    assert sorted(os.listdir(tmp_path)) == [UPDATED]  # no temporary file left


async def test_update_refuses_lists_that_are_too_small(aiohttp_server: Any, tmp_path: Path):
    tiny_router = orjson.dumps({"data": [{"id": "a/b"}]})
    base = await sources_server(aiohttp_server, tiny_router, b"{}")
    with pytest.raises(UpstreamError, match="too small"):
        await fetch_catalog(
            load_catalog(None), SourceUrls(f"{base}/or", f"{base}/dev", f"{base}/lit")
        )


def test_update_offline_says_so_and_changes_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    unused_tcp_port: int,
):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    closed = f"http://127.0.0.1:{unused_tcp_port}"
    code = main(
        [
            "catalog",
            "update",
            "--openrouter-url",
            f"{closed}/or",
            "--models-dev-url",
            f"{closed}/dev",
            "--litellm-url",
            f"{closed}/lit",
        ]
    )
    assert code == 1
    assert "catalog not updated: cannot reach" in capsys.readouterr().err
    assert not (tmp_path / "localrouter").exists()


def test_three_sources_fill_each_field_from_the_best_that_has_it():
    openrouter = {
        "data": [{"id": "openai/gpt-x", "name": "OpenAI: GPT X", "description": "From OpenRouter."}]
    }
    models_dev = {"openai": {"models": {"gpt-x": {"name": "GPT X", "limit": {"context": 2000}}}}}
    litellm = {
        "gpt-x": {
            "litellm_provider": "openai",
            "mode": "chat",
            "max_input_tokens": 3000,
            "max_output_tokens": 500,
            "input_cost_per_token": 1e-06,
            "supports_function_calling": True,
        },
        "whisper-x": {"litellm_provider": "openai", "mode": "audio_transcription"},
        "azure/eu/whisper-x": {"litellm_provider": "azure", "mode": "chat"},
        "groq/llama-x": {"litellm_provider": "groq", "mode": "chat", "max_input_tokens": 8192},
    }
    document = build_catalog(openrouter, models_dev, {}, litellm)
    catalog = parse_catalog(serialise(document), "test")
    found = catalog.match("gpt-x", "openai")
    assert found is not None
    assert found.id == "openai/gpt-x"
    assert found.entry["name"] == "GPT X"  # the provider-scoped entry first
    assert found.entry["context_length"] == 2000  # ... over LiteLLM's 3000
    assert found.entry["description"] == "From OpenRouter."  # then OpenRouter
    assert found.entry["max_output_tokens"] == 500  # then LiteLLM, for what the others lack
    assert found.entry["pricing"] == {"prompt": 1e-06}
    whisper = catalog.match("whisper-x", "openai")
    assert whisper is not None
    assert (whisper.id, whisper.matched_via) == ("litellm/openai/whisper-x", "litellm_id")
    assert whisper.entry["capabilities"] == ["transcription"]  # OpenAI's entry, not Azure's
    llama = catalog.match("llama-x", "groq")  # LiteLLM's provider prefix is not in the id
    assert llama is not None
    assert llama.entry["context_length"] == 8192
    assert catalog.match("llama-x", "openai") is None  # never across providers
