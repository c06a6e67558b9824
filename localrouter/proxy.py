"""POST /v1/chat/completions, /v1/completions, /v1/embeddings: resolve the model, forward the
body with only `model` rewritten, and stream the answer back as it arrives."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

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
    return await send(request, data, streamed, instance, route, path)


def rewritten(body: dict[str, Any], upstream_id: str) -> tuple[bytes, bool]:
    """The body with only `model` rewritten, serialised, and whether it asks for a stream."""
    body["model"] = upstream_id
    return orjson.dumps(body), bool(body.get("stream"))


async def send(
    request: web.Request,
    data: bytes,
    streamed: bool,
    instance: Instance,
    route: Route,
    path: str,
) -> web.StreamResponse:
    """A request body (`rewritten`) to `path` on the instance; the answer (or stream, event
    by event) back as it is, redacted. Used by the bridges' native paths too."""
    settings = instance.settings
    http = instance.http
    url = route.url(path)
    headers = {**route.headers, "Accept": request.headers.get("Accept", "application/json")}
    where = http.where(url)
    seconds = settings.chat_timeout_seconds
    with gateway_errors(where, http, seconds):
        async with (
            asyncio.timeout(None if streamed else seconds),
            http.request(
                "POST",
                url,
                data=data,
                headers=headers,
                limits=route.stream_limits if streamed else route.answer_limits,
            ) as upstream,
        ):
            if upstream.status >= 400:
                return await upstream_error(upstream, http, where)
            if upstream.content_type == "text/event-stream":
                return await _stream(request, upstream, instance, where)
            answer = redact_bytes(await http.read_body(upstream, where), http.secrets)
            return web.Response(body=answer, status=upstream.status, headers=_passed(upstream))


@contextmanager
def gateway_errors(where: Where, http: UpstreamClient, seconds: float) -> Iterator[None]:
    """A failed upstream call as the client's 502 or 504 (each route renders it its way)."""
    try:
        yield
    except UpstreamError as exc:
        raise GatewayError(exc.message, status=502, code=exc.code or "upstream_error") from None
    except orjson.JSONDecodeError:
        raise GatewayError(
            f"{where} answered with a body that is not JSON", status=502, code="upstream_error"
        ) from None
    except TimeoutError:
        raise GatewayError(
            f"{where} did not answer within {seconds:g} s", status=504, code="upstream_timeout"
        ) from None
    except aiohttp.ClientError as exc:
        raise GatewayError(
            f"cannot reach {where}: {http.reason(exc)}", status=502, code="upstream_unreachable"
        ) from None


async def _stream(
    request: web.Request, upstream: UpstreamResponse, instance: Instance, where: Where
) -> web.StreamResponse:
    """Pass server-sent events through as they arrive (whole events, redacted when the instance
    has secrets); end with an error event if the upstream dies mid-stream. A client that leaves
    ends the upstream request with it. Memory stays bounded: nothing is held but an incomplete
    event, up to the redactor's cap."""
    response = web.StreamResponse(status=upstream.status, headers=_passed(upstream))
    response.headers["Cache-Control"] = "no-cache"
    add_cors(request, response)
    await response.prepare(request)
    try:
        await relay(upstream, response, instance.http.secrets)
    except ConnectionResetError:
        # The client went away: leaving this block closes the upstream connection too.
        log.info("proxy.client_left", instance=instance.name)
        return response
    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError) as exc:
        log.warning("proxy.stream_broken", instance=instance.name, error=type(exc).__name__)
        message = f"{where} stopped in the middle of the answer ({type(exc).__name__})"
        event = orjson.dumps(error_body(message, "upstream_error", "upstream_stream_broken"))
        await response.write(b"data: " + event + b"\n\n")
    await response.write_eof()
    return response


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
