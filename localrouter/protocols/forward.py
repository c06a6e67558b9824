"""One call to an upstream model: `send` POSTs a route's request to an instance with one of
its keys and answers the client through a `Reply` (the upstream's answer as it is, or
translated by a protocol bridge). attempts.py decides which calls are made: the model's, its
other keys', its fallbacks'."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import orjson
import structlog
from aiohttp import hdrs, web
from multidict import istr

from localrouter.base.errors import (
    OPENAI,
    ErrorShape,
    GatewayError,
    NotAChatModel,
    error_body,
)
from localrouter.base.jsonload import Json
from localrouter.base.secrets import StreamRedactor, redact_bytes, redact_json, shorten
from localrouter.http.bodies import JSON, json_response
from localrouter.http.guard import add_cors
from localrouter.lists.instance import Instance, Route
from localrouter.protocols.gateway_errors import gateway_error
from localrouter.providers.base import Wire
from localrouter.upstream.client import (
    ERROR_SNIPPET_BYTES,
    UpstreamClient,
    UpstreamResponse,
    Where,
    upstream_message,
)
from localrouter.usage.recording import Call as RecordedCall
from localrouter.usage.recording import Keep
from localrouter.usage.scan import CHAT as CHAT_USAGE
from localrouter.usage.scan import StreamUsage, UsageFormat, whole_tokens

log = structlog.get_logger(__name__)
# A stream's deadline: none (asyncio.timeout(None) does nothing, at 18k instructions a call).
_NO_DEADLINE: contextlib.AbstractAsyncContextManager[object] = contextlib.nullcontext()

MAX_ERROR_BODY = 1024 * 1024
NATIVE, TRANSLATED = "native", "translated"  # the record's `path`
# Answers relayed as they arrive: server-sent events, and Ollama's newline-delimited JSON.
STREAMED = ("text/event-stream", "application/x-ndjson")
# Upstream response headers a client may want; everything else (cookies, servers) stays behind.
_PASSED_HEADERS = frozenset({"content-type", "retry-after", "x-request-id"})
_PASSED_PREFIXES = ("x-ratelimit-", "openai-")


class RequestBody:
    """A request's parsed body, for the first upstream call made for it. Each later call (a
    fallback) parses the raw bytes again: the first call rewrites the body, and a parsed
    request can be thousands of objects that every garbage collection meanwhile walks
    (bench/bridges.py: a 78 KB request held while the upstream answered cost a fifth more
    CPU), where raw bytes cost it nothing."""

    __slots__ = ("_parsed", "_raw")

    def __init__(self, parsed: dict[str, Any], raw: bytes) -> None:
        self._parsed: dict[str, Any] | None = parsed
        self._raw = raw

    def take(self) -> dict[str, Any]:
        parsed, self._parsed = self._parsed, None
        if parsed is None:
            again: dict[str, Any] = orjson.loads(self._raw)  # parsed as a dict once already
            return again
        return parsed


def chat_route(instance: Instance, model: str) -> Route:
    """Where a translated call to the instance goes: its Chat Completions endpoint, or a 400
    for a model that does not chat."""
    route = instance.route(Wire.CHAT)
    if route is None:
        kind = instance.settings.type
        raise NotAChatModel(f"'{model}' is a {kind} model (images, video or audio): no chat.")
    return route


def rewritten(body: dict[str, Any], upstream_id: str) -> tuple[bytes, bool]:
    """The body with only `model` rewritten, serialised, and whether it asks for a stream."""
    body["model"] = upstream_id
    return orjson.dumps(body), bool(body.get("stream"))


def translated_for(instance: Instance, chat: dict[str, Any], cache_key: str | None = None) -> bytes:
    """A translated Chat Completions request as the instance takes it, serialised: a stream's
    `stream_options` (which ask for its usage) left out where the instance refuses them (LM
    Studio, or `stream_usage: false`; its record's usage is then estimated), and the session's
    `cache_key` as `prompt_cache_key` where the instance takes one (so that the upstream
    routes the session's turns to one prompt cache)."""
    settings = instance.settings
    if "stream_options" in chat and not settings.asks_stream_usage:
        del chat["stream_options"]
    if cache_key and settings.takes_prompt_cache_key and "prompt_cache_key" not in chat:
        chat["prompt_cache_key"] = cache_key
    return orjson.dumps(chat)


# One upstream call as its reply sees it: the client's request, the upstream's answer, the
# client that made the call, where it went, the headers the answer shows (which call answered),
# and the request's record (None: not recorded). A plain tuple, unpacked by each reply: one is
# made per call, and a NamedTuple's constructor is a Python function.
Exchange = tuple[
    web.Request, UpstreamResponse, UpstreamClient, Where, Mapping[str, str], RecordedCall | None
]


class Reply(Protocol):
    """How a route answers its client with what the upstream said."""

    async def failed(
        self, upstream: UpstreamResponse, http: UpstreamClient, where: Where
    ) -> web.Response:
        """The upstream refused: its status >= 400."""
        ...

    async def answer(self, exchange: Exchange) -> web.StreamResponse:
        """Anything else: the whole answer or its stream, in the client's protocol, with the
        `shown` headers (which call answered)."""
        ...


@dataclass(slots=True)  # not frozen: a frozen dataclass takes 2 µs to make, here per request
class Call:
    """One upstream request as a route makes it for one instance and model."""

    route: Route
    path: str
    data: bytes
    streamed: bool
    reply: Reply
    headers: Mapping[str, str] | None = None  # sent with the route's own (auth, instance)
    params: Mapping[str, str] | None = None


async def send(
    request: web.Request,
    instance: Instance,
    call: Call,
    shown: Mapping[str, str],
    key: int,
    *,
    recorded: RecordedCall | None,
) -> web.StreamResponse:
    """POST the call to the instance with key `key` of its pool (its one key, without one),
    and answer through the call's reply, with the `shown` headers, filling in the request's
    record (`recorded`; None: not recorded). An upstream status >= 400 is the reply's error
    response; a failed call raises GatewayError (502, 504), marked `retryable` unless a
    stream had started. A whole answer is waited for at most the instance's
    chat_timeout_seconds."""
    http = instance.http
    route = call.route
    target = route.target(call.path)
    pool = instance.keys
    streamed = call.streamed
    seconds = instance.settings.chat_timeout_seconds
    extra = call.headers
    trace = None
    if recorded is not None:
        record = recorded.record
        record.path = TRANSLATED if isinstance(call.reply, TranslatedReply) else NATIVE
        record.upstream_status = None
        if (trace := recorded.trace) is not None and recorded.instance is not None:
            upstream_id = recorded.upstream_id or ""
            extra = {**(extra or {}), **trace.attempt(instance, upstream_id, str(target.url))}
    status: int | None = None
    answering = False  # from when bytes may have reached the client: a failure is not retried
    try:
        try:
            # A whole answer has a deadline (the 504); a stream's pace is bounded by its limits.
            deadline = _NO_DEADLINE if streamed else asyncio.timeout(seconds)
            async with (
                deadline,
                http.request(
                    "POST",
                    target.url,
                    headers=route.headers if pool is None else route.keyed[key],
                    extra=extra,
                    params=call.params,
                    data=call.data,
                    limits=route.stream_limits if streamed else route.answer_limits,
                ) as upstream,
            ):
                status = upstream.status
                if recorded is not None:
                    recorded.record.upstream_status = status
                if pool is not None:
                    pool.answered(key, status, upstream.headers.get(hdrs.RETRY_AFTER))
                if status >= 400:
                    failed = await call.reply.failed(upstream, http, target)
                    failed.headers.update(shown)
                    return failed
                answering = streamed
                exchange: Exchange = (request, upstream, http, target, shown, recorded)
                return await call.reply.answer(exchange)
        except Exception as exc:
            error = gateway_error(exc, target, http, seconds, answering=answering)
            if error is None:
                raise
            raise error from None
    except GatewayError as error:
        if trace is not None:
            trace.attempt_ended(status, error.code)
            trace = None
        raise
    finally:
        if trace is not None:
            trace.attempt_ended(status, None)


def openai_event(body: Json) -> bytes:
    """A server-sent event as Chat Completions streams frame them: `data:` alone."""
    return b"data: " + orjson.dumps(body) + b"\n\n"


class TranslatedReply:
    """The part every translated reply shares: the upstream's refusals in the client's
    protocol's error shape. Each protocol's subclass answers the rest."""

    __slots__ = ()
    shape: ErrorShape = OPENAI

    async def failed(
        self, upstream: UpstreamResponse, http: UpstreamClient, where: Where
    ) -> web.Response:
        return await upstream_error(upstream, http, where, self.shape)


class Forwarded:
    """The upstream's answer as it is (the native path of every protocol), redacted;
    streams passed through as they arrive. Errors in the client's protocol's shape; a stream
    the upstream broke off ends with that error `framed` as the protocol frames events. The
    usage the upstream reports in its `usage` format goes to the request's record; with
    `strip`, usage the gateway asked for and the client did not is taken out again."""

    __slots__ = ("_stripping", "frame", "shape", "strip", "usage")

    def __init__(
        self,
        shape: ErrorShape = OPENAI,
        frame: Callable[[Json], bytes] = openai_event,
        usage: UsageFormat = CHAT_USAGE,
        *,
        strip: bool = False,
    ) -> None:
        self.shape, self.frame, self.usage, self.strip = shape, frame, usage, strip
        self._stripping: Forwarded | None = None

    @property
    def stripping(self) -> Forwarded:
        """The same reply, for a stream the gateway asked usage of for its ledger only."""
        if self._stripping is None:
            self._stripping = Forwarded(self.shape, self.frame, self.usage, strip=True)
        return self._stripping

    async def failed(
        self, upstream: UpstreamResponse, http: UpstreamClient, where: Where
    ) -> web.Response:
        return await upstream_error(upstream, http, where, self.shape)

    def broken(self, message: str) -> bytes:
        """The event that ends a stream the upstream broke off."""
        return self.frame(self.shape.message(message, 502, "upstream_stream_broken"))

    async def answer(self, exchange: Exchange) -> web.StreamResponse:
        request, upstream, http, where, shown, recorded = exchange
        # The raw header, not aiohttp's parsed content_type (three times the steps); named
        # by aiohttp's istr, whose case-folded form is made once (a str's, on every lookup).
        kind = upstream.headers.get(hdrs.CONTENT_TYPE)
        if kind is not None and _streams(kind):
            return await self._stream(request, upstream, http, where, shown, recorded)
        body = await http.read_body(upstream, where)
        if recorded is not None and recorded.recording:
            recorded.reported(whole_tokens(self.usage, body))
        answer = redact_bytes(body, http.secrets)
        return web.Response(body=answer, status=upstream.status, headers=_passed(upstream, shown))

    async def _stream(
        self,
        request: web.Request,
        upstream: UpstreamResponse,
        http: UpstreamClient,
        where: Where,
        shown: Mapping[str, str],
        recorded: RecordedCall | None,
    ) -> web.StreamResponse:
        """Whole events, redacted when the instance has secrets; an error event if the upstream
        dies mid-stream. A client that leaves ends the upstream request with it. Memory stays
        bounded: nothing is held but an incomplete event, up to the redactor's cap."""
        response = web.StreamResponse(status=upstream.status, headers=_passed(upstream, shown))
        response.headers[hdrs.CACHE_CONTROL] = "no-cache"
        add_cors(request, response)
        # Usage the gateway asked for is taken out again whether or not the record is kept:
        # a caller's limits may turn out to need none (requests only) once it is resolved.
        reading = recorded is not None and recorded.recording
        watch = self.usage.stream(self.strip) if reading or self.strip else None
        try:
            await response.prepare(request)
            try:
                await relay(upstream, response, http.secrets, watch, recorded, self.usage)
            except ConnectionResetError:
                raise  # the client left (aiohttp's is a ClientError too): not the upstream's
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError) as exc:
                log.warning("proxy.stream_broken", upstream=str(where), error=type(exc).__name__)
                message = f"{where} stopped in the middle of the answer ({type(exc).__name__})"
                await response.write(self.broken(message))
            await response.write_eof()
        except ConnectionResetError:
            # The client went away (as the stream began, during it, or as it ended): leaving
            # this block closes the upstream connection too.
            log.info("proxy.client_left", upstream=str(where))
            if recorded is not None:
                recorded.record.cancelled = True
        return response


FORWARDED = Forwarded()


async def relay(
    upstream: UpstreamResponse,
    response: web.StreamResponse,
    secrets: tuple[str, ...],
    watch: StreamUsage | None = None,
    call: RecordedCall | None = None,
    wire: UsageFormat = CHAT_USAGE,
) -> None:
    """Copy a stream's events as they arrive: whole events (cut at the `wire` format's ends)
    when there are secrets to redact or usage to `watch` for, else as the bytes come. Raises
    what the upstream or the client breaks with (aiohttp.ClientError, TimeoutError,
    ConnectionResetError); what was watched reaches the request's record either way, and
    what went by its request log when that keeps streams."""
    events = StreamRedactor(secrets, ends=wire.ends)
    whole = events.active or watch is not None
    keep = call is not None and call.keep is Keep.ALL
    try:
        async for received in upstream.content.iter_any():
            if keep:
                assert call is not None
                call.streamed(received, wire.name)
            chunk = events.feed(received) if whole else received
            if watch is not None and chunk:
                chunk = watch.see(chunk)
            if chunk:
                if call is not None and call.first_byte is None:
                    call.first_bytes()
                await response.write(chunk)
        tail = events.finish()
        if watch is not None and tail:
            tail = watch.see(tail)
        if tail:
            await response.write(tail)
    finally:
        if watch is not None and call is not None:
            call.reported(watch.tokens)
            call.answer_events = watch.answer_events


async def upstream_error(
    upstream: UpstreamResponse, http: UpstreamClient, where: Where, shape: ErrorShape = OPENAI
) -> web.Response:
    """The upstream's refusal at its own status, in the client's protocol's `shape`: an
    OpenAI-shaped body passes as it is (redacted) to an OpenAI client; else the upstream's
    message (redacted) is wrapped into the shape."""
    if shape is not OPENAI:
        snippet = await upstream.content.read(ERROR_SNIPPET_BYTES)
        detail = upstream_message(snippet, http.secrets)
        text = f"{where} answered HTTP {upstream.status}" + (f": {detail}" if detail else "")
        body = orjson.dumps(shape.message(text, upstream.status, f"upstream_{upstream.status}"))
        return web.Response(body=body, status=upstream.status, content_type=JSON)
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


def _streams(content_type: str) -> bool:
    """Whether an answer of this Content-Type is a stream to relay as it arrives."""
    return content_type.startswith(STREAMED) or (
        not content_type.islower() and content_type.lower().startswith(STREAMED)  # any case
    )


def _passed(upstream: UpstreamResponse, shown: Mapping[str, str]) -> dict[str, str]:
    """The upstream's headers a client may want, then the `shown` ones."""
    headers = upstream.headers
    names = tuple(headers)
    kept = _KEPT.get(names)
    if kept is None:
        kept = _kept(names)
    passed = {name: headers[name] for name in kept}
    passed.update(shown)
    return passed


# Which of an answer's header names are passed on, by the names it has: an upstream sends
# the same few names with every answer, so each set is decided once.
_KEPT: dict[tuple[str, ...], tuple[str, ...]] = {}


def _kept(names: tuple[str, ...]) -> tuple[str, ...]:
    lowered = ((name, name.lower()) for name in names)
    kept = tuple(  # as istr: a plain str name costs an istr made on every response written
        istr(n)
        for n, lower in lowered
        if lower in _PASSED_HEADERS or lower.startswith(_PASSED_PREFIXES)
    )
    if len(_KEPT) >= 256:  # bounded: an upstream could vary its names without end
        _KEPT.clear()
    _KEPT[names] = kept
    return kept
