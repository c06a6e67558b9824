"""GET /api/models: the detailed view, its filters, partial failure and caller keys."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from tests.conftest import DaemonFactory, UpstreamFactory, eventually, openai_compatible


async def two_providers(upstream: UpstreamFactory, daemon: DaemonFactory) -> Any:
    chat = await upstream()
    chat.body = orjson.dumps(
        {
            "data": [
                {"id": "Alpha-Chat", "name": "Alpha Chat Model"},
                {"id": "text-embedding-small"},
            ]
        }
    )
    other = await upstream()
    other.serve_models(["beta-instruct"])
    config = {
        "providers": [openai_compatible("one", chat.url), openai_compatible("two", other.url)]
    }
    return await daemon(config)


async def test_shape_and_provider_status(upstream: UpstreamFactory, daemon: DaemonFactory):
    """/api/models lists every instance's models with each provider's status (count, source, age, no
    error), and a second call is answered from the cache."""
    client = await two_providers(upstream, daemon)
    body = await (await client.get("/api/models")).json()
    assert body["success"] is True
    assert body["errors"] == []
    assert [m["id"] for m in body["models"]] == [
        "one/Alpha-Chat",
        "one/text-embedding-small",
        "two/beta-instruct",
    ]
    one = body["providers"]["one"]
    assert one["success"] is True
    assert one["count"] == 2
    assert one["source"] == "live"
    assert one["error"] is None
    assert isinstance(one["age_seconds"], float)
    again = await (await client.get("/api/models")).json()
    assert again["cached"] is True
    assert again["providers"]["two"]["cached"] is True


async def test_filters(upstream: UpstreamFactory, daemon: DaemonFactory):
    """/api/models narrows the list by provider, by a case-insensitive search of id or name, and by
    capability, alone or combined."""
    client = await two_providers(upstream, daemon)

    async def ids(query: str) -> list[str]:
        response = await client.get(f"/api/models?{query}")
        assert response.status == 200
        return [m["id"] for m in (await response.json())["models"]]

    assert await ids("provider=two") == ["two/beta-instruct"]
    assert await ids("search=ALPHA") == ["one/Alpha-Chat"]
    assert await ids("search=chat%20model") == ["one/Alpha-Chat"]  # matches the name
    assert await ids("capability=embedding") == ["one/text-embedding-small"]
    assert await ids("capability=chat&provider=one") == ["one/Alpha-Chat"]
    assert await ids("search=nothing-like-this") == []


async def test_invalid_parameters_are_400_naming_the_parameter(
    upstream: UpstreamFactory, daemon: DaemonFactory
):
    client = await two_providers(upstream, daemon)
    for query, param in (("provider=three", "provider"), ("refresh=maybe", "refresh")):
        response = await client.get(f"/api/models?{query}")
        assert response.status == 400
        error = (await response.json())["error"]
        assert error["param"] == param
        assert error["message"].startswith(f"{param}:")


async def test_refresh_bypasses_the_cache_once_for_concurrent_callers(
    upstream: UpstreamFactory, daemon: DaemonFactory
):
    up = await upstream()
    up.serve_models(["m"])
    client = await daemon({"providers": [openai_compatible("one", up.url)]})
    await client.get("/api/models")
    assert up.calls == 1

    async def misses() -> int:
        stats = await (await client.get("/api/cache/stats")).json()
        return int(stats["misses"])

    before = await misses()
    up.gate = asyncio.Event()  # the refreshed list is held until all ten callers wait for it
    refreshes = [asyncio.create_task(client.get("/api/models?refresh=true")) for _ in range(10)]

    async def all_waiting() -> bool:
        return await misses() - before >= len(refreshes)

    await eventually(all_waiting, "ten refreshes waiting on the upstream")
    up.gate.set()
    await asyncio.gather(*refreshes)
    assert up.calls == 2
    body = await (await client.get("/api/models?refresh=true")).json()
    assert body["cached"] is False
    assert up.calls == 3


async def test_partial_failure_lists_the_rest_with_errors(
    upstream: UpstreamFactory, daemon: DaemonFactory
):
    good = await upstream()
    good.serve_models(["fine"])
    bad = await upstream(status=500)
    config = {"providers": [openai_compatible("good", good.url), openai_compatible("bad", bad.url)]}
    client = await daemon(config)
    body = await (await client.get("/api/models")).json()
    assert body["success"] is False
    assert [m["id"] for m in body["models"]] == ["good/fine"]
    assert body["providers"]["bad"]["success"] is False
    assert body["providers"]["bad"]["count"] == 0
    assert [e["provider"] for e in body["errors"]] == ["bad"]
    assert "HTTP 500" in body["errors"][0]["error"]


async def test_caller_keys_are_used_and_kept_apart(aiohttp_server: Any, daemon: DaemonFactory):
    """Each key sees its own list; a caller's list reaches neither others nor /v1/models."""
    lists = {"Bearer sk-config-000": ["shared"], "Bearer sk-alice-111": ["alice-only"]}
    lists["Bearer sk-bob-222"] = ["bob-only"]
    seen: list[str] = []

    async def models(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        seen.append(auth)
        if auth not in lists:
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        return web.json_response({"data": [{"id": i} for i in lists[auth]]})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    server = await aiohttp_server(app)
    url = str(server.make_url("/v1"))
    config = {
        "providers": [{"name": "oa", "type": "openai", "base_url": url, "api_key": "sk-config-000"}]
    }
    client = await daemon(config)

    async def ids(path: str, key: str | None = None) -> list[str]:
        headers = {"X-Openai-Key": key} if key else {}
        response = await client.get(path, headers=headers)
        text = await response.text()
        assert "sk-alice-111" not in text
        assert "sk-bob-222" not in text
        data = orjson.loads(text)
        return [m["id"] for m in data.get("models", data.get("data", []))]

    assert await ids("/api/models", "sk-alice-111") == ["oa/alice-only"]
    assert await ids("/api/models", "sk-bob-222") == ["oa/bob-only"]
    assert await ids("/api/models") == ["oa/shared"]
    assert await ids("/v1/models") == ["oa/shared"]
    assert await ids("/api/models", "sk-alice-111") == ["oa/alice-only"]
    assert seen.count("Bearer sk-alice-111") == 1  # cached under alice's key hash
