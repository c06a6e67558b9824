"""A loopback daemon's safety: Host checks, the token, CORS, metrics, and no secret anywhere."""

from __future__ import annotations

import asyncio
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
import structlog
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from localrouter.app import COMPONENTS, create_app
from localrouter.base.log import configure_logging
from localrouter.cli import main
from localrouter.config.control import Client
from localrouter.http.metrics import FOLD_EVERY, LATENCY_BUCKETS, Metrics
from tests.conftest import (
    DaemonFactory,
    UpstreamFactory,
    openai_compatible,
    settings_from,
    settled,
)

TOKEN = "local-secret-token-31337"
KEY = "sk-provider-key-8c1d2e"
HEADER_SECRET = "hdr-secret-55aa"


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("127.0.0.1:8741", 200),
        ("localhost:8741", 200),
        ("LOCALHOST", 200),
        ("[::1]:8741", 200),
        ("evil.example:8741", 421),
        ("127.0.0.1.evil.example", 421),
        ("192.168.1.20:8741", 421),
    ],
)
async def test_host_header_must_name_loopback(daemon: DaemonFactory, host: str, status: int):
    client = await daemon({"providers": []})
    response = await client.get("/v1/models", headers={"Host": host})
    assert response.status == status
    if status == 421:
        error = (await response.json())["error"]
        assert "DNS rebinding" in error["message"]
        assert error["code"] == "host_not_allowed"


async def test_the_configured_host_and_allowed_hosts_are_allowed(daemon: DaemonFactory):
    named = await daemon({"server": {"host": "devbox.lan"}, "providers": []})
    assert (await named.get("/v1/models", headers={"Host": "devbox.lan:8741"})).status == 200
    assert (await named.get("/v1/models", headers={"Host": "other.lan"})).status == 421
    listed = await daemon({"server": {"allowed_hosts": ["gateway.lan"]}, "providers": []})
    assert (await listed.get("/v1/models", headers={"Host": "Gateway.LAN:80"})).status == 200


async def test_a_wildcard_bind_keeps_the_host_check_meaningful(aiohttp_client: Any):
    """Bound to every address, the daemon answers to its own name and to the address a client
    reached it on, and to allowed_hosts; a rebinding name is still refused."""
    settings = settings_from({"server": {"host": "0.0.0.0"}, "providers": []})
    # 127.0.0.2 stands in for a LAN address: loopback, but not a name the check knows.
    client = await aiohttp_client(create_app(settings), server_kwargs={"host": "127.0.0.2"})
    port = client.server.port

    async def status(host: str) -> int:
        return (await client.get("/v1/models", headers={"Host": host})).status

    assert await status(f"127.0.0.2:{port}") == 200
    assert await status(socket.gethostname()) == 200
    assert await status("anything.lan") == 421
    assert await status("evil.example") == 421
    assert await status("192.168.77.1") == 421  # an address, but not the one reached


async def test_a_bound_name_does_not_open_other_addresses(aiohttp_client: Any):
    settings = settings_from({"server": {"host": "devbox.lan"}, "providers": []})
    client = await aiohttp_client(create_app(settings), server_kwargs={"host": "127.0.0.2"})
    reached = f"127.0.0.2:{client.server.port}"
    assert (await client.get("/v1/models", headers={"Host": reached})).status == 421


def test_check_warns_of_a_wildcard_bind_without_a_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    path = tmp_path / "config.yaml"
    path.write_text("server: {host: 0.0.0.0}\nproviders: []\n")
    path.chmod(0o600)
    assert main(["check", "--config", str(path)]) == 0
    assert "accepts connections from other machines" in capsys.readouterr().err
    path.write_text(f"server: {{host: 0.0.0.0, auth_token: {TOKEN}}}\nproviders: []\n")
    assert main(["check", "--config", str(path)]) == 0
    assert "other machines" not in capsys.readouterr().err
    path.write_text("server: {host: 127.0.0.1}\nproviders: []\n")
    assert main(["check", "--config", str(path)]) == 0
    assert "other machines" not in capsys.readouterr().err


async def test_auth_token(upstream: UpstreamFactory, daemon: DaemonFactory):
    """With an auth_token, the API needs it as a Bearer token (none, a wrong one or a bare one is
    401 without echoing it), the OpenAI client works with it, and /health stays open."""
    up = await upstream()
    up.serve_models(["m"])
    config = {"server": {"auth_token": TOKEN}, "providers": [openai_compatible("one", up.url)]}
    client = await daemon(config)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        response = await client.get("/v1/models", headers=headers)
        assert response.status == 401
        error = (await response.json())["error"]
        assert error["code"] == "invalid_api_key"
        assert TOKEN not in error["message"]
    assert (await client.get("/health")).status == 200  # health stays open
    ok = await client.get("/v1/models", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status == 200
    api = openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key=TOKEN, max_retries=0)
    async with api:
        assert [m.id for m in (await api.models.list()).data] == ["one/m"]
    wrong = openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key="nope", max_retries=0)
    async with wrong:
        with pytest.raises(openai.AuthenticationError):
            await wrong.models.list()


async def test_no_cors_headers_unless_the_origin_is_listed(daemon: DaemonFactory):
    closed = await daemon({"providers": []})
    response = await closed.get("/v1/models", headers={"Origin": "http://app.test"})
    assert "Access-Control-Allow-Origin" not in response.headers
    preflight = await closed.options(
        "/v1/chat/completions",
        headers={"Origin": "http://app.test", "Access-Control-Request-Method": "POST"},
    )
    assert "Access-Control-Allow-Origin" not in preflight.headers

    client = await daemon({"server": {"cors_origins": ["http://app.test"]}, "providers": []})
    response = await client.get("/v1/models", headers={"Origin": "http://app.test"})
    assert response.headers["Access-Control-Allow-Origin"] == "http://app.test"
    assert "Origin" in response.headers["Vary"]
    other = await client.get("/v1/models", headers={"Origin": "http://evil.test"})
    assert "Access-Control-Allow-Origin" not in other.headers
    preflight = await client.options(
        "/v1/chat/completions",
        headers={
            "Origin": "http://app.test",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "http://app.test"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]


async def test_metrics_in_prometheus_text(upstream: UpstreamFactory, daemon: DaemonFactory):
    """/metrics is Prometheus text counting requests by route and status, their latencies, upstream
    calls and errors, models by source, instance health, cache hits and reloads."""
    good, bad = await upstream(), await upstream(status=500)
    good.serve_models(["a", "b"])
    client = await daemon(
        {"providers": [openai_compatible("good", good.url), openai_compatible("bad", bad.url)]}
    )
    for _ in range(3):
        await client.get("/v1/models")
    await client.get("/v1/nothing")
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(await response.text())
        for sample in family.samples
    }
    assert (
        samples[("localrouter_http_requests_total", (("route", "/v1/models"), ("status", "200")))]
        == 3
    )
    assert (
        samples[("localrouter_http_requests_total", (("route", "unmatched"), ("status", "404")))]
        == 1
    )
    bucket = ("localrouter_http_request_duration_seconds_count", (("route", "/v1/models"),))
    assert samples[bucket] == 3
    assert samples[("localrouter_upstream_calls_total", (("instance", "good"),))] == 1
    assert samples[("localrouter_upstream_errors_total", (("instance", "bad"),))] >= 1
    assert samples[("localrouter_models", (("instance", "good"), ("source", "live")))] == 2
    assert samples[("localrouter_instance_up", (("instance", "bad"),))] == 0
    assert samples[("localrouter_cache_hits_total", (("instance", "good"),))] >= 2
    assert samples[("localrouter_config_reloads_total", ())] == 0


def test_latency_buckets_are_cumulative_and_inclusive():
    metrics = Metrics()
    record = metrics.route("/v1/models").record
    for seconds in (0.0004, 0.001, 0.003, 120.0):  # 0.001 sits exactly on a bound: "le" holds it
        record(200, seconds)
    record(404, 0.002)
    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    buckets = {
        sample.labels["le"]: sample.value
        for sample in families["localrouter_http_request_duration_seconds"].samples
        if sample.name.endswith("_bucket")
    }
    assert buckets["0.0005"] == 1
    assert buckets["0.001"] == 2
    assert buckets["0.0025"] == 3
    assert buckets["0.005"] == 4
    assert buckets["60.0"] == 4
    assert buckets["+Inf"] == 5
    totals = {
        sample.labels["status"]: sample.value
        for sample in families["localrouter_http_requests"].samples
    }
    assert totals == {"200": 4, "404": 1}


def test_request_counts_stay_exact_across_folds_and_scrapes():
    """Requests are counted in batches (metrics.FOLD_EVERY): none is lost or counted twice,
    whether a batch is folded by the recorder or by a scrape."""
    metrics = Metrics()
    record = metrics.route("/v1/models").record

    def totals() -> tuple[float, float]:
        families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
        (requests,) = families["localrouter_http_requests"].samples
        count = next(
            sample.value
            for sample in families["localrouter_http_request_duration_seconds"].samples
            if sample.name.endswith("_count")
        )
        return requests.value, count

    for _ in range(FOLD_EVERY * 2 + 5):
        record(200, 0.001)
    assert totals() == (FOLD_EVERY * 2 + 5, FOLD_EVERY * 2 + 5)
    record(200, 0.001)
    assert totals() == (FOLD_EVERY * 2 + 6, FOLD_EVERY * 2 + 6)
    assert totals() == (FOLD_EVERY * 2 + 6, FOLD_EVERY * 2 + 6)


def test_statuses_and_clients_stay_exact_whether_a_batch_is_uniform_or_mixed():
    """A batch of one status from one caller is counted at a glance, a mixed one item by item;
    both give the same totals."""
    metrics = Metrics()
    record = metrics.route("/v1/models").record
    editor, agent = Client("editor", None), Client("agent", None)

    def counted() -> tuple[dict[str, float], dict[str, float]]:
        text = metrics.render().decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        requests, clients = (
            families[name].samples
            for name in ("localrouter_http_requests", "localrouter_client_requests")
        )
        by_status = {s.labels["status"]: s.value for s in requests}
        return by_status, {s.labels["client"]: s.value for s in clients}

    for _ in range(FOLD_EVERY):  # one client, one status: folded by the recorder
        record(200, 0.001, editor)
    assert counted() == ({"200": FOLD_EVERY}, {"editor": FOLD_EVERY})
    for caller in (None, agent, editor, None):  # mixed: folded by the scrape
        record(304 if caller is None else 200, 0.001, caller)
    assert counted() == ({"200": FOLD_EVERY + 2, "304": 2}, {"editor": FOLD_EVERY + 1, "agent": 1})
    for _ in range(3):  # anyone's, one status
        record(404, 0.001)
    statuses, clients = counted()
    assert statuses == {"200": FOLD_EVERY + 2, "304": 2, "404": 3}
    assert clients == {"editor": FOLD_EVERY + 1, "agent": 1}


def test_latencies_land_in_their_buckets_across_folds():
    """Each latency counts in every bucket whose bound it does not exceed (a bound itself
    included), and the sum is exact, however the batches fall."""
    metrics = Metrics()
    record = metrics.route("/v1/chat/completions").record
    latencies = [*LATENCY_BUCKETS, 0.0001, 0.0007, 0.3, 7.0, 61.0, 500.0] * (FOLD_EVERY // 7)
    for seconds in latencies:
        record(200, seconds)
    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    samples = families["localrouter_http_request_duration_seconds"].samples
    buckets = {s.labels["le"]: s.value for s in samples if s.name.endswith("_bucket")}
    for bound in LATENCY_BUCKETS:
        assert buckets[str(float(bound))] == sum(1 for s in latencies if s <= bound), bound
    assert buckets["+Inf"] == len(latencies)
    (total,) = [s.value for s in samples if s.name.endswith("_sum")]
    assert total == pytest.approx(sum(latencies))


@pytest.fixture
def logged_with_redaction(capsys: pytest.CaptureFixture[str]) -> Iterator[None]:
    yield
    structlog.reset_defaults()


async def test_secrets_never_reach_logs_responses_or_metrics(
    aiohttp_server: Any,
    daemon: DaemonFactory,
    capsys: pytest.CaptureFixture[str],
    logged_with_redaction: None,
    unused_tcp_port: int,
):
    """An upstream that echoes the key it got, everywhere it can: the key must not come out."""

    async def echo(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        team = request.headers.get("X-Team")
        message = f"Incorrect API key provided: {auth.removeprefix('Bearer ')} ({team})"
        return web.json_response({"error": {"message": message}}, status=401)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    server = await aiohttp_server(app)
    echoing = {
        "name": "leaky",
        "type": "openai",
        "base_url": str(server.make_url("/v1")),
        "api_key": KEY,
        "headers": {"X-Team": HEADER_SECRET},
    }
    down = {
        "name": "down",
        "type": "groq",
        "base_url": f"http://127.0.0.1:{unused_tcp_port}/v1",
        "api_key": KEY,
    }
    config = {"server": {"auth_token": TOKEN}, "providers": [echoing, down]}
    client = await daemon(config)
    configure_logging("debug", redactor=client.app[COMPONENTS].redactor)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    texts = []
    for method, path, body in [
        ("GET", "/v1/models", None),
        ("GET", "/api/models?refresh=true", None),
        ("GET", "/api/providers", None),
        ("GET", "/api/cache/stats", None),
        ("GET", "/api/models/unique", None),
        ("GET", "/health", None),
        ("GET", "/metrics", None),
        ("POST", "/v1/chat/completions", {"model": "leaky/gpt-4o", "messages": []}),
        ("POST", "/v1/chat/completions", {"model": "down/llama", "messages": []}),
        ("POST", "/v1/embeddings", {"model": "leaky/text-embedding-3-small", "input": "x"}),
        ("GET", "/v1/models/leaky/nothing", None),
    ]:
        response = await client.request(method, path, json=body, headers=auth)
        texts.append(f"{response.status} {dict(response.headers)} {await response.text()}")
    await settled(client, auth)  # every refresh ended, and logged
    captured = capsys.readouterr()
    everything = "\n".join(texts) + captured.out + captured.err
    assert "provider.refresh_failed" in captured.out + captured.err  # the lines waited for
    assert "Incorrect API key provided" in everything  # the echo did come back, redacted
    for secret in (KEY, TOKEN, HEADER_SECRET):
        assert secret not in everything


def test_check_warns_about_readable_configs_with_literal_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    path = tmp_path / "config.yaml"
    path.write_text(f"providers:\n  - {{name: oa, type: openai, api_key: {KEY}}}\n")
    path.chmod(0o644)
    assert main(["check", "--config", str(path)]) == 0
    err = capsys.readouterr().err
    assert "other users can read it: chmod 600" in err
    assert "providers[0].api_key" in err
    assert KEY not in err
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    main(["check", "--config", str(path)])
    assert "chmod 600" not in capsys.readouterr().err
    monkeypatch.setenv("OPENAI_KEY_VAR", KEY)
    path.write_text("providers:\n  - {name: oa, type: openai, api_key: '${OPENAI_KEY_VAR}'}\n")
    path.chmod(0o644)
    main(["check", "--config", str(path)])
    assert "chmod 600" not in capsys.readouterr().err


async def test_cli_models_and_cache_commands_talk_to_the_running_daemon(
    tmp_path: Path,
    upstream: UpstreamFactory,
    daemon: DaemonFactory,
    capsys: pytest.CaptureFixture[str],
):
    pricing = {"prompt": "0.000003", "completion": "0.000015"}
    up = await upstream(
        orjson.dumps({"data": [{"id": "acme/m1", "context_length": 8192, "pricing": pricing}]})
    )
    config = {
        "server": {"auth_token": TOKEN},
        "providers": [{"name": "or", "type": "openrouter", "base_url": up.url}],
    }
    client = await daemon(config)
    port = client.server.port
    path = tmp_path / "config.yaml"
    # The commands need only the daemon's address and token: variables the daemon's own
    # environment has (under systemd, not this shell's) are not asked for.
    path.write_text(
        f"server: {{port: {port}, auth_token: {TOKEN}}}\n"
        f"providers: [{{name: or, type: openrouter, base_url: '{up.url}'}},\n"
        "  {name: oa, type: openai, api_key: '${LR_TEST_UNSET_KEY}',"
        " headers: {X-Org: '${LR_TEST_UNSET_HEADER}'}},\n"
        "  {name: lab, type: openai_compatible, base_url: '${LR_TEST_UNSET_URL}'}]\n"
    )
    path.chmod(0o600)

    async def cli(*args: str) -> tuple[int, str]:
        code = await asyncio.to_thread(main, [*args, "--config", str(path)])
        return code, capsys.readouterr().out

    code, out = await cli("models")
    assert code == 0
    assert "or/acme/m1" in out
    assert "8192" in out
    assert "3" in out.split("or/acme/m1")[1]  # $3 per 1M prompt tokens
    assert "1 models" in out
    code, out = await cli("models", "--json")
    assert '"id": "or/acme/m1"' in out
    code, out = await cli("cache", "stats")
    assert code == 0
    assert "hit rate" in out
    code, out = await cli("cache", "clear", "or")
    assert "marked expired" in out
    assert "or" in out


def test_cli_says_when_the_daemon_is_not_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], unused_tcp_port: int
):
    path = tmp_path / "config.yaml"
    path.write_text(f"server: {{port: {unused_tcp_port}}}\nproviders: []\n")
    assert main(["models", "--config", str(path)]) == 1
    assert "is `localrouter serve` running?" in capsys.readouterr().err
