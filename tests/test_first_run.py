"""What a new user meets first: no config, keys not exported, local servers not running."""

from __future__ import annotations

from typing import Any

from localrouter import __version__
from localrouter.app import create_app
from localrouter.config.loading import default_settings, parse_settings
from localrouter.providers.base import ProviderKind
from tests.conftest import DaemonFactory, UpstreamFactory, eventually, openai_compatible


async def test_with_no_local_server_running_the_default_shows_none_and_is_not_degraded(
    aiohttp_client: Any, unused_tcp_port: int
):
    """The embedded default lists no local instance of its own; discovery, probing a port
    nobody listens on (in place of the usual ones), finds none: no instance, nothing
    degraded."""
    settings = default_settings({})
    assert not [p for p in settings.providers if p.kind is ProviderKind.LOCAL]
    discovery = settings.discovery.model_copy(update={"ports": [unused_tcp_port]})
    keyless = [p for p in settings.providers if p.kind is not ProviderKind.CLOUD]
    quiet = settings.model_copy(update={"discovery": discovery, "providers": keyless})
    client = await aiohttp_client(create_app(quiet))
    assert (await client.get("/v1/models")).status == 200
    shown = await (await client.get("/api/discovery")).json()

    async def probed() -> bool:
        shown.update(await (await client.get("/api/discovery")).json())
        return bool(shown["rounds"])

    await eventually(probed, "a discovery round")
    assert [row["state"] for row in shown["servers"]] == ["not_running"]
    health = await (await client.get("/health")).json()
    assert health["status"] == "ok", health
    assert health["failing_instances"] == {}


async def test_a_configured_local_server_that_is_down_still_degrades(
    aiohttp_client: Any, unused_tcp_port: int
):
    config = f"providers:\n  - {{name: lab, type: lmstudio, base_url: 'http://127.0.0.1:{unused_tcp_port}/v1'}}\n"
    client = await aiohttp_client(create_app(parse_settings(config, "c.yaml", {})))
    await client.get("/v1/models")
    health = await (await client.get("/health")).json()
    assert health["status"] == "degraded"
    assert "lab" in health["failing_instances"]


async def test_health_says_which_instance_runs_without_its_key(
    upstream: UpstreamFactory, aiohttp_client: Any
):
    up = await upstream()
    config = (
        "providers:\n"
        "  - {name: oa, type: openai, api_key: '${LR_UNSET_KEY}'}\n"
        f"  - {{name: lab, type: openai_compatible, base_url: '{up.url}',"
        " api_key: '${LR_UNSET_LAB}'}\n"
    )
    client = await aiohttp_client(create_app(parse_settings(config, "c.yaml", {})))
    health = await (await client.get("/health")).json()
    assert health["status"] == "ok"
    assert health["notes"] == [
        "instance 'oa' is off: its api_key names LR_UNSET_KEY, which is not set; "
        "export LR_UNSET_KEY and reload to turn it on",
        "instance 'lab' runs without a key: LR_UNSET_LAB is not set",
    ]
    models = await (await client.get("/v1/models")).json()
    assert all(model["id"].startswith("lab/") for model in models["data"])


async def test_a_bare_id_is_retrieved_as_a_chat_request_resolves_it(
    upstream: UpstreamFactory, daemon: DaemonFactory
):
    first, second = await upstream(), await upstream()
    first.serve_models(["shared", "only-first"])
    second.serve_models(["shared", "only-second"])
    client = await daemon(
        {"providers": [openai_compatible("a", first.url), openai_compatible("b", second.url)]}
    )
    for bare, full in (("shared", "a/shared"), ("only-second", "b/only-second")):
        answer = await client.get(f"/v1/models/{bare}")
        assert answer.status == 200
        assert (await answer.json())["id"] == full
        chat = {"model": bare, "messages": [{"role": "user", "content": "hi"}]}
        assert (await client.post("/v1/chat/completions", json=chat)).status == 200
        owner = first if full.startswith("a/") else second
        assert owner.requests[-1]["path"] == "/chat/completions"
    missing = await client.get("/v1/models/no-such-model")
    assert missing.status == 404


async def test_head_of_the_model_list_and_the_user_agent(
    upstream: UpstreamFactory, daemon: DaemonFactory
):
    """HEAD of the model list and of one model answers 200 with no body, and upstreams are called as
    localrouter/<version>."""
    up = await upstream()
    up.serve_models(["m"])
    client = await daemon({"providers": [openai_compatible("a", up.url)]})
    head = await client.head("/v1/models")
    assert head.status == 200
    assert head.content_type == "application/json"
    assert await head.read() == b""
    assert (await client.head("/v1/models/a/m")).status == 200
    assert up.requests[0]["headers"]["User-Agent"] == f"localrouter/{__version__}"
