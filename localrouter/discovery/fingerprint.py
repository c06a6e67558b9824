"""Which local LLM server answers on a port, told from the server's own answers.

`probe(host, port, session)` first opens a plain TCP connection and closes it: a refused or
timed-out connect is `not_running`, and no HTTP is sent. Then it asks a few GETs, one at a time,
and stops at the first answer that decides. No request carries credentials (the session must be
a plain one, see `probe`), none follows a redirect, each has a short timeout, and no body is read
past `BODY_LIMIT`. After the TCP connect succeeded, a request that cannot get an HTTP answer at
all (a TLS socket, a socket that never answers, garbage bytes) makes the port `unknown_server`.

The questions, in order, and why this order cannot mistake one server for another:

0. Every answer is first checked for a signature only one server writes, whatever was asked:
   `Server: llama.cpp` (llama-server sets it on every response, 401s included),
   `Server: llamafile/<version>` (llamafile's own server, "llamafiler"),
   `Server: ConcedoLlamaForKoboldServer` (KoboldCpp), and LM Studio's answer to a path it does
   not serve: 200 with `{"error": "Unexpected endpoint or method. (GET /path)"}`.
1. `GET /api/version`. Ollama answers `{"version": ...}`; but KoboldCpp and LocalAI emulate that
   endpoint (KoboldCpp answers a fixed "0.7.0", LocalAI "0.9.0"), so an Ollama-shaped answer is
   only a lead: `GET /api/extra/version` must not say `"result": "KoboldCpp"`,
   `GET /.well-known/localai.json` must not describe LocalAI, and `GET /` must say "Ollama is
   running" (LocalAI says it only behind a flag, KoboldCpp never). Only then is it Ollama, and
   `GET /api/tags` counts its models; a lead that fails goes on to the next steps. This step
   comes first because it is the cheapest question that Ollama, KoboldCpp and (through its
   catch-all) LM Studio all answer, and the signatures of step 0 usually settle llama.cpp,
   llamafile and KoboldCpp on this very first request. A refusal here that another server is
   known to give (see step 2) settles it too. Another localrouter says so in this answer's
   `Server` header (`localrouter/<version>`): it is `unknown_server`, never listed, since
   its models are its own upstreams' and two daemons listing each other would call in a loop.
2. `GET /api/v1/models` (LM Studio 0.4+: `{"models": [{"key", "type", ...}]}`), then, if that
   did not decide, `GET /api/v0/models` (LM Studio 0.3.6+: an OpenAI list whose items carry
   `type` and `state`). These paths are LM Studio's own. A 401/403 there means LM Studio with
   API tokens required (`auth_required`), unless the refusal is recognisably another server's:
   the `Server: llama.cpp` header, Jan's plain-text refusal, LocalAI's "An authentication key is
   required", the `{"error": "Unauthorized"}` of vLLM's and SGLang's key middleware, or an
   HTTP Basic challenge (a router or NAS page, not an LLM server). After that key middleware's
   refusal, `GET /version` tells vLLM (whose key guards only /v1) from the rest.
3. `GET /props`: llama-server's global properties, with `build_info` ("b<build>-<commit>") and
   `default_generation_settings.n_ctx`. KoboldCpp (and other servers) emulate `/props` without
   `build_info`, so only `build_info` (or the llama.cpp header) decides; an emulated answer
   falls through.
4. `GET /v1/models`, the OpenAI list every remaining server has; its `owned_by` names the server
   for vLLM ("vllm"), SGLang ("sglang"), llama.cpp ("llamacpp"), llamafile ("llamafile") and
   KoboldCpp ("koboldcpp"). For the rest one more question each, chosen by what the list shows:
   - `Server: BaseHTTP/...` (Python's http.server): mlx-lm's `mlx_lm.server`;
   - items without `owned_by`: `GET /.well-known/localai.json` (LocalAI);
   - `owned_by: "user"`: `GET /v1/internal/model/info` with `model_name` and `lora_names`
     (text-generation-webui), then `GET /openapi.json` titled "Jan ..." (Jan, no key set);
   - one item whose `owned_by` is its own `id`: `GET /info` with `router:
     "text-generation-router"` (TGI).
   Anything else in OpenAI's shape is `openai_compatible`. A 401/403 on `/v1/models` is a known
   refusal (step 2), or Jan when `GET /openapi.json` (which Jan serves without a key) says so,
   or, when the refusal is JSON, an OpenAI-compatible server that wants a key; anything else
   refused is `unknown_server`. A server without a usable `/v1/models` gets two last questions,
   `GET /info` (TGI before it had `/v1/models`) and `GET /get_model_info` (SGLang's native
   API, `model_path` and `is_generation`); then it is `unknown_server`.

`auth_required` means the server is known but wants a key (or, for KoboldCpp, whose
capabilities say `"protected": true`, a password) before it serves; `models` is then None
unless the list itself stayed public.

Versions come from `/api/version` (Ollama), `/api/extra/version` (KoboldCpp), `/props`
`build_info` (llama.cpp), the `Server` header (llamafile), `/version` (vLLM), `/info` (TGI),
`/get_server_info` (SGLang) and `/.well-known/localai.json` (LocalAI); LM Studio, Jan, mlx-lm
and text-generation-webui publish none. llamafile releases that embed llama-server itself (0.10
and later, and the 0.8 series that forked it) answer exactly as llama-server does, headers
included, so they are reported as `llamacpp`: nothing in their HTTP answers tells them apart.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import aiohttp
import orjson

from localrouter import PRODUCT
from localrouter.base.secrets import CREDENTIAL_HEADERS
from localrouter.providers import PROVIDERS
from localrouter.providers.parsing import positive_int, text
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

_LMSTUDIO_UNEXPECTED = "Unexpected endpoint or method."
_JAN_REFUSALS = ("Missing authorization header", "Invalid or missing authorization token")
_LOCALAI_REFUSAL = "An authentication key is required"


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


async def probe(
    host: str,
    port: int,
    session: aiohttp.ClientSession,
    *,
    timeout: float = 1.0,  # noqa: ASYNC109 (seconds per question, not one deadline for all)
) -> Finding:
    """Fingerprint one port (see the module docstring for the questions asked).

    `session` must be plain: no `auth`, no default credential headers (Authorization,
    Proxy-Authorization, X-Api-Key, Api-Key, Cookie), no default proxy, `trust_env` off (it would
    add .netrc credentials and environment proxies) and `cookie_jar=aiohttp.DummyCookieJar()` (a
    real jar would send one local service's cookies to every other port of the host). A session
    that could send credentials raises ValueError before anything is sent. Each request also
    overrides the session's middlewares and `raise_for_status`."""
    _check_session(session)
    if not await _accepts(host, port, timeout):
        return Finding(host, port, None, ServerState.NOT_RUNNING, evidence="TCP connect failed")
    asker = _Asker(host, port, session, timeout)
    try:
        return await _identify(asker)
    except _NoAnswer as stop:
        return Finding(host, port, None, stop.state, evidence=stop.why)


async def probe_all(
    targets: Iterable[tuple[str, int]],
    session: aiohttp.ClientSession,
    *,
    concurrency: int = 4,
    timeout: float = 1.0,  # noqa: ASYNC109 (passed on to each probe)
) -> list[Finding]:
    """`probe` every (host, port), at most `concurrency` at a time; findings in target order."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    _check_session(session)
    limit = asyncio.Semaphore(concurrency)

    async def bounded(host: str, port: int) -> Finding:
        async with limit:
            return await probe(host, port, session, timeout=timeout)

    return list(await asyncio.gather(*(bounded(host, port) for host, port in targets)))


def _check_session(session: aiohttp.ClientSession) -> None:
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


async def _accepts(host: str, port: int, seconds: float) -> bool:
    """Whether a TCP connection opens; nothing is written to it."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), seconds)
    except (OSError, TimeoutError, OverflowError, ValueError):  # the last two: no such port
        return False
    writer.close()
    with contextlib.suppress(OSError):  # a peer that resets on close still accepted it
        await writer.wait_closed()
    return True


class _NoAnswer(Exception):
    """A question got no HTTP answer at all: the probe stops with `state`."""

    def __init__(self, state: ServerState, why: str) -> None:
        super().__init__(why)
        self.state, self.why = state, why


@dataclass(frozen=True, slots=True)
class _Answer:
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
class _Asker:
    """Asks one server questions and remembers the answers (no path is asked twice)."""

    host: str
    port: int
    session: aiohttp.ClientSession
    timeout: float
    answers: dict[str, _Answer] = field(default_factory=dict)
    evidence: list[str] = field(default_factory=list)

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"http://{host}:{self.port}"

    async def get(self, path: str) -> _Answer:
        """The answer to GET path; raises _NoAnswer when no HTTP answer came."""
        if path in self.answers:
            return self.answers[path]
        try:
            answer = await self._fetch(path)
        except aiohttp.ClientConnectorError as exc:
            # The TCP connect worked a moment ago: the server went away meanwhile.
            raise _NoAnswer(ServerState.NOT_RUNNING, f"GET {path}: {exc.strerror or exc}") from exc
        except TimeoutError as exc:
            raise _NoAnswer(ServerState.UNKNOWN_SERVER, f"GET {path}: no answer in time") from exc
        except (aiohttp.ClientError, OSError, EOFError, ValueError) as exc:
            why = f"GET {path}: not HTTP ({type(exc).__name__})"
            raise _NoAnswer(ServerState.UNKNOWN_SERVER, why) from exc
        self.answers[path] = answer
        return answer

    async def maybe(self, path: str) -> _Answer | None:
        """The answer to GET path, or None when none came (for details, never for identity)."""
        try:
            return await self.get(path)
        except _NoAnswer:
            return None

    async def _fetch(self, path: str) -> _Answer:
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
            return _Answer(
                path=path,
                status=response.status,
                server=response.headers.get("Server", "").strip(),
                content_type=response.headers.get("Content-Type", ""),
                challenge=response.headers.get("WWW-Authenticate", ""),
                body=bytes(body[:BODY_LIMIT]),
                complete=len(body) <= BODY_LIMIT,
            )

    def note(self, answer: _Answer, said: str) -> None:
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


async def _identify(asker: _Asker) -> Finding:
    # 1. The Ollama family (and, through the signatures, most of the others).
    answer = await asker.get("/api/version")
    if answer.server.partition("/")[0] == PRODUCT.partition("/")[0]:
        # Another localrouter (its /api/version says so): its models are its upstreams',
        # and two daemons listing each other would call each other in a loop.
        asker.note(answer, f"Server: {answer.server}: another localrouter, not listed")
        return asker.finding(None, ServerState.UNKNOWN_SERVER)
    if (kind := _signature(answer)) is not None:
        return await _settle(asker, kind, answer)
    if text(_obj(answer).get("version")) and answer.status == 200:
        asker.note(answer, '{"version": ...}: Ollama or an emulation of it')
        found = await _ollama_or_emulator(asker)
        if found is not None:
            return found
    elif answer.refused and (found := await _known_refusal(asker, answer)) is not None:
        return found

    # 2. LM Studio's own REST API.
    for path in ("/api/v1/models", "/api/v0/models"):
        answer = await asker.get(path)
        if (kind := _signature(answer)) is not None:
            return await _settle(asker, kind, answer)
        if (listed := _lmstudio_models(answer)) is not None:
            asker.note(answer, "LM Studio's model list")
            return _lmstudio(asker, listed)
        if answer.refused:
            if (found := await _known_refusal(asker, answer)) is not None:
                return found
            asker.note(answer, "refused on LM Studio's own path")
            return asker.finding(ServerKind.LMSTUDIO, ServerState.AUTH_REQUIRED)

    # 3. llama-server's properties.
    answer = await asker.get("/props")
    if (kind := _signature(answer)) is not None:
        return await _settle(asker, kind, answer)
    if answer.status == 200 and text(_obj(answer).get("build_info")):
        asker.note(answer, "build_info")
        return await _llamacpp(asker)

    # 4. The OpenAI list, and one question more for the servers it does not name.
    return await _openai_family(asker)


async def _settle(asker: _Asker, kind: ServerKind, answer: _Answer) -> Finding:
    """Finish a server that a signature named."""
    asker.note(answer, f"signature of {kind}")
    if kind is ServerKind.LLAMACPP:
        return await _llamacpp(asker)
    if kind is ServerKind.LLAMAFILE:
        return await _llamafile(asker, answer.server)
    if kind is ServerKind.KOBOLDCPP:
        return await _koboldcpp(asker)
    return await _lmstudio_from_catch_all(asker)


async def _ollama_or_emulator(asker: _Asker) -> Finding | None:
    extra = await asker.get("/api/extra/version")
    if _signature(extra) is ServerKind.KOBOLDCPP or _is_koboldcpp(extra):
        return await _koboldcpp(asker)
    localai = await asker.get("/.well-known/localai.json")
    if _is_localai(localai):
        return await _localai(asker, localai)
    root = await asker.get("/")
    if root.status != 200 or not root.text().startswith("Ollama is running"):
        asker.note(root, "not Ollama's root")
        return None
    asker.note(root, "Ollama is running")
    version = text(_obj(await asker.get("/api/version")).get("version"))
    tags = await asker.maybe("/api/tags")
    models = _count(_obj(tags).get("models")) if tags is not None and tags.status == 200 else None
    return asker.finding(ServerKind.OLLAMA, ServerState.SERVING, version=version, models=models)


async def _known_refusal(asker: _Asker, answer: _Answer) -> Finding | None:
    """A 401/403 that another server than LM Studio is known to give, as a finding."""
    said = answer.text()
    if answer.challenge.lower().startswith("basic"):
        asker.note(answer, "HTTP Basic challenge")
        return asker.finding(None, ServerState.UNKNOWN_SERVER)
    if said.strip() in _JAN_REFUSALS:
        asker.note(answer, f"refusal {said.strip()!r}")
        openapi = await asker.maybe("/openapi.json")
        if openapi is not None and _is_jan(openapi):
            asker.note(openapi, "Jan's API description")
        return asker.finding(ServerKind.JAN, ServerState.AUTH_REQUIRED)
    error = _obj(answer).get("error")
    if isinstance(error, dict) and error.get("message") == _LOCALAI_REFUSAL:
        asker.note(answer, f"refusal {_LOCALAI_REFUSAL!r}")
        return asker.finding(ServerKind.LOCALAI, ServerState.AUTH_REQUIRED)
    if error == "Unauthorized":
        asker.note(answer, 'refusal {"error": "Unauthorized"}')
        # vLLM's key guards only /v1 (and /v2, /inference): its /version still answers.
        # SGLang's guards every path, so it stays a generic OpenAI-compatible server.
        version = await _version_of(asker, "/version", "version")
        kind = ServerKind.VLLM if version else ServerKind.OPENAI_COMPATIBLE
        return asker.finding(kind, ServerState.AUTH_REQUIRED, version=version)
    return None


async def _openai_family(asker: _Asker) -> Finding:
    answer = await asker.get("/v1/models")
    if (kind := _signature(answer)) is not None:
        return await _settle(asker, kind, answer)
    items = _openai_items(answer)
    if items is None:
        if answer.refused:
            return await _refused_models(asker, answer)
        for path, check, kind in (
            ("/info", _tgi_info, ServerKind.TGI),
            ("/get_model_info", _is_sglang_info, ServerKind.SGLANG),
        ):
            extra = await asker.get(path)
            if check(extra):
                asker.note(extra, f"native API of {kind}")
                return await _finish_openai(asker, kind, None)
        asker.note(answer, "no model list")
        return asker.finding(None, ServerState.UNKNOWN_SERVER)

    owners = {item.get("owned_by") for item in items}
    named = {
        "vllm": ServerKind.VLLM,
        "sglang": ServerKind.SGLANG,
        "llamacpp": ServerKind.LLAMACPP,
        "llamafile": ServerKind.LLAMAFILE,
        "koboldcpp": ServerKind.KOBOLDCPP,
    }
    if len(owners) == 1 and (owner := next(iter(owners))) in named:
        asker.note(answer, f"owned_by {owner!r}")
        return await _finish_openai(asker, named[owner], items, answer)
    if answer.server.startswith("BaseHTTP/"):
        asker.note(answer, "Python http.server: mlx_lm.server")
        return await _finish_openai(asker, ServerKind.MLX, items)
    for kind in _candidates(items, owners):
        if await _confirms(asker, kind):
            return await _finish_openai(asker, kind, items)
    asker.note(answer, "an OpenAI model list")
    return await _finish_openai(asker, ServerKind.OPENAI_COMPATIBLE, items)


def _candidates(items: list[dict[str, Any]], owners: set[Any]) -> list[ServerKind]:
    """The servers worth one more question, from what their model list shows."""
    if owners == {None}:
        return [ServerKind.LOCALAI]
    if "user" in owners:
        return [ServerKind.TEXTGEN_WEBUI, ServerKind.JAN]
    if len(items) == 1 and items[0].get("owned_by") == items[0].get("id"):
        return [ServerKind.TGI]
    return []


async def _confirms(asker: _Asker, kind: ServerKind) -> bool:
    if kind is ServerKind.LOCALAI:
        answer = await asker.get("/.well-known/localai.json")
        found = _is_localai(answer)
    elif kind is ServerKind.TEXTGEN_WEBUI:
        answer = await asker.get("/v1/internal/model/info")
        info = _obj(answer)
        found = isinstance(info.get("model_name"), str) and isinstance(info.get("lora_names"), list)
    elif kind is ServerKind.JAN:
        answer = await asker.get("/openapi.json")
        found = _is_jan(answer)
    else:
        answer = await asker.get("/info")
        found = _tgi_info(answer)
    if found:
        asker.note(answer, f"native API of {kind}")
    return found


async def _refused_models(asker: _Asker, answer: _Answer) -> Finding:
    if (found := await _known_refusal(asker, answer)) is not None:
        return found
    openapi = await asker.get("/openapi.json")
    if _is_jan(openapi):
        asker.note(openapi, "Jan's API description")
        return asker.finding(ServerKind.JAN, ServerState.AUTH_REQUIRED)
    if answer.obj() is not None:
        asker.note(answer, "refused, with a JSON error")
        return asker.finding(ServerKind.OPENAI_COMPATIBLE, ServerState.AUTH_REQUIRED)
    asker.note(answer, "refused, without a JSON error")
    return asker.finding(None, ServerState.UNKNOWN_SERVER)


async def _finish_openai(
    asker: _Asker,
    kind: ServerKind,
    items: list[dict[str, Any]] | None,
    listing: _Answer | None = None,
) -> Finding:
    """A server identified from (or, `items` None, without) its OpenAI list: its version and
    context window."""
    if kind is ServerKind.LLAMACPP:
        return await _llamacpp(asker)
    if kind is ServerKind.LLAMAFILE:
        return await _llamafile(asker, listing.server if listing else "")
    if kind is ServerKind.KOBOLDCPP:
        return await _koboldcpp(asker)
    if kind is ServerKind.LOCALAI:
        return await _localai(asker, await asker.get("/.well-known/localai.json"))
    models = len(items) if items is not None else None
    context = positive_int(items[0].get("max_model_len")) if items and len(items) == 1 else None
    version = None
    if kind is ServerKind.VLLM:
        version = await _version_of(asker, "/version", "version")
    elif kind is ServerKind.SGLANG:
        version = await _version_of(asker, "/get_server_info", "version")
    elif kind is ServerKind.TGI:
        info = _obj(await asker.maybe("/info"))
        version = text(info.get("version"))
        context = positive_int(info.get("max_total_tokens")) or context
        if models is None and text(info.get("model_id")):
            models = 1  # TGI serves the one model it was started with
    return asker.finding(
        kind, ServerState.SERVING, version=version, models=models, context_length=context
    )


async def _llamacpp(asker: _Asker) -> Finding:
    props = await asker.maybe("/props")
    info = _obj(props) if props is not None and props.status == 200 else {}
    settings = info.get("default_generation_settings")
    settings = settings if isinstance(settings, dict) else {}
    context = positive_int(settings.get("n_ctx")) or positive_int(info.get("n_ctx"))
    return await _listed(
        asker, ServerKind.LLAMACPP, version=text(info.get("build_info")), context=context
    )


async def _llamafile(asker: _Asker, server: str) -> Finding:
    version = server.partition("/")[2] or None
    return await _listed(asker, ServerKind.LLAMAFILE, version=version)


async def _koboldcpp(asker: _Asker) -> Finding:
    extra = await asker.maybe("/api/extra/version")
    capabilities = _obj(extra) if extra is not None and extra.status == 200 else {}
    protected = capabilities.get("protected") is True
    ctx = await asker.maybe("/api/extra/true_max_context_length")
    context = positive_int(_obj(ctx).get("value")) if ctx is not None else None
    found = await _listed(
        asker,
        ServerKind.KOBOLDCPP,
        version=text(capabilities.get("version")),
        context=context,
    )
    if protected:  # its generation endpoints want the password
        return replace(found, state=ServerState.AUTH_REQUIRED)
    return found


async def _localai(asker: _Asker, described: _Answer) -> Finding:
    asker.note(described, "LocalAI's discovery document")
    version = text(_obj(described).get("version"))
    return await _listed(asker, ServerKind.LOCALAI, version=version)


async def _listed(
    asker: _Asker, kind: ServerKind, *, version: str | None = None, context: int | None = None
) -> Finding:
    """A finding whose model count comes from `/v1/models` (refused there: auth_required)."""
    listing = await asker.maybe("/v1/models")
    if listing is not None and listing.refused:
        return asker.finding(kind, ServerState.AUTH_REQUIRED, version=version)
    items = _openai_items(listing) if listing is not None else None
    models = len(items) if items is not None else None
    return asker.finding(
        kind, ServerState.SERVING, version=version, models=models, context_length=context
    )


async def _lmstudio_from_catch_all(asker: _Asker) -> Finding:
    for path in ("/api/v1/models", "/api/v0/models"):
        answer = await asker.maybe(path)
        if answer is None:
            break
        if (listed := _lmstudio_models(answer)) is not None:
            return _lmstudio(asker, listed)
        if answer.refused:
            return asker.finding(ServerKind.LMSTUDIO, ServerState.AUTH_REQUIRED)
    # Before 0.3.6 LM Studio had only the OpenAI endpoints.
    listing = await asker.maybe("/v1/models")
    items = _openai_items(listing) if listing is not None else None
    return asker.finding(
        ServerKind.LMSTUDIO, ServerState.SERVING, models=len(items) if items is not None else None
    )


def _lmstudio(asker: _Asker, listed: list[dict[str, Any]]) -> Finding:
    context = None
    if len(listed) == 1:
        model = listed[0]
        loaded = model.get("loaded_instances")
        if isinstance(loaded, list) and loaded and isinstance(loaded[0], dict):
            config = loaded[0].get("config")
            context = (
                positive_int(config.get("context_length")) if isinstance(config, dict) else None
            )
        context = context or positive_int(model.get("loaded_context_length"))
        context = context or positive_int(model.get("max_context_length"))
    return asker.finding(
        ServerKind.LMSTUDIO, ServerState.SERVING, models=len(listed), context_length=context
    )


async def _version_of(asker: _Asker, path: str, key: str) -> str | None:
    answer = await asker.maybe(path)
    if answer is None or answer.status != 200:
        return None
    return text(_obj(answer).get(key))


def _signature(answer: _Answer) -> ServerKind | None:
    """The server that wrote this answer, when only one server writes it so."""
    server = answer.server
    if server == "llama.cpp":
        return ServerKind.LLAMACPP
    if server.startswith("llamafile/"):
        return ServerKind.LLAMAFILE
    if server.startswith("ConcedoLlamaForKoboldServer"):
        return ServerKind.KOBOLDCPP
    error = _obj(answer).get("error")
    if answer.status == 200 and isinstance(error, str) and error.startswith(_LMSTUDIO_UNEXPECTED):
        return ServerKind.LMSTUDIO
    return None


def _lmstudio_models(answer: _Answer) -> list[dict[str, Any]] | None:
    """LM Studio's native model list (v1: `models` with `key`; v0: `data` with `state`)."""
    if answer.status != 200:
        return None
    body = _obj(answer)
    v1 = body.get("models")
    if isinstance(v1, list) and all(
        isinstance(item, dict) and "key" in item and "type" in item for item in v1
    ):
        return v1
    v0 = body.get("data")
    if (
        body.get("object") == "list"
        and isinstance(v0, list)
        and all(isinstance(item, dict) and "type" in item and "state" in item for item in v0)
    ):
        return v0
    return None


def _openai_items(answer: _Answer | None) -> list[dict[str, Any]] | None:
    """The items of an OpenAI list (`{"object": "list", "data": [{"id": ...}]}`), else None."""
    if answer is None or answer.status != 200:
        return None
    body = _obj(answer)
    data = body.get("data")
    if body.get("object") != "list" or not isinstance(data, list):
        return None
    if not all(isinstance(item, dict) and text(item.get("id")) for item in data):
        return None
    return data


def _is_koboldcpp(answer: _Answer) -> bool:
    return answer.status == 200 and _obj(answer).get("result") == "KoboldCpp"


def _is_localai(answer: _Answer) -> bool:
    body = _obj(answer)
    return answer.status == 200 and bool(text(body.get("version"))) and "endpoints" in body


def _is_jan(answer: _Answer) -> bool:
    info = _obj(answer).get("info")
    title = info.get("title") if isinstance(info, dict) else None
    return answer.status == 200 and isinstance(title, str) and title.startswith("Jan ")


def _tgi_info(answer: _Answer) -> bool:
    body = _obj(answer)
    router = body.get("router")
    return (
        answer.status == 200
        and bool(text(body.get("model_id")))
        and isinstance(router, str)
        and router.startswith("text-generation-router")
    )


def _is_sglang_info(answer: _Answer) -> bool:
    body = _obj(answer)
    return (
        answer.status == 200
        and bool(text(body.get("model_path")))
        and isinstance(body.get("is_generation"), bool)
    )


def _obj(answer: _Answer | None) -> dict[str, Any]:
    """The answer's JSON object, or an empty one."""
    found = answer.obj() if answer is not None else None
    return found if found is not None else {}


def _count(value: Any) -> int | None:
    return len(value) if isinstance(value, list) else None
