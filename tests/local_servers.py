"""Fake local LLM servers for the discovery tests, on real loopback sockets.

Each fake answers the endpoints the fingerprints ask as the real server does: status, JSON
shape, content type, the `Server` header where the real server sets a telling one, and its own
answer to a path it does not serve. The bodies are in tests/fixtures/local_servers/<kind>/ and
their README names the source of each. Beside the LLM servers there are the odd listeners a
probe must never take for one: a plain web page, a redirect, a TLS socket, a socket that never
answers, one that sends garbage, one that resets.

Every fake records every request it receives into a shared `Traffic`: path and headers for the
HTTP fakes, the raw bytes for the socket ones. `Traffic` also counts the requests in flight at
once across all fakes (each request can be held `pause` seconds to make overlaps visible).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

FIXTURES = Path(__file__).parent / "fixtures" / "local_servers"
CREDENTIAL_HEADERS = ("authorization", "proxy-authorization", "x-api-key", "api-key", "cookie")

Reply = Callable[[web.Request], web.Response]


@dataclass(frozen=True)
class Seen:
    """One HTTP request as a fake received it."""

    server: str
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]


@dataclass
class Traffic:
    """Everything the fakes of one test received, and the most requests in flight at once."""

    requests: list[Seen] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)  # what the socket fakes read
    in_flight: int = 0
    most_in_flight: int = 0
    pause: float = 0.0

    def credentials(self) -> list[str]:
        """Every credential any fake was sent (expected: none)."""
        found = [
            f"{seen.server} {seen.path}: {name}"
            for seen in self.requests
            for name, _ in seen.headers
            if name.lower() in CREDENTIAL_HEADERS
        ]
        for data in self.raw:
            for line in data.split(b"\r\n"):
                name = line.partition(b":")[0].strip().lower().decode("latin-1")
                if name in CREDENTIAL_HEADERS:
                    found.append(f"raw socket: {name}")
        return found

    def paths(self, server: str) -> list[str]:
        return [seen.path for seen in self.requests if seen.server == server]


def fixture(kind: str, name: str) -> bytes:
    return (FIXTURES / kind / name).read_bytes()


def answer(
    kind: str,
    name: str,
    *,
    status: int = 200,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> Reply:
    """A reply with a fixture's bytes."""
    body = fixture(kind, name)

    def reply(_: web.Request) -> web.Response:
        return web.Response(
            status=status, body=body, content_type=content_type, headers=headers or {}
        )

    return reply


def empty(status: int) -> Reply:
    def reply(_: web.Request) -> web.Response:
        return web.Response(status=status)

    return reply


class FakeServer:
    """An aiohttp app that plays one server: exact paths, else `fallback`."""

    def __init__(
        self,
        name: str,
        traffic: Traffic,
        routes: dict[str, Reply],
        fallback: Reply,
        *,
        server_header: str | None = None,
    ) -> None:
        self.name, self.traffic = name, traffic
        self.routes, self.fallback, self.server_header = routes, fallback, server_header
        self._runner: web.AppRunner | None = None

    async def start(self, port: int = 0) -> int:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port, reuse_address=True).start()
        address = self._runner.addresses[0]
        return int(address[1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _dispatch(self, request: web.Request) -> web.Response:
        traffic = self.traffic
        traffic.requests.append(
            Seen(self.name, request.method, request.path_qs, tuple(request.headers.items()))
        )
        traffic.in_flight += 1
        traffic.most_in_flight = max(traffic.most_in_flight, traffic.in_flight)
        try:
            if traffic.pause:
                await asyncio.sleep(traffic.pause)
            reply = self.routes.get(request.path, self.fallback)
            response = reply(request)
            if self.server_header is not None:
                response.headers["Server"] = self.server_header
            return response
        finally:
            traffic.in_flight -= 1


# --- The LLM servers ------------------------------------------------------------------------


def ollama(traffic: Traffic) -> FakeServer:
    """Ollama (gin): no Server header, 404 "404 page not found" in text/plain."""
    text = "text/plain"
    return FakeServer(
        "ollama",
        traffic,
        {
            "/": answer("ollama", "root.txt", content_type=text),
            "/api/version": answer("ollama", "version.json"),
            "/api/tags": answer("ollama", "tags.json"),
        },
        answer("ollama", "not-found.txt", status=404, content_type=text),
    )


def lmstudio(traffic: Traffic, *, api: str = "v1", auth: bool = False) -> FakeServer:
    """LM Studio (Express): `api` "v1" (0.4+, /api/v1 and /api/v0), "v0" (0.3.6+) or "none"
    (older: only the OpenAI endpoints). A path it does not serve gets 200 and its "Unexpected
    endpoint or method" error. With `auth`, every request is refused with 401."""
    express = {"X-Powered-By": "Express"}
    template = fixture("lmstudio", "unexpected-endpoint.json").decode()

    def unexpected(request: web.Request) -> web.Response:
        body = template.replace("{method}", request.method).replace("{path}", request.path_qs)
        return web.Response(body=body.encode(), content_type="application/json", headers=express)

    if auth:
        refusal = answer("lmstudio", "unauthorized.json", status=401, headers=express)
        return FakeServer("lmstudio", traffic, {}, refusal)
    routes = {"/v1/models": answer("lmstudio", "v1-models.json", headers=express)}
    if api in ("v1", "v0"):
        routes["/api/v0/models"] = answer("lmstudio", "api-v0-models.json", headers=express)
    if api == "v1":
        routes["/api/v1/models"] = answer("lmstudio", "api-v1-models.json", headers=express)
    return FakeServer("lmstudio", traffic, routes, unexpected)


def llamacpp(traffic: Traffic, *, api_key: bool = False) -> FakeServer:
    """llama-server: `Server: llama.cpp` on every answer; with `api_key`, everything but its
    public endpoints (/health, /models, /v1/models) is refused with its 401 error."""
    routes = {
        "/health": answer("llamacpp", "health.json"),
        "/v1/health": answer("llamacpp", "health.json"),
        "/models": answer("llamacpp", "v1-models.json"),
        "/v1/models": answer("llamacpp", "v1-models.json"),
    }
    if api_key:
        fallback = answer("llamacpp", "unauthorized.json", status=401)
    else:
        routes["/props"] = answer("llamacpp", "props.json")
        fallback = answer("llamacpp", "not-found.json", status=404)
    return FakeServer("llamacpp", traffic, routes, fallback, server_header="llama.cpp")


def llamafile(traffic: Traffic) -> FakeServer:
    """llamafile's own server (llamafiler): `Server: llamafile/<version>`."""
    return FakeServer(
        "llamafile",
        traffic,
        {"/v1/models": answer("llamafile", "v1-models.json")},
        empty(404),
        server_header="llamafile/0.9.3",
    )


def vllm(traffic: Traffic, *, api_key: bool = False) -> FakeServer:
    """vLLM (FastAPI under uvicorn): `{"detail": "Not Found"}` for other paths. With `api_key`,
    its key middleware refuses every path under /v1 (only)."""
    refusal = answer("vllm", "unauthorized.json", status=401)
    not_found = answer("vllm", "not-found.json", status=404)

    def fallback(request: web.Request) -> web.Response:
        return (refusal if api_key and request.path.startswith("/v1") else not_found)(request)

    routes = {"/version": answer("vllm", "version.json"), "/health": empty(200)}
    if not api_key:
        routes["/v1/models"] = answer("vllm", "v1-models.json")
    return FakeServer("vllm", traffic, routes, fallback, server_header="uvicorn")


def tgi(traffic: Traffic) -> FakeServer:
    """Text Generation Inference (axum): an empty 404 for other paths."""
    return FakeServer(
        "tgi",
        traffic,
        {
            "/info": answer("tgi", "info.json"),
            "/v1/models": answer("tgi", "v1-models.json"),
            "/health": empty(200),
        },
        empty(404),
    )


def sglang(traffic: Traffic) -> FakeServer:
    """SGLang (FastAPI under uvicorn)."""
    return FakeServer(
        "sglang",
        traffic,
        {
            "/v1/models": answer("sglang", "v1-models.json"),
            "/get_model_info": answer("sglang", "get-model-info.json"),
            "/get_server_info": answer("sglang", "get-server-info.json"),
            "/health": empty(200),
        },
        answer("vllm", "not-found.json", status=404),
        server_header="uvicorn",
    )


def koboldcpp(
    traffic: Traffic, *, server_header: bool = True, protected: bool = False
) -> FakeServer:
    """KoboldCpp (Python's http.server, `Server: ConcedoLlamaForKoboldServer`), which emulates
    Ollama's /api/version and /api/tags, OpenAI's /v1/models and llama.cpp's /props. Without
    `server_header` it plays one behind a proxy that rewrites the header; `protected`: started
    with --password (its capabilities say so; listing still works)."""
    html = "text/html"
    capabilities = fixture("koboldcpp", "api-extra-version.json")
    if protected:
        capabilities = capabilities.replace(b'"protected": false', b'"protected": true')

    def extra_version(_: web.Request) -> web.Response:
        return web.Response(body=capabilities, content_type="application/json")

    return FakeServer(
        "koboldcpp",
        traffic,
        {
            "/api/extra/version": extra_version,
            "/api/version": answer("koboldcpp", "api-version.json"),
            "/api/tags": answer("koboldcpp", "api-tags.json"),
            "/api/v1/model": answer("koboldcpp", "api-v1-model.json"),
            "/api/extra/true_max_context_length": answer(
                "koboldcpp", "true-max-context-length.json"
            ),
            "/v1/models": answer("koboldcpp", "v1-models.json"),
            "/api/v1/models": answer("koboldcpp", "v1-models.json"),  # its endswith() match
            "/props": answer("koboldcpp", "props.json"),
            "/": answer("plain_page", "index.html", content_type=html),
        },
        answer("koboldcpp", "not-found.txt", status=404, content_type=html),
        server_header="ConcedoLlamaForKoboldServer" if server_header else None,
    )


def jan(traffic: Traffic, *, api_key: bool = True) -> FakeServer:
    """Jan's local API server (hyper): an API key is required for everything but "/",
    /openapi.json and the docs assets; refusals and 404s are plain text."""
    openapi = answer("jan", "openapi.json")
    if api_key:
        refusal = answer("jan", "unauthorized.txt", status=401, content_type="text/plain")
        return FakeServer("jan", traffic, {"/openapi.json": openapi}, refusal)
    return FakeServer(
        "jan",
        traffic,
        {"/openapi.json": openapi, "/v1/models": answer("jan", "v1-models.json")},
        answer("jan", "not-found.txt", status=404, content_type="text/plain"),
    )


def localai(traffic: Traffic, *, ollama_root: bool = False, api_key: bool = False) -> FakeServer:
    """LocalAI (echo), which emulates Ollama's /api/version and /api/tags, and with its Ollama
    flag also Ollama's "/" heartbeat (else "/" is its web UI). With `api_key`, every request is
    refused with its 401."""
    if api_key:
        refusal = answer(
            "localai", "unauthorized.json", status=401, headers={"WWW-Authenticate": "Bearer"}
        )
        return FakeServer("localai", traffic, {}, refusal)
    root = (
        answer("ollama", "root.txt", content_type="text/plain")
        if ollama_root
        else answer("plain_page", "index.html", content_type="text/html")
    )
    return FakeServer(
        "localai",
        traffic,
        {
            "/": root,
            "/v1/models": answer("localai", "v1-models.json"),
            "/.well-known/localai.json": answer("localai", "well-known.json"),
            "/version": answer("localai", "version.json"),
            "/api/version": answer("localai", "api-version.json"),
            "/api/tags": answer("localai", "api-tags.json"),
            "/readyz": empty(200),
            "/healthz": empty(200),
        },
        answer("localai", "not-found.json", status=404),
    )


def mlx(traffic: Traffic) -> FakeServer:
    """mlx_lm.server (Python's http.server, JSON headers even on its "Not Found")."""
    return FakeServer(
        "mlx",
        traffic,
        {"/v1/models": answer("mlx", "v1-models.json"), "/health": answer("mlx", "health.json")},
        answer("mlx", "not-found.txt", status=404),
        server_header="BaseHTTP/0.6 Python/3.12.11",
    )


def textgen_webui(traffic: Traffic) -> FakeServer:
    """text-generation-webui's OpenAI API (FastAPI under uvicorn, port 5000 by default)."""
    return FakeServer(
        "textgen_webui",
        traffic,
        {
            "/v1/models": answer("textgen_webui", "v1-models.json"),
            "/v1/internal/model/info": answer("textgen_webui", "internal-model-info.json"),
        },
        answer("vllm", "not-found.json", status=404),
        server_header="uvicorn",
    )


def openai_compatible(traffic: Traffic) -> FakeServer:
    """Some other server with OpenAI's model list and nothing else we know."""
    return FakeServer(
        "openai_compatible",
        traffic,
        {"/v1/models": answer("openai_compatible", "v1-models.json")},
        answer("vllm", "not-found.json", status=404),
    )


# --- The odd listeners ----------------------------------------------------------------------


def plain_page(traffic: Traffic) -> FakeServer:
    """A web page on every path, which also tries to set a cookie."""
    page = answer(
        "plain_page",
        "index.html",
        content_type="text/html",
        headers={"Set-Cookie": "session=3f2a9c; Path=/; HttpOnly"},
    )
    return FakeServer("plain_page", traffic, {}, page)


def redirecting(traffic: Traffic, to: str) -> FakeServer:
    """Every path redirects to `to` + path (a probe must not follow)."""

    def reply(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": to + request.path_qs})

    return FakeServer("redirecting", traffic, {}, reply)


class SocketServer:
    """A raw TCP listener; subclasses say what it does with each connection."""

    name = "socket"

    def __init__(self, traffic: Traffic) -> None:
        self.traffic = traffic
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, port: int = 0) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self.serve(reader, writer)
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            self._writers.discard(writer)
            if not writer.transport.is_closing():
                writer.transport.abort()
            self._tasks.discard(task)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def record(self, reader: asyncio.StreamReader) -> bytes:
        data = await reader.read(65536)
        if data:
            self.traffic.raw.append(data)
        return data


class SilentServer(SocketServer):
    """Accepts, reads, and never answers."""

    name = "silent"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await self.record(reader):
            pass


class GarbageServer(SocketServer):
    """Greets with an SSH banner and binary noise, whatever it is sent."""

    name = "garbage"
    NOISE = b"SSH-2.0-OpenSSH_9.6\r\n\x00\x00\x01\x14\x0a\x14\xfe\xed\xfa\xce\x8f\x01\x02"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(self.NOISE)
        await writer.drain()
        if await self.record(reader):
            writer.write(self.NOISE * 3)
            await writer.drain()


class ResetServer(SocketServer):
    """Accepts and resets the connection at once, before reading anything."""

    name = "reset"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()


class TlsServer(SocketServer):
    """A TLS server on a raw socket: OpenSSL (through `ssl.MemoryBIO`) runs the server side of
    the handshake on the bytes received, so the fake can also record what a client sent before
    the handshake failed. A real TLS client completes the handshake; a plain HTTP request gets
    whatever OpenSSL answers to one (an alert or nothing) and the connection closes."""

    name = "tls"

    def __init__(self, traffic: Traffic, context: ssl.SSLContext) -> None:
        super().__init__(traffic)
        self.context = context
        self.handshakes = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = self.context.wrap_bio(incoming, outgoing, server_side=True)
        try:
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    await self._flush(outgoing, writer)
                    data = await self.record(reader)
                    if not data:
                        return
                    incoming.write(data)
            self.handshakes += 1
            await self._flush(outgoing, writer)
            while True:  # it says nothing, and answers the client's close in kind
                try:
                    if tls.read(65536):
                        continue  # application data: ignored
                except ssl.SSLWantReadError:
                    if not (data := await reader.read(65536)):
                        return
                    incoming.write(data)
                    continue
                except ssl.SSLZeroReturnError:
                    pass
                with contextlib.suppress(ssl.SSLError):  # b"" or ZeroReturn: the client closed
                    tls.unwrap()
                await self._flush(outgoing, writer)
                return
        except ssl.SSLError:
            with contextlib.suppress(ConnectionError):
                await self._flush(outgoing, writer)  # the alert, if OpenSSL wrote one

    @staticmethod
    async def _flush(outgoing: ssl.MemoryBIO, writer: asyncio.StreamWriter) -> None:
        if outgoing.pending:
            writer.write(outgoing.read())
            await writer.drain()


def self_signed_tls(directory: Path) -> tuple[ssl.SSLContext, Path] | None:
    """A server context with a certificate for 127.0.0.1 made now, and the path of the PEM a
    client must trust; made with `cryptography` if installed, else `trustme`, else None."""
    for make in (_with_cryptography, _with_trustme):
        try:
            cert, key, trusted = make(directory)
        except ImportError:
            continue
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(cert), str(key) if key else None)
        return context, trusted
    return None


def _with_cryptography(directory: Path) -> tuple[Path, Path | None, Path]:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(private, hashes.SHA256())
    )
    cert, key = directory / "cert.pem", directory / "key.pem"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key, cert


def _with_trustme(directory: Path) -> tuple[Path, Path | None, Path]:
    import trustme

    authority = trustme.CA()
    chain, trusted = directory / "chain.pem", directory / "ca.pem"
    authority.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(chain))
    authority.cert_pem.write_to_path(str(trusted))
    return chain, None, trusted


# The fakes of the LLM servers, by name, each with its default settings.
SERVERS: dict[str, Callable[[Traffic], FakeServer]] = {
    "ollama": ollama,
    "lmstudio": lmstudio,
    "llamacpp": llamacpp,
    "llamafile": llamafile,
    "vllm": vllm,
    "tgi": tgi,
    "sglang": sglang,
    "koboldcpp": koboldcpp,
    "jan": lambda traffic: jan(traffic, api_key=False),
    "localai": localai,
    "mlx": mlx,
    "textgen_webui": textgen_webui,
    "openai_compatible": openai_compatible,
}
