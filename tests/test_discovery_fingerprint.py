"""Fingerprinting local LLM servers (issue 38): every kind is told from the others by its own
answers, on real loopback sockets (fakes in tests/local_servers.py); what is not an LLM server
is never given a kind; and no probe ever sends a credential, follows a redirect or exceeds its
concurrency."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Protocol

import aiohttp
import pytest

from localrouter.discovery.asking import Finding, ServerKind, ServerState
from localrouter.discovery.fingerprint import probe, probe_all
from tests import local_servers as fakes
from tests.local_servers import FakeServer, Traffic

MAX_REQUESTS = 7  # per probe: the longest paths (Jan without a key, a web page) ask 7


class Startable(Protocol):
    async def start(self, port: int = 0) -> int: ...

    async def stop(self) -> None: ...


@dataclass
class Prober:
    """A plain session, and the URL of every request it started."""

    session: aiohttp.ClientSession
    sent: list[str]

    async def probe(self, port: int, seconds: float = 1.0) -> Finding:
        return await probe("127.0.0.1", port, self.session, timeout=seconds)


@pytest.fixture
def traffic() -> Iterator[Traffic]:
    """The fakes' shared record; after every test, no credential may have reached any fake."""
    seen = Traffic()
    yield seen
    assert seen.credentials() == []


@pytest.fixture
async def prober() -> AsyncIterator[Prober]:
    sent: list[str] = []

    async def started(_: Any, __: SimpleNamespace, params: aiohttp.TraceRequestStartParams) -> None:
        sent.append(str(params.url))

    tracing = aiohttp.TraceConfig()
    tracing.on_request_start.append(started)
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.DummyCookieJar(), trace_configs=[tracing]
    ) as session:
        yield Prober(session, sent)


@pytest.fixture
async def run() -> AsyncIterator[Callable[..., Awaitable[int]]]:
    """Start a fake (on `port`, or a free one) and stop it after the test."""
    started: list[Startable] = []

    async def start(server: Startable, port: int = 0) -> int:
        started.append(server)
        return await server.start(port)

    yield start
    for server in started:
        await server.stop()


@pytest.fixture
def tls(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    made = fakes.self_signed_tls(tmp_path)
    if made is None:
        pytest.skip("neither cryptography nor trustme is installed: no certificate for TLS")
    return made


@dataclass(frozen=True)
class Expected:
    kind: ServerKind
    state: ServerState = ServerState.SERVING
    version: str | None = None
    models: int | None = None
    context_length: int | None = None

    @property
    def path(self) -> str:
        return "" if self.kind is ServerKind.OLLAMA else "/v1"

    @property
    def provider_type(self) -> str:
        if self.kind in (ServerKind.OLLAMA, ServerKind.LMSTUDIO):
            return str(self.kind)
        if self.kind in (ServerKind.LLAMACPP, ServerKind.LLAMAFILE):
            return "llamacpp"  # reads /props for the context it was started with
        return "openai_compatible"


LOCALAI_VERSION = "v3.4.0 (5e4e3a8b07b2ff6ad0b72ab0c5bb09b3b9c1f1a8)"

# Each fake (and its variants) and the finding a probe must make of it.
CASES: dict[str, tuple[Callable[[Traffic], FakeServer], Expected]] = {
    "ollama": (fakes.ollama, Expected(ServerKind.OLLAMA, version="0.12.6", models=3)),
    "lmstudio": (fakes.lmstudio, Expected(ServerKind.LMSTUDIO, models=3)),
    "lmstudio 0.3 (api/v0 only)": (
        lambda t: fakes.lmstudio(t, api="v0"),
        Expected(ServerKind.LMSTUDIO, models=3),
    ),
    "lmstudio before 0.3.6 (OpenAI endpoints only)": (
        lambda t: fakes.lmstudio(t, api="none"),
        Expected(ServerKind.LMSTUDIO, models=3),
    ),
    "lmstudio with API tokens required": (
        lambda t: fakes.lmstudio(t, auth=True),
        Expected(ServerKind.LMSTUDIO, ServerState.AUTH_REQUIRED),
    ),
    "llamacpp": (
        fakes.llamacpp,
        Expected(ServerKind.LLAMACPP, version="b6123-1b2c3d4e", models=1, context_length=8192),
    ),
    "llamacpp with --api-key (its model list stays public)": (
        lambda t: fakes.llamacpp(t, api_key=True),
        Expected(ServerKind.LLAMACPP, models=1),
    ),
    "llamafile": (fakes.llamafile, Expected(ServerKind.LLAMAFILE, version="0.9.3", models=1)),
    "vllm": (
        fakes.vllm,
        Expected(ServerKind.VLLM, version="0.10.1.1", models=1, context_length=32768),
    ),
    "vllm with --api-key (only /v1 is guarded)": (
        lambda t: fakes.vllm(t, api_key=True),
        Expected(ServerKind.VLLM, ServerState.AUTH_REQUIRED, version="0.10.1.1"),
    ),
    "tgi": (fakes.tgi, Expected(ServerKind.TGI, version="3.3.4", models=1, context_length=8192)),
    "sglang": (
        fakes.sglang,
        Expected(ServerKind.SGLANG, version="0.4.9.post2", models=1, context_length=131072),
    ),
    "koboldcpp": (
        fakes.koboldcpp,
        Expected(ServerKind.KOBOLDCPP, version="1.97.4", models=1, context_length=16384),
    ),
    "koboldcpp behind a proxy (no Server header), emulating Ollama": (
        lambda t: fakes.koboldcpp(t, server_header=False),
        Expected(ServerKind.KOBOLDCPP, version="1.97.4", models=1, context_length=16384),
    ),
    "koboldcpp with a password": (
        lambda t: fakes.koboldcpp(t, protected=True),
        Expected(
            ServerKind.KOBOLDCPP,
            ServerState.AUTH_REQUIRED,
            version="1.97.4",
            models=1,
            context_length=16384,
        ),
    ),
    "jan without an API key": (
        lambda t: fakes.jan(t, api_key=False),
        Expected(ServerKind.JAN, models=1),
    ),
    "jan with its API key required": (
        fakes.jan,
        Expected(ServerKind.JAN, ServerState.AUTH_REQUIRED),
    ),
    "localai": (fakes.localai, Expected(ServerKind.LOCALAI, version=LOCALAI_VERSION, models=4)),
    "localai with Ollama's heartbeat on /": (
        lambda t: fakes.localai(t, ollama_root=True),
        Expected(ServerKind.LOCALAI, version=LOCALAI_VERSION, models=4),
    ),
    "localai with API keys": (
        lambda t: fakes.localai(t, api_key=True),
        Expected(ServerKind.LOCALAI, ServerState.AUTH_REQUIRED),
    ),
    "mlx": (fakes.mlx, Expected(ServerKind.MLX, models=2)),
    "textgen_webui": (fakes.textgen_webui, Expected(ServerKind.TEXTGEN_WEBUI, models=1)),
    "openai_compatible": (
        fakes.openai_compatible,
        Expected(ServerKind.OPENAI_COMPATIBLE, models=2),
    ),
}


def check(found: Finding, expected: Expected, port: int) -> None:
    assert (found.kind, found.state) == (expected.kind, expected.state), found.evidence
    assert found.version == expected.version
    assert found.models == expected.models
    assert found.context_length == expected.context_length
    assert found.base_url == f"http://127.0.0.1:{port}{expected.path}"
    assert found.provider_type == expected.provider_type
    assert (found.host, found.port) == ("127.0.0.1", port)
    assert found.evidence


@pytest.mark.parametrize("case", list(CASES))
async def test_each_server_is_recognised(
    case: str, traffic: Traffic, prober: Prober, run: Callable[..., Awaitable[int]]
) -> None:
    """Kind, state, version, model count, context window and the base URL a localrouter
    instance would use, from the server's own answers, in a handful of requests."""
    make, expected = CASES[case]
    port = await run(make(traffic))
    found = await prober.probe(port)
    check(found, expected, port)
    assert 1 <= len(traffic.requests) <= MAX_REQUESTS
    assert len(prober.sent) == len(traffic.requests)
    assert all(seen.method == "GET" for seen in traffic.requests)


async def test_koboldcpp_is_never_taken_for_ollama(
    traffic: Traffic, prober: Prober, run: Callable[..., Awaitable[int]]
) -> None:
    """KoboldCpp answers Ollama's /api/version and /api/tags; without its Server header, its
    /api/extra/version is what tells it apart, before anything concludes Ollama."""
    port = await run(fakes.koboldcpp(traffic, server_header=False))
    found = await prober.probe(port)
    assert found.kind is ServerKind.KOBOLDCPP
    asked = traffic.paths("koboldcpp")
    assert asked.index("/api/version") < asked.index("/api/extra/version")
    assert "/api/tags" not in asked


async def test_the_finding_follows_the_server_on_one_port(
    traffic: Traffic, prober: Prober, run: Callable[..., Awaitable[int]]
) -> None:
    """One port, one session: each server in turn is stopped and another started in its place,
    and every probe reports the one there now (neighbours that emulate each other included)."""
    order = [
        "ollama",
        "koboldcpp behind a proxy (no Server header), emulating Ollama",
        "ollama",
        "localai with Ollama's heartbeat on /",
        "lmstudio",
        "llamacpp",
        "koboldcpp",
        "llamafile",
        "vllm",
        "sglang",
        "tgi",
        "jan without an API key",
        "textgen_webui",
        "mlx",
        "localai",
        "openai_compatible",
        "lmstudio with API tokens required",
        "jan with its API key required",
        "localai with API keys",
        "vllm with --api-key (only /v1 is guarded)",
        "lmstudio with API tokens required",
        "ollama",
    ]
    assert set(CASES) - set(order) <= {
        "lmstudio 0.3 (api/v0 only)",
        "lmstudio before 0.3.6 (OpenAI endpoints only)",
        "llamacpp with --api-key (its model list stays public)",
        "koboldcpp with a password",
    }
    port = 0
    for case in order:
        make, expected = CASES[case]
        server = make(traffic)
        port = await run(server, port)
        check(await prober.probe(port), expected, port)
        await server.stop()
    assert (await prober.probe(port)).state is ServerState.NOT_RUNNING


async def test_a_plain_web_page_is_unknown(
    traffic: Traffic, prober: Prober, run: Callable[..., Awaitable[int]]
) -> None:
    """A page on every path (which also sets a cookie) is no LLM server, and the cookie is
    never sent back."""
    port = await run(fakes.plain_page(traffic))
    found = await prober.probe(port)
    assert (found.kind, found.state) == (None, ServerState.UNKNOWN_SERVER)
    assert (found.base_url, found.provider_type, found.models) == (None, None, None)
    assert len(traffic.requests) <= MAX_REQUESTS


async def test_a_redirect_is_never_followed(
    traffic: Traffic, prober: Prober, run: Callable[..., Awaitable[int]]
) -> None:
    target = fakes.ollama(traffic)
    target_port = await run(target)
    port = await run(fakes.redirecting(traffic, f"http://127.0.0.1:{target_port}"))
    found = await prober.probe(port)
    assert (found.kind, found.state) == (None, ServerState.UNKNOWN_SERVER)
    assert traffic.paths("ollama") == []
    assert all(f":{port}/" in url for url in prober.sent)


async def test_a_tls_socket_is_unknown(
    traffic: Traffic,
    prober: Prober,
    run: Callable[..., Awaitable[int]],
    tls: tuple[ssl.SSLContext, Path],
) -> None:
    context, trusted = tls
    server = fakes.TlsServer(traffic, context)
    port = await run(server)

    # It really is TLS: a client that trusts the certificate completes the handshake.
    client = ssl.create_default_context(cafile=str(trusted))
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
    writer.close()
    await writer.wait_closed()
    assert server.handshakes == 1

    found = await prober.probe(port)
    assert (found.kind, found.state) == (None, ServerState.UNKNOWN_SERVER)
    assert len(prober.sent) == 1  # no answer to the first question: nothing more is asked
    assert any(data.startswith(b"GET /api/version ") for data in traffic.raw)


async def test_a_silent_socket_is_unknown(
    traffic: Traffic, prober: Prober, run: Callable[..., Awaitable[int]]
) -> None:
    port = await run(fakes.SilentServer(traffic))
    found = await prober.probe(port, seconds=0.3)
    assert (found.kind, found.state) == (None, ServerState.UNKNOWN_SERVER)
    assert len(prober.sent) == 1
    assert traffic.raw
    assert traffic.raw[0].startswith(b"GET /api/version ")


async def test_garbage_bytes_are_unknown(
    traffic: Traffic, prober: Prober, run: Callable[..., Awaitable[int]]
) -> None:
    port = await run(fakes.GarbageServer(traffic))
    found = await prober.probe(port)
    assert (found.kind, found.state) == (None, ServerState.UNKNOWN_SERVER)
    assert len(prober.sent) == 1


async def test_a_socket_that_resets_gets_no_kind(
    traffic: Traffic, prober: Prober, run: Callable[..., Awaitable[int]]
) -> None:
    """It accepts TCP (so it is not simply closed) and resets before a byte: no kind, and no
    second question."""
    port = await run(fakes.ResetServer(traffic))
    found = await prober.probe(port)
    assert found.kind is None
    assert found.state in (ServerState.UNKNOWN_SERVER, ServerState.NOT_RUNNING)
    assert len(prober.sent) == 1


async def test_a_closed_port_is_not_running_and_gets_no_http(prober: Prober) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # free now, and nothing listens on it
    found = await prober.probe(port)
    assert (found.kind, found.state) == (None, ServerState.NOT_RUNNING)
    assert found.base_url is None
    assert prober.sent == []


@pytest.mark.parametrize("concurrency", [1, 2])
async def test_probe_all_keeps_to_its_concurrency(
    concurrency: int, traffic: Traffic, prober: Prober, run: Callable[..., Awaitable[int]]
) -> None:
    """Never more than `concurrency` probes at once (counted in the fakes, each of whose
    answers is held a moment so that overlaps show); the findings come in target order."""
    traffic.pause = 0.02
    names = ["ollama", "vllm", "llamacpp", "lmstudio", "tgi", "openai_compatible"]
    ports = [await run(CASES[name][0](traffic)) for name in names]
    found = await probe_all(
        [("127.0.0.1", port) for port in ports], prober.session, concurrency=concurrency
    )
    assert [finding.port for finding in found] == ports
    assert [str(finding.kind) for finding in found] == names
    assert traffic.most_in_flight == concurrency


async def test_no_credential_ever_reaches_a_server(
    traffic: Traffic,
    prober: Prober,
    run: Callable[..., Awaitable[int]],
    tmp_path: Path,
) -> None:
    """Every fake at once, odd ones included: not one request carried Authorization,
    Proxy-Authorization, X-Api-Key, Api-Key or Cookie (the plain page sets a cookie first)."""
    servers: list[Startable] = [make(traffic) for make, _ in CASES.values()]
    servers += [
        fakes.plain_page(traffic),
        fakes.SilentServer(traffic),
        fakes.GarbageServer(traffic),
    ]
    made = fakes.self_signed_tls(tmp_path)
    if made is not None:
        servers.append(fakes.TlsServer(traffic, made[0]))
    ports = [await run(server) for server in servers]
    ports = [ports[-1], *ports]  # the plain page's cookie, had it been kept, would go everywhere
    await probe_all([("127.0.0.1", port) for port in ports], prober.session, timeout=0.3)
    assert len(traffic.requests) > 2 * len(CASES)
    assert traffic.raw
    assert traffic.credentials() == []


@pytest.mark.parametrize(
    "options",
    [
        {"headers": {"Authorization": "Bearer sk-local"}},
        {"headers": {"X-Api-Key": "sk-local"}},
        {"headers": {"Cookie": "session=3f2a9c"}},
        {"trust_env": True},
        {},  # a real cookie jar
    ],
)
async def test_a_session_that_could_send_credentials_is_refused(
    options: dict[str, Any], traffic: Traffic, run: Callable[..., Awaitable[int]]
) -> None:
    port = await run(fakes.ollama(traffic))
    jar = {} if options == {} else {"cookie_jar": aiohttp.DummyCookieJar()}
    async with aiohttp.ClientSession(**jar, **options) as session:
        with pytest.raises(ValueError, match="plain session"):
            await probe("127.0.0.1", port, session)
        with pytest.raises(ValueError, match="plain session"):
            await probe_all([("127.0.0.1", port)], session)
    assert traffic.requests == []


def test_every_kind_has_a_fake_that_is_recognised() -> None:
    """llamafile releases that embed llama-server are reported as llamacpp (the module says
    why); every kind still has its own fake here."""
    assert {expected.kind for _, expected in CASES.values()} == set(ServerKind)
    assert set(fakes.SERVERS) == {str(kind) for kind in ServerKind}
