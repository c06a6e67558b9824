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
from collections.abc import Iterable
from typing import Any

import aiohttp

from localrouter import PRODUCT
from localrouter.discovery import details
from localrouter.discovery.asking import (
    Answer,
    Asker,
    Finding,
    NoAnswer,
    ServerKind,
    ServerState,
    accepts,
    check_session,
)
from localrouter.discovery.signs import (
    is_jan,
    is_koboldcpp,
    is_localai,
    is_sglang_info,
    list_length,
    lmstudio_models,
    object_of,
    openai_items,
    signature,
    tgi_info,
)
from localrouter.providers.parsing import text

_JAN_REFUSALS = ("Missing authorization header", "Invalid or missing authorization token")
_LOCALAI_REFUSAL = "An authentication key is required"


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
    check_session(session)
    if not await accepts(host, port, timeout):
        return Finding(host, port, None, ServerState.NOT_RUNNING, evidence="TCP connect failed")
    asker = Asker(host, port, session, timeout)
    try:
        return await _identify(asker)
    except NoAnswer as stop:
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
    check_session(session)
    limit = asyncio.Semaphore(concurrency)

    async def bounded(host: str, port: int) -> Finding:
        async with limit:
            return await probe(host, port, session, timeout=timeout)

    return list(await asyncio.gather(*(bounded(host, port) for host, port in targets)))


async def _identify(asker: Asker) -> Finding:
    # 1. The Ollama family (and, through the signatures, most of the others).
    answer = await asker.get("/api/version")
    if answer.server.partition("/")[0] == PRODUCT.partition("/")[0]:
        # Another localrouter (its /api/version says so): its models are its upstreams',
        # and two daemons listing each other would call each other in a loop.
        asker.note(answer, f"Server: {answer.server}: another localrouter, not listed")
        return asker.finding(None, ServerState.UNKNOWN_SERVER)
    if (kind := signature(answer)) is not None:
        return await _settle(asker, kind, answer)
    if text(object_of(answer).get("version")) and answer.status == 200:
        asker.note(answer, '{"version": ...}: Ollama or an emulation of it')
        found = await _ollama_or_emulator(asker)
        if found is not None:
            return found
    elif answer.refused and (found := await _known_refusal(asker, answer)) is not None:
        return found

    # 2. LM Studio's own REST API.
    for path in ("/api/v1/models", "/api/v0/models"):
        answer = await asker.get(path)
        if (kind := signature(answer)) is not None:
            return await _settle(asker, kind, answer)
        if (listed := lmstudio_models(answer)) is not None:
            asker.note(answer, "LM Studio's model list")
            return details.lmstudio(asker, listed)
        if answer.refused:
            if (found := await _known_refusal(asker, answer)) is not None:
                return found
            asker.note(answer, "refused on LM Studio's own path")
            return asker.finding(ServerKind.LMSTUDIO, ServerState.AUTH_REQUIRED)

    # 3. llama-server's properties.
    answer = await asker.get("/props")
    if (kind := signature(answer)) is not None:
        return await _settle(asker, kind, answer)
    if answer.status == 200 and text(object_of(answer).get("build_info")):
        asker.note(answer, "build_info")
        return await details.llamacpp(asker)

    # 4. The OpenAI list, and one question more for the servers it does not name.
    return await _openai_family(asker)


async def _settle(asker: Asker, kind: ServerKind, answer: Answer) -> Finding:
    """Finish a server that a signature named."""
    asker.note(answer, f"signature of {kind}")
    if kind is ServerKind.LLAMACPP:
        return await details.llamacpp(asker)
    if kind is ServerKind.LLAMAFILE:
        return await details.llamafile(asker, answer.server)
    if kind is ServerKind.KOBOLDCPP:
        return await details.koboldcpp(asker)
    return await details.lmstudio_from_catch_all(asker)


async def _ollama_or_emulator(asker: Asker) -> Finding | None:
    extra = await asker.get("/api/extra/version")
    if signature(extra) is ServerKind.KOBOLDCPP or is_koboldcpp(extra):
        return await details.koboldcpp(asker)
    localai = await asker.get("/.well-known/localai.json")
    if is_localai(localai):
        return await details.localai(asker, localai)
    root = await asker.get("/")
    if root.status != 200 or not root.text().startswith("Ollama is running"):
        asker.note(root, "not Ollama's root")
        return None
    asker.note(root, "Ollama is running")
    version = text(object_of(await asker.get("/api/version")).get("version"))
    tags = await asker.maybe("/api/tags")
    models = (
        list_length(object_of(tags).get("models"))
        if tags is not None and tags.status == 200
        else None
    )
    return asker.finding(ServerKind.OLLAMA, ServerState.SERVING, version=version, models=models)


async def _known_refusal(asker: Asker, answer: Answer) -> Finding | None:
    """A 401/403 that another server than LM Studio is known to give, as a finding."""
    said = answer.text()
    if answer.challenge.lower().startswith("basic"):
        asker.note(answer, "HTTP Basic challenge")
        return asker.finding(None, ServerState.UNKNOWN_SERVER)
    if said.strip() in _JAN_REFUSALS:
        asker.note(answer, f"refusal {said.strip()!r}")
        openapi = await asker.maybe("/openapi.json")
        if openapi is not None and is_jan(openapi):
            asker.note(openapi, "Jan's API description")
        return asker.finding(ServerKind.JAN, ServerState.AUTH_REQUIRED)
    error = object_of(answer).get("error")
    if isinstance(error, dict) and error.get("message") == _LOCALAI_REFUSAL:
        asker.note(answer, f"refusal {_LOCALAI_REFUSAL!r}")
        return asker.finding(ServerKind.LOCALAI, ServerState.AUTH_REQUIRED)
    if error == "Unauthorized":
        asker.note(answer, 'refusal {"error": "Unauthorized"}')
        # vLLM's key guards only /v1 (and /v2, /inference): its /version still answers.
        # SGLang's guards every path, so it stays a generic OpenAI-compatible server.
        version = await details.version_of(asker, "/version", "version")
        kind = ServerKind.VLLM if version else ServerKind.OPENAI_COMPATIBLE
        return asker.finding(kind, ServerState.AUTH_REQUIRED, version=version)
    return None


async def _openai_family(asker: Asker) -> Finding:
    answer = await asker.get("/v1/models")
    if (kind := signature(answer)) is not None:
        return await _settle(asker, kind, answer)
    items = openai_items(answer)
    if items is None:
        if answer.refused:
            return await _refused_models(asker, answer)
        for path, check, kind in (
            ("/info", tgi_info, ServerKind.TGI),
            ("/get_model_info", is_sglang_info, ServerKind.SGLANG),
        ):
            extra = await asker.get(path)
            if check(extra):
                asker.note(extra, f"native API of {kind}")
                return await details.finish_openai(asker, kind, None)
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
        return await details.finish_openai(asker, named[owner], items, answer)
    if answer.server.startswith("BaseHTTP/"):
        asker.note(answer, "Python http.server: mlx_lm.server")
        return await details.finish_openai(asker, ServerKind.MLX, items)
    for kind in _candidates(items, owners):
        if await _confirms(asker, kind):
            return await details.finish_openai(asker, kind, items)
    asker.note(answer, "an OpenAI model list")
    return await details.finish_openai(asker, ServerKind.OPENAI_COMPATIBLE, items)


def _candidates(items: list[dict[str, Any]], owners: set[Any]) -> list[ServerKind]:
    """The servers worth one more question, from what their model list shows."""
    if owners == {None}:
        return [ServerKind.LOCALAI]
    if "user" in owners:
        return [ServerKind.TEXTGEN_WEBUI, ServerKind.JAN]
    if len(items) == 1 and items[0].get("owned_by") == items[0].get("id"):
        return [ServerKind.TGI]
    return []


async def _confirms(asker: Asker, kind: ServerKind) -> bool:
    if kind is ServerKind.LOCALAI:
        answer = await asker.get("/.well-known/localai.json")
        found = is_localai(answer)
    elif kind is ServerKind.TEXTGEN_WEBUI:
        answer = await asker.get("/v1/internal/model/info")
        info = object_of(answer)
        found = isinstance(info.get("model_name"), str) and isinstance(info.get("lora_names"), list)
    elif kind is ServerKind.JAN:
        answer = await asker.get("/openapi.json")
        found = is_jan(answer)
    else:
        answer = await asker.get("/info")
        found = tgi_info(answer)
    if found:
        asker.note(answer, f"native API of {kind}")
    return found


async def _refused_models(asker: Asker, answer: Answer) -> Finding:
    if (found := await _known_refusal(asker, answer)) is not None:
        return found
    openapi = await asker.get("/openapi.json")
    if is_jan(openapi):
        asker.note(openapi, "Jan's API description")
        return asker.finding(ServerKind.JAN, ServerState.AUTH_REQUIRED)
    if answer.obj() is not None:
        asker.note(answer, "refused, with a JSON error")
        return asker.finding(ServerKind.OPENAI_COMPATIBLE, ServerState.AUTH_REQUIRED)
    asker.note(answer, "refused, without a JSON error")
    return asker.finding(None, ServerState.UNKNOWN_SERVER)
