"""A hostile or broken upstream, file or request: no key leaves, memory stays bounded, the loop
keeps answering. Each class of input from the hardening review has its own tests here; the
memory bounds are checked on a real `localrouter serve` process (test_hardening_memory.py)."""

from __future__ import annotations

import asyncio
import gzip
import os
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from aiohttp import web

from localrouter.app import COMPONENTS
from localrouter.base.errors import ConfigError
from localrouter.base.log import configure_logging
from localrouter.config.loading import parse_settings
from localrouter.providers.parsing import number, positive_int, unix_time
from tests.conftest import (
    DaemonFactory,
    UpstreamFactory,
    eventually,
    openai_compatible,
    settled,
)

KEY = "sk-hostile-key-7e3f9a0b"
HEADER_SECRET = "hdr-secret-c0ffee42"


class Recorder:
    """A loopback server that records every request it gets (the redirect's target)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(dict(request.headers))
        return web.json_response({"data": [{"id": "stolen"}]})


async def serve(aiohttp_server: Any, handler: Any) -> str:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


# --- 1. redirects -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider_type", "path"),
    [("anthropic", "/v1"), ("gemini", "/v1beta"), ("openai_compatible", "/v1")],
)
@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_list_fetches_do_not_follow_redirects(
    aiohttp_server: Any, daemon: DaemonFactory, provider_type: str, path: str, status: int
):
    """No key or custom header reaches the host a 3xx names; the error names the Location."""
    target = Recorder()
    target_url = await serve(aiohttp_server, target.handle)

    async def redirect(request: web.Request) -> web.Response:
        location = f"http://user:pw@{target_url.removeprefix('http://')}/steal?k=1"
        return web.Response(status=status, headers={"Location": location})

    origin = await serve(aiohttp_server, redirect)
    config = {
        "providers": [
            {
                "name": "redirected",
                "type": provider_type,
                "base_url": origin + path,
                "api_key": KEY,
                "headers": {"X-Secret": HEADER_SECRET},
            }
        ],
        "model_cache": {"use_catalog_fallback": False},
    }
    client = await daemon(config)
    listing = await (await client.get("/api/models?refresh=true")).json()
    assert target.requests == []
    error = listing["providers"]["redirected"]["error"]
    assert f"HTTP {status}" in error
    assert f"{target_url}/steal" in error  # the Location, without credentials or query
    assert "instance 'redirected'" in error
    assert "pw" not in error
    assert "k=1" not in error


@pytest.mark.parametrize("status", [302, 307, 308])
async def test_proxied_calls_do_not_follow_redirects(
    aiohttp_server: Any, daemon: DaemonFactory, status: int
):
    target = Recorder()
    target_url = await serve(aiohttp_server, target.handle)

    async def upstream(request: web.Request) -> web.Response:
        if request.method == "GET":
            return web.json_response({"data": [{"id": "m"}]})
        return web.Response(status=status, headers={"Location": f"{target_url}/v1/chat"})

    origin = await serve(aiohttp_server, upstream)
    instance = {**openai_compatible("up", origin + "/v1"), "api_key": KEY}
    client = await daemon({"providers": [instance]})
    for path in ("/v1/chat/completions", "/v1/embeddings", "/v1/completions"):
        response = await client.post(path, json={"model": "up/m", "messages": []})
        assert response.status == 502
        error = (await response.json())["error"]
        assert error["code"] == "upstream_redirect"
        assert f"{target_url}/v1/chat" in error["message"]
    assert target.requests == []  # the prompt went nowhere else


# --- 2. oversized and compressed bodies -------------------------------------------------------


def gzip_bomb(decoded_bytes: int) -> bytes:
    block = b"\0" * (1024 * 1024)
    deflate = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: a gzip container
    parts = [deflate.compress(block) for _ in range(decoded_bytes // len(block))]
    parts.append(deflate.flush())
    return b"".join(parts)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/embeddings", "/v1/completions"])
@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
async def test_oversized_answers_are_a_502_naming_the_limit(
    aiohttp_server: Any, daemon: DaemonFactory, path: str, compressed: bool
):
    limit = 64 * 1024
    body = gzip_bomb(8 * 1024 * 1024) if compressed else b'{"x":"' + b"a" * (1024 * 1024) + b'"}'

    async def upstream(request: web.Request) -> web.Response:
        if request.method == "GET":
            return web.json_response({"data": [{"id": "m"}]})
        headers = {"Content-Encoding": "gzip"} if compressed else {}
        return web.Response(body=body, content_type="application/json", headers=headers)

    origin = await serve(aiohttp_server, upstream)
    instance = openai_compatible("big", origin + "/v1", max_response_bytes=limit)
    client = await daemon({"providers": [instance]})
    response = await client.post(path, json={"model": "big/m", "messages": []})
    assert response.status == 502
    error = (await response.json())["error"]
    assert error["code"] == "upstream_too_large"
    assert "instance 'big'" in error["message"]
    assert str(limit) in error["message"]


async def test_an_answer_within_the_limit_is_whole(aiohttp_server: Any, daemon: DaemonFactory):
    payload = orjson.dumps({"object": "chat.completion", "text": "z" * 50_000})

    async def upstream(request: web.Request) -> web.Response:
        if request.method == "GET":
            return web.json_response({"data": [{"id": "m"}]})
        return web.Response(
            body=gzip.compress(payload),
            content_type="application/json",
            headers={"Content-Encoding": "gzip"},
        )

    origin = await serve(aiohttp_server, upstream)
    instance = openai_compatible("ok", origin + "/v1", max_response_bytes=64 * 1024)
    client = await daemon({"providers": [instance]})
    response = await client.post("/v1/chat/completions", json={"model": "ok/m", "messages": []})
    assert response.status == 200
    assert await response.read() == payload


# --- 3. out-of-range numbers ------------------------------------------------------------------

HUGE = [1e20, 10**25, -5, "99999999999999999999999", 1e308, True]


@pytest.mark.parametrize("value", HUGE, ids=repr)
def test_parsers_turn_out_of_range_numbers_into_unknown(value: Any):
    assert positive_int(value) is None
    assert unix_time(value) == 0
    assert number(value) is None or abs(number(value) or 0) <= 1e6  # type: ignore[operator]


def test_dates_beyond_any_calendar_are_unknown():
    assert unix_time("99999-01-01T00:00:00Z") == 0
    assert unix_time("2024-01-01T00:00:00Z") == 1704067200


BAD_MODELS: dict[str, bytes] = {
    "openai_compatible": b'{"data": [{"id": "wild", "created": 1e20, "context_length": 1e20,'
    b' "top_provider": {"max_completion_tokens": 100000000000000000000000},'
    b' "pricing": {"prompt": "1e400", "completion": 1e300}}, {"id": "tame", "created": 5}]}',
    "lmstudio": b'{"data": [{"id": "wild", "type": "llm", "max_context_length": 1e20},'
    b' {"id": "tame", "type": "llm"}]}',
    "gemini": b'{"models": [{"name": "models/wild", "inputTokenLimit": 1e20,'
    b' "outputTokenLimit": 99999999999999999999999,'
    b' "supportedGenerationMethods": ["generateContent"]},'
    b' {"name": "models/tame", "supportedGenerationMethods": ["generateContent"]}]}',
    "cohere": b'{"models": [{"name": "wild", "context_length": 1e20, "endpoints": ["chat"]},'
    b' {"name": "tame", "endpoints": ["chat"]}]}',
}


@pytest.mark.parametrize("provider_type", sorted(BAD_MODELS))
async def test_one_wild_number_never_breaks_the_merged_list(
    tmp_path: Path, upstream: UpstreamFactory, daemon: DaemonFactory, provider_type: str
):
    wild = await upstream(BAD_MODELS[provider_type])
    good = await upstream()
    good.serve_models(["fine"])
    base = {"gemini": "/v1beta", "lmstudio": "/v1"}.get(provider_type, "/v1")
    config = {
        "providers": [
            {"name": "wild", "type": provider_type, "base_url": wild.url + base, "api_key": KEY},
            openai_compatible("good", good.url),
        ]
    }
    client = await daemon(config, cache_dir=tmp_path)
    listing = await client.get("/v1/models")
    assert listing.status == 200
    ids = [m["id"] for m in (await listing.json())["data"]]
    assert "good/fine" in ids
    assert "wild/wild" in ids
    assert "wild/tame" in ids
    assert (await client.get("/api/models")).status == 200
    one = await client.get("/v1/models/wild/wild")
    assert one.status == 200
    entry = await one.json()
    assert entry["created"] == 0
    assert "context_length" not in entry

    async def persisted() -> bool:  # and the list is persisted like any other
        return (tmp_path / "lists" / "wild.json").exists()

    assert await eventually(persisted, "the list being persisted")


# --- 9. loose edges ---------------------------------------------------------------------------


async def test_unusable_model_ids_are_dropped(upstream: UpstreamFactory, daemon: DaemonFactory):
    ids = ["ok", "bell\x07", "line\nbreak", "cr\rid", "nul\x00", "esc\x1b[2J", "x" * 1_000_000]
    up = await upstream(orjson.dumps({"data": [{"id": i} for i in ids]}))
    client = await daemon({"providers": [openai_compatible("up", up.url)]})
    body = await (await client.get("/v1/models")).json()
    assert [m["id"] for m in body["data"]] == ["up/ok"]


async def test_host_with_text_after_the_bracket_is_refused(daemon: DaemonFactory):
    client = await daemon({"providers": []})
    for host in ("[::1]evil.com", "[::1]:80evil", "[::1"):
        assert (await client.get("/v1/models", headers={"Host": host})).status == 421
    assert (await client.get("/v1/models", headers={"Host": "[::1]:8741"})).status == 200


async def test_two_authorization_headers_are_refused(daemon: DaemonFactory):
    client = await daemon({"server": {"auth_token": "tok-123456"}, "providers": []})
    headers = [("Authorization", "Bearer tok-123456"), ("Authorization", "Bearer other")]
    response = await client.get("/v1/models", headers=headers)
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "ambiguous_credentials"
    ok = await client.get("/v1/models", headers={"Authorization": "Bearer tok-123456"})
    assert ok.status == 200


# --- 6. the CORS preflight --------------------------------------------------------------------


async def test_a_preflight_from_a_listed_origin_needs_no_token(daemon: DaemonFactory):
    server = {"auth_token": "tok-123456", "cors_origins": ["http://app.test"]}
    client = await daemon({"server": server, "providers": []})
    preflight = {
        "Origin": "http://app.test",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    answer = await client.options("/v1/chat/completions", headers=preflight)
    assert answer.status == 204
    assert "POST" in answer.headers["Access-Control-Allow-Methods"]
    assert answer.headers["Access-Control-Allow-Headers"] == "authorization, content-type"
    stranger = {**preflight, "Origin": "http://evil.test"}
    refused = await client.options("/v1/chat/completions", headers=stranger)
    assert refused.status != 204
    assert "Access-Control-Allow-Origin" not in refused.headers
    actual = await client.post(
        "/v1/chat/completions", json={}, headers={"Origin": preflight["Origin"]}
    )
    assert actual.status == 401  # the real request still needs the token


# --- 7. special files where a persisted list should be -------------------------------------


@pytest.mark.parametrize(
    "kind", ["dev-zero-link", "outside-link", "fifo", "sparse-1g", "directory"]
)
async def test_persisted_list_files_must_be_small_regular_files(
    tmp_path: Path, daemon: DaemonFactory, unused_tcp_port: int, kind: str
):
    lists = tmp_path / "cache" / "lists"
    lists.mkdir(parents=True)
    target = lists / "down.json"
    if kind == "dev-zero-link":
        target.symlink_to("/dev/zero")
    elif kind == "outside-link":
        outside = tmp_path / "elsewhere.json"
        outside.write_bytes(b'{"format": 1}')
        target.symlink_to(outside)
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "sparse-1g":
        with target.open("wb") as file:
            file.truncate(1024**3)
    else:
        target.mkdir()
    config = {
        "providers": [openai_compatible("down", f"http://127.0.0.1:{unused_tcp_port}/v1")],
    }
    with structlog.testing.capture_logs() as logs:
        client = await daemon(config, cache_dir=tmp_path / "cache")
        listing = await client.get("/v1/models")
        assert listing.status == 200
        assert (await listing.json())["data"] == []
        assert (await client.get("/health")).status == 200
    reasons = [event["reason"] for event in logs if event["event"] == "persist.file_ignored"]
    expected = {"sparse-1g": "larger than", "directory": "not a file", "fifo": "not a file"}
    assert len(reasons) == 1
    assert expected.get(kind, "is it a link?") in reasons[0]


# --- 8. config errors -------------------------------------------------------------------------


def test_config_errors_never_show_a_substituted_value():
    text = "providers:\n  - name: x\n    type: openai_compatible\n    base_url: ${OPENAI_API_KEY}\n"
    with pytest.raises(ConfigError) as caught:
        parse_settings(text, "c.yaml", {"OPENAI_API_KEY": KEY})
    assert "providers[0].base_url" in str(caught.value)
    assert KEY not in str(caught.value)
    assert KEY[:8] not in str(caught.value)
    typo = "providers:\n  - name: x\n    type: ${GROQ_API_KEY}\n    base_url: http://h/v1\n"
    with pytest.raises(ConfigError) as caught:
        parse_settings(typo, "c.yaml", {"GROQ_API_KEY": "gsk_" + "a1" * 20})
    assert "gsk_" not in str(caught.value)
    assert "providers[0].type" in str(caught.value)


async def test_a_reload_error_shows_no_secret_in_health(tmp_path: Path, daemon: DaemonFactory):
    config = tmp_path / "config.yaml"
    config.write_text("providers: []\n")
    client = await daemon({"providers": []}, config_path=config)
    reloader = client.app[COMPONENTS].reloader
    os.environ["LR_TEST_LEAK"] = KEY
    try:
        config.write_text(
            "providers:\n  - name: x\n    type: openai_compatible\n    base_url: ${LR_TEST_LEAK}\n"
        )
        assert await reloader.reload() is False
    finally:
        del os.environ["LR_TEST_LEAK"]
    health = await (await client.get("/health")).text()
    assert "base_url" in health
    assert KEY not in health


# --- 5. redaction: truncation, escapes, streams -----------------------------------------------


@pytest.fixture
def logged_with_redaction() -> Any:
    yield
    structlog.reset_defaults()


async def test_keys_never_leak_through_cuts_escapes_or_streams(
    aiohttp_server: Any,
    daemon: DaemonFactory,
    capsys: pytest.CaptureFixture[str],
    logged_with_redaction: None,
):
    """An upstream that echoes the key where a cut, an escape or a chunk boundary would hide it
    from a naive redactor: no prefix of it comes out anywhere."""
    escaped = "".join(f"\\u{ord(c):04x}" for c in KEY)

    async def hostile(request: web.Request) -> web.StreamResponse:
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if request.method == "GET" and request.path.endswith("/models"):
            pad = "p" * (290 - len("Incorrect API key: "))  # the key straddles a 300-char cut
            return web.json_response(
                {"error": {"message": f"Incorrect API key: {pad}{key}"}}, status=401
            )
        body = await request.json()
        if body.get("stream"):
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            event = b'data: {"choices":[{"delta":{"content":"' + key.encode() + b'"}}]}\n\n'
            await response.write(event[:40])  # the key split across two chunks
            await response.write(event[40:])
            escaped_event = '{"choices":[{"delta":{"content":"' + escaped + '"}}]}'
            await response.write(b"data: " + escaped_event.encode() + b"\n\ndata: [DONE]\n\n")
            return response
        if body["model"] == "escape":
            raw = '{"error": {"message": "bad key ' + escaped + '"}}'
            return web.Response(text=raw, status=401, content_type="application/json")
        if body["model"] == "plain-cut":
            text = "x" * 290 + key
            return web.Response(text=text, status=500, content_type="text/plain")
        return web.json_response({"choices": [{"message": {"content": f"echo {key}"}}]})

    origin = await serve(aiohttp_server, hostile)
    config = {
        "providers": [
            {"name": "evil", "type": "openai", "base_url": origin + "/v1", "api_key": KEY}
        ],
        "model_cache": {"use_catalog_fallback": False},
    }
    client = await daemon(config)
    configure_logging("debug", redactor=client.app[COMPONENTS].redactor)
    texts = []
    for method, path, body in [
        ("GET", "/api/models?refresh=true", None),
        ("GET", "/api/providers", None),
        ("GET", "/api/cache/stats", None),
        ("GET", "/health", None),
        ("GET", "/metrics", None),
        ("POST", "/v1/chat/completions", {"model": "evil/escape", "messages": []}),
        ("POST", "/v1/chat/completions", {"model": "evil/plain-cut", "messages": []}),
        ("POST", "/v1/chat/completions", {"model": "evil/echo", "messages": []}),
        ("POST", "/v1/chat/completions", {"model": "evil/s", "messages": [], "stream": True}),
    ]:
        response = await client.request(method, path, json=body)
        text = await response.text()
        texts.append(text)
        if text.startswith("{"):
            texts.append(str(orjson.loads(text)))  # what a client's JSON decoder restores
    await settled(client)  # every refresh ended, and logged
    captured = capsys.readouterr()
    everything = "\n".join(texts) + captured.out + captured.err
    assert "provider.refresh_failed" in captured.out + captured.err  # the lines waited for
    assert "Incorrect API key" in everything
    assert "[DONE]" in everything
    for size in range(6, len(KEY) + 1):
        assert KEY[:size] not in everything, KEY[:size]


# --- 4. loop stalls -------------------------------------------------------------------------


async def test_the_loop_keeps_answering_while_a_long_list_is_parsed(
    aiohttp_server: Any, daemon: DaemonFactory
):
    """Between the upstream's last byte and the list being served, /health keeps answering:
    parsing and enriching 20,000 models happens off the loop (it used to block it whole)."""
    body = orjson.dumps(
        {"data": [{"id": f"vendor/model-{i:05d}", "context_length": 8192} for i in range(20_000)]}
    )
    sent = asyncio.Event()

    async def models(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(body)
        await response.write_eof()
        sent.set()
        return response

    origin = await serve(aiohttp_server, models)
    client = await daemon({"providers": [openai_compatible("big", origin + "/v1")]})
    await asyncio.wait_for(sent.wait(), 30)
    answered = 0
    for _ in range(100_000):
        stats = await (await client.get("/api/cache/stats")).json()
        if stats["instances"]["big"]["count"] == 20_000:
            break
        assert (await client.get("/health")).status == 200
        answered += 1
    assert stats["instances"]["big"]["count"] == 20_000
    # The old code answered none: the parse held the loop from the last byte to the end. A few
    # suffice to show it is off the loop (the parse lasts hundreds of round trips; no timing).
    assert answered >= 3, f"only {answered} /health answers while the list was parsed"


async def test_suggestions_for_an_unknown_model_come_from_a_long_list(
    upstream: UpstreamFactory, daemon: DaemonFactory
):
    up = await upstream()
    up.serve_models([f"vendor/model-{i:05d}-instruct" for i in range(20_000)])
    client = await daemon({"providers": [openai_compatible("big", up.url)]})
    assert (await client.get("/v1/models")).status == 200
    body = {"model": "vendor/model-01234-instrukt", "messages": []}  # a bare id nobody lists
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status == 404
    assert "vendor/model-01234-instruct" in (await response.json())["error"]["message"]
    missing = await client.get("/v1/models/big/vendor/model-04321-instrukt")
    assert "big/vendor/model-04321-instruct" in (await missing.json())["error"]["message"]
