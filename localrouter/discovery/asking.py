"""What a probe asks a port with (fingerprint.py decides what the answers mean): the
session check (no credential, cookie or proxy can go out), the TCP connect that comes first,
and the asker, which GETs each path once, reads at most BODY_LIMIT of a body, and builds the
finding; with the finding's types."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import aiohttp
import orjson

from localrouter.base.secrets import CREDENTIAL_HEADERS
from localrouter.providers import PROVIDERS
from localrouter.upstream.client import USER_AGENT

BODY_LIMIT = 256 * 1024  # bytes of a decoded body read at most; a longer body is not parsed
_EVIDENCE_CHARS = 80

# The provider types a localrouter instance of each kind is configured with.
_OLLAMA_TYPE = PROVIDERS["ollama"].type
_LMSTUDIO_TYPE = PROVIDERS["lmstudio"].type
_LLAMACPP_TYPE = PROVIDERS["llamacpp"].type  # /props: the context it was started with
_OPENAI_TYPE = PROVIDERS["openai_compatible"].type

# "Connection: close": each question on a fresh connection, so a pooled connection to a server
# that has since stopped (or been replaced on the same port) can never answer for the new one.
_REQUEST_HEADERS = {"User-Agent": USER_AGENT, "Connection": "close"}


class ServerKind(StrEnum):
    OLLAMA = "ollama"
    LMSTUDIO = "lmstudio"
    LLAMACPP = "llamacpp"
    VLLM = "vllm"
    TGI = "tgi"
    SGLANG = "sglang"
    KOBOLDCPP = "koboldcpp"
    JAN = "jan"
    LOCALAI = "localai"
    LLAMAFILE = "llamafile"
    MLX = "mlx"
    TEXTGEN_WEBUI = "textgen_webui"
    OPENAI_COMPATIBLE = "openai_compatible"


class ServerState(StrEnum):
    SERVING = "serving"  # it answered its model list without credentials
    AUTH_REQUIRED = "auth_required"  # a known server that wants a key (or password) first
    NOT_RUNNING = "not_running"  # nothing accepts TCP connections on the port
    UNKNOWN_SERVER = "unknown_server"  # something listens, but no server this module knows


@dataclass(frozen=True, slots=True)
class Finding:
    """What answered on host:port. `kind` is None for `not_running` and `unknown_server`."""

    host: str
    port: int
    kind: ServerKind | None
    state: ServerState
    version: str | None = None
    models: int | None = None  # how many models it lists; None when not asked or not readable
    # What a localrouter instance of `provider_type` would be configured with: Ollama's root,
    # LM Studio's and every other server's `/v1`.
    base_url: str | None = None
    context_length: int | None = None  # the one served model's context window, when told
    provider_type: str | None = None  # "ollama", "lmstudio", "llamacpp", "openai_compatible"
    evidence: str = ""  # the answers that decided, for people (logs, the console)


def check_session(session: aiohttp.ClientSession) -> None:
    problems: list[str] = []
    if session.auth is not None:
        problems.append("it has default auth")
    present = {name.lower() for name in session.headers}
    problems += [
        f"it sends a default {name} header" for name in CREDENTIAL_HEADERS if name in present
    ]
    if getattr(session, "_default_proxy", None) is not None:
        problems.append("it has a default proxy")
    if session.trust_env:
        problems.append("trust_env would add .netrc credentials and environment proxies")
    if not isinstance(session.cookie_jar, aiohttp.DummyCookieJar):
        problems.append("its cookie jar would send cookies (use aiohttp.DummyCookieJar())")
    if problems:
        raise ValueError(
            "probing needs a plain session without credentials: " + "; ".join(problems)
        )


async def accepts(host: str, port: int, seconds: float) -> bool:
    """Whether a TCP connection opens; nothing is written to it."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), seconds)
    except (OSError, TimeoutError, OverflowError, ValueError):  # the last two: no such port
        return False
    writer.close()
    with contextlib.suppress(OSError):  # a peer that resets on close still accepted it
        await writer.wait_closed()
    return True


class NoAnswer(Exception):
    """A question got no HTTP answer at all: the probe stops with `state`."""

    def __init__(self, state: ServerState, why: str) -> None:
        super().__init__(why)
        self.state, self.why = state, why


@dataclass(frozen=True, slots=True)
class Answer:
    path: str
    status: int
    server: str  # the Server header, "" when absent
    content_type: str
    challenge: str  # the WWW-Authenticate header
    body: bytes
    complete: bool  # False when the body went past BODY_LIMIT (it is then never parsed)

    def json(self) -> Any:
        if not self.complete or not self.body:
            return None
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None

    def obj(self) -> dict[str, Any] | None:
        """The body as a JSON object, else None."""
        value = self.json()
        return value if isinstance(value, dict) else None

    def text(self) -> str:
        return self.body[:4096].decode("utf-8", "replace")

    @property
    def refused(self) -> bool:
        return self.status in (401, 403)


@dataclass
class Asker:
    """Asks one server questions and remembers the answers (no path is asked twice)."""

    host: str
    port: int
    session: aiohttp.ClientSession
    timeout: float
    answers: dict[str, Answer] = field(default_factory=dict)
    evidence: list[str] = field(default_factory=list)

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"http://{host}:{self.port}"

    async def get(self, path: str) -> Answer:
        """The answer to GET path; raises NoAnswer when no HTTP answer came."""
        if path in self.answers:
            return self.answers[path]
        try:
            answer = await self._fetch(path)
        except aiohttp.ClientConnectorError as exc:
            # The TCP connect worked a moment ago: the server went away meanwhile.
            raise NoAnswer(ServerState.NOT_RUNNING, f"GET {path}: {exc.strerror or exc}") from exc
        except TimeoutError as exc:
            raise NoAnswer(ServerState.UNKNOWN_SERVER, f"GET {path}: no answer in time") from exc
        except (aiohttp.ClientError, OSError, EOFError, ValueError) as exc:
            why = f"GET {path}: not HTTP ({type(exc).__name__})"
            raise NoAnswer(ServerState.UNKNOWN_SERVER, why) from exc
        self.answers[path] = answer
        return answer

    async def maybe(self, path: str) -> Answer | None:
        """The answer to GET path, or None when none came (for details, never for identity)."""
        try:
            return await self.get(path)
        except NoAnswer:
            return None

    async def _fetch(self, path: str) -> Answer:
        async with self.session.get(
            self.origin + path,
            headers=_REQUEST_HEADERS,
            allow_redirects=False,
            raise_for_status=False,
            middlewares=(),
            timeout=aiohttp.ClientTimeout(total=self.timeout),
        ) as response:
            body = bytearray()
            while len(body) <= BODY_LIMIT:
                chunk = await response.content.read(BODY_LIMIT + 1 - len(body))
                if not chunk:
                    break
                body += chunk
            return Answer(
                path=path,
                status=response.status,
                server=response.headers.get("Server", "").strip(),
                content_type=response.headers.get("Content-Type", ""),
                challenge=response.headers.get("WWW-Authenticate", ""),
                body=bytes(body[:BODY_LIMIT]),
                complete=len(body) <= BODY_LIMIT,
            )

    def note(self, answer: Answer, said: str) -> None:
        line = f"GET {answer.path} -> {answer.status} {said}"[:_EVIDENCE_CHARS]
        if not any(noted.startswith(f"GET {answer.path} ") for noted in self.evidence):
            self.evidence.append(line)

    def finding(
        self,
        kind: ServerKind | None,
        state: ServerState,
        *,
        version: str | None = None,
        models: int | None = None,
        context_length: int | None = None,
    ) -> Finding:
        provider, base_url = None, None
        if kind is ServerKind.OLLAMA:
            provider, base_url = _OLLAMA_TYPE, self.origin
        elif kind is ServerKind.LMSTUDIO:
            provider, base_url = _LMSTUDIO_TYPE, self.origin + "/v1"
        elif kind in (ServerKind.LLAMACPP, ServerKind.LLAMAFILE):
            provider, base_url = _LLAMACPP_TYPE, self.origin + "/v1"
        elif kind is not None:
            provider, base_url = _OPENAI_TYPE, self.origin + "/v1"
        return Finding(
            host=self.host,
            port=self.port,
            kind=kind,
            state=state,
            version=version,
            models=models,
            base_url=base_url,
            context_length=context_length,
            provider_type=provider,
            evidence="; ".join(self.evidence),
        )
