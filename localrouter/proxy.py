"""POST /v1/chat/completions, /v1/completions, /v1/embeddings: resolve the model, forward the
body with only `model` rewritten, and stream the answer back as it arrives.

`send` is the one way any route reaches an upstream model; a `Reply` says how the answer
goes back to the client (as it is here; translated by the protocol bridges)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Protocol

import aiohttp
import orjson
import structlog
from aiohttp import web

from localrouter.errors import (
    GatewayError,
    NotAChatModel,
    UpstreamError,
    error_body,
)
from localrouter.providers.base import Wire
from localrouter.providers.http import UpstreamClient, UpstreamResponse, Where
from localrouter.registry import Instance, Route
from localrouter.resolve import resolve
from localrouter.responses import JSON, json_response, model_request
from localrouter.routing import add_cors
from localrouter.secrets import StreamRedactor, redact_bytes, redact_json, shorten

log = structlog.get_logger(__name__)

MAX_ERROR_BODY = 1024 * 1024
# Upstream response headers a client may want; everything else (cookies, servers) stays behind.
_PASSED_HEADERS = ("Content-Type", "Retry-After", "X-Request-Id")
_PASSED_PREFIXES = ("x-ratelimit-", "openai-")


async def forward(request: web.Request, path: str) -> web.StreamResponse:
    body, model = await model_request(request)
    instance, upstream_id = await resolve(request, model)
    settings = instance.settings
    route = instance.route(Wire.CHAT)
    if route is None:
        raise NotAChatModel(
            f"'{model}' is a {settings.type} model (images, video or audio); {settings.type} has "
            f"no /{path} endpoint. Call it through {settings.type}'s own API.",
            param="model",
        )
    data, streamed = rewritten(body, upstream_id)
    # The parsed body can be thousands of objects: every frame lets go of it before the
    # upstream answers, or each collection meanwhile walks it (bench/bridges.py: a 78 KB
    # request forwarded cost a fifth more CPU than the same one translated, which let go).
    del body
    headers = {**route.headers, "Accept": request.headers.get("Accept", JSON)}
    return await send(request, instance, route, path, data, streamed=streamed, headers=headers)


def rewritten(body: dict[str, Any], upstream_id: str) -> tuple[bytes, bool]:
    """The body with only `model` rewritten, serialised, and whether it asks for a stream."""
    body["model"] = upstream_id
    return orjson.dumps(body), bool(body.get("stream"))


class Reply(Protocol):
    """How a route answers its client with what the upstream said."""

    async def failed(
        self, upstream: UpstreamResponse, http: UpstreamClient, where: Where
    ) -> web.Response:
        """The upstream refused: its status >= 400."""
        ...

    async def answer(
        self, request: web.Request, upstream: UpstreamResponse, http: UpstreamClient, where: Where
    ) -> web.StreamResponse:
        """Anything else: the whole answer or its stream, in the client's protocol."""
        ...


async def send(
    request: web.Request,
    instance: Instance,
    route: Route,
    path: str,
    data: bytes,
    *,
    streamed: bool,
    reply: Reply | None = None,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
) -> web.StreamResponse:
    """The one way a request reaches an upstream model: POST `data` to `path` on the instance
    (with the route's headers unless given), and answer the client through `reply` (the
    upstream's answer as it is, by default). A failed call is the client's 502 or 504; a
    whole answer is waited for at most the instance's chat_timeout_seconds."""
    http = instance.http
    url = route.url(path)
    where = http.where(url)
    seconds = instance.settings.chat_timeout_seconds
    with GatewayErrors(where, http, seconds):
        async with (
            asyncio.timeout(None if streamed else seconds),
            http.request(
                "POST",
                url,
                params=params,
                data=data,
                headers=route.headers if headers is None else headers,
                limits=route.stream_limits if streamed else route.answer_limits,
            ) as upstream,
        ):
            if upstream.status >= 400:
                return await (reply or FORWARDED).failed(upstream, http, where)
            return await (reply or FORWARDED).answer(request, upstream, http, where)


class GatewayErrors:
    """A failed upstream call as the client's 502 or 504 (each route renders it its way).
    A class, not @contextmanager: it wraps every proxied request."""

    __slots__ = ("_http", "_seconds", "_where")

    def __init__(self, where: Where, http: UpstreamClient, seconds: float) -> None:
        self._where, self._http, self._seconds = where, http, seconds

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _: Any) -> None:
        if exc is None:
            return
        where = self._where
        if isinstance(exc, UpstreamError):
            raise GatewayError(exc.message, status=502, code=exc.code or "upstream_error") from None
        if isinstance(exc, orjson.JSONDecodeError):
            raise GatewayError(
                f"{where} answered with a body that is not JSON", status=502, code="upstream_error"
            ) from None
        if isinstance(exc, TimeoutError):
            raise GatewayError(
                f"{where} did not answer within {self._seconds:g} s",
                status=504,
                code="upstream_timeout",
            ) from None
        if isinstance(exc, aiohttp.ClientError):
            raise GatewayError(
                f"cannot reach {where}: {self._http.reason(exc)}",
                status=502,
                code="upstream_unreachable",
            ) from None


class Forwarded:
    """The upstream's answer as it is, redacted; server-sent events passed through as they
    arrive. Errors in OpenAI's shape (subclasses render them their protocol's way)."""

    async def failed(
        self, upstream: UpstreamResponse, http: UpstreamClient, where: Where
    ) -> web.Response:
        return await upstream_error(upstream, http, where)

    def broken(self, message: str) -> bytes:
        """The event that ends a stream the upstream broke off."""
        event = orjson.dumps(error_body(message, "upstream_error", "upstream_stream_broken"))
        return b"data: " + event + b"\n\n"

    async def answer(
        self, request: web.Request, upstream: UpstreamResponse, http: UpstreamClient, where: Where
    ) -> web.StreamResponse:
        if upstream.content_type == "text/event-stream":
            return await self._stream(request, upstream, http, where)
        answer = redact_bytes(await http.read_body(upstream, where), http.secrets)
        return web.Response(body=answer, status=upstream.status, headers=_passed(upstream))

    async def _stream(
        self, request: web.Request, upstream: UpstreamResponse, http: UpstreamClient, where: Where
    ) -> web.StreamResponse:
        """Whole events, redacted when the instance has secrets; an error event if the upstream
        dies mid-stream. A client that leaves ends the upstream request with it. Memory stays
        bounded: nothing is held but an incomplete event, up to the redactor's cap."""
        response = web.StreamResponse(status=upstream.status, headers=_passed(upstream))
        response.headers["Cache-Control"] = "no-cache"
        add_cors(request, response)
        await response.prepare(request)
        try:
            await relay(upstream, response, http.secrets)
        except ConnectionResetError:
            # The client went away: leaving this block closes the upstream connection too.
            log.info("proxy.client_left", upstream=str(where))
            return response
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError) as exc:
            log.warning("proxy.stream_broken", upstream=str(where), error=type(exc).__name__)
            message = f"{where} stopped in the middle of the answer ({type(exc).__name__})"
            await response.write(self.broken(message))
        await response.write_eof()
        return response


FORWARDED = Forwarded()


async def relay(
    upstream: UpstreamResponse, response: web.StreamResponse, secrets: tuple[str, ...]
) -> None:
    """Copy server-sent events as they arrive, whole events redacted when there are secrets.
    Raises what the upstream or the client breaks with (aiohttp.ClientError, TimeoutError,
    ConnectionResetError)."""
    redactor = StreamRedactor(secrets)
    async for received in upstream.content.iter_any():
        chunk = redactor.feed(received) if redactor.active else received
        if chunk:
            await response.write(chunk)
    if tail := redactor.finish():
        await response.write(tail)


async def upstream_error(
    upstream: UpstreamResponse, http: UpstreamClient, where: Where
) -> web.Response:
    """The upstream's own status and OpenAI-shaped body, redacted; anything else is wrapped
    into one."""
    raw = await upstream.content.read(MAX_ERROR_BODY)
    try:
        data: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        body = orjson.dumps(redact_json(data, http.secrets))
        return web.Response(body=body, status=upstream.status, content_type=JSON)
    text = shorten(raw.decode("utf-8", "replace").strip(), 300, http.secrets)
    message = f"{where} answered HTTP {upstream.status}: {text or upstream.reason or ''}"
    return json_response(
        error_body(message, "upstream_error", f"upstream_{upstream.status}"),
        status=upstream.status,
    )


def _passed(upstream: UpstreamResponse) -> dict[str, str]:
    return {
        name: value
        for name, value in upstream.headers.items()
        if name.title() in _PASSED_HEADERS or name.lower().startswith(_PASSED_PREFIXES)
    }


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await forward(request, "chat/completions")


async def completions(request: web.Request) -> web.StreamResponse:
    return await forward(request, "completions")


async def embeddings(request: web.Request) -> web.StreamResponse:
    return await forward(request, "embeddings")
