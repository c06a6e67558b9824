"""POST /v1/messages (Anthropic's Messages API) for any chat-capable instance, translated to
Chat Completions and back (messages_to_chat.py, chat_to_messages.py); errors in Anthropic's
shape. The client's credentials are the daemon's token (x-api-key or Authorization) and are
never forwarded: the instance's own key goes upstream."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from localrouter.base.errors import (
    ANTHROPIC,
    BadRequest,
    NoKeyFree,
    UpstreamError,
)
from localrouter.base.jsonload import Json
from localrouter.base.secrets import redact_bytes
from localrouter.config.control import may_call
from localrouter.http.bodies import JSON, model_request, request_json
from localrouter.http.guard import CLIENT
from localrouter.lists.instance import Instance, Route
from localrouter.lists.resolve import Resolver
from localrouter.protocols import attempts
from localrouter.protocols import forward as proxy
from localrouter.protocols.anthropic.from_chat import MessagesStream, message
from localrouter.protocols.anthropic.to_chat import chat_request, wants_thinking
from localrouter.protocols.bridge import sse, translate_stream, whole_answer
from localrouter.protocols.forward import RequestBody, chat_route, rewritten
from localrouter.providers.base import Wire
from localrouter.upstream.client import UpstreamClient, UpstreamResponse, Where


class Messages:
    """POST /v1/messages and /v1/messages/count_tokens, for the app's upstreams."""

    def __init__(self, upstreams: attempts.Upstreams) -> None:
        self._upstreams = upstreams

    async def create(self, request: web.Request) -> web.StreamResponse:
        body, model, raw = await model_request(request)
        if not isinstance(body.get("messages"), list):
            raise BadRequest("'messages' is required: a list of messages.", param="messages")
        plan = MessagesPlan(request, RequestBody(body, raw), model, self._upstreams.resolver)
        del body  # see RequestBody
        return await attempts.answer(request, model, plan, self._upstreams)

    async def count_tokens(self, request: web.Request) -> web.Response:
        return await count_tokens(request, self._upstreams.resolver)


class MessagesPlan:
    """A Messages request as it is for an instance that speaks Messages, else translated to
    Chat Completions."""

    __slots__ = ("body", "model", "request", "resolver")

    def __init__(
        self, request: web.Request, body: RequestBody, model: str, resolver: Resolver
    ) -> None:
        self.request, self.body, self.model, self.resolver = request, body, model, resolver

    async def __call__(self, instance: Instance, upstream_id: str) -> proxy.Call:
        request = self.request
        if (native := instance.route(Wire.MESSAGES)) is not None:
            data, streamed = rewritten(self.body.take(), upstream_id)
            return proxy.Call(
                native,
                "messages",
                data,
                streamed,
                NATIVE,
                headers=_client_headers(request),
                params=dict(request.query) or None,
            )
        route = instance.route(Wire.CHAT) or chat_route(instance, self.model)  # which refuses
        listed = await self.resolver.listing(instance, upstream_id)
        body = self.body.take()
        streamed = body.get("stream") is True
        thinking = "thinking" in body and wants_thinking(body)
        reply = MessagesReply(self.model, thinking=thinking, streamed=streamed)
        chat = orjson.dumps(
            chat_request(
                body,
                upstream_id,
                reasoning=thinking and listed is not None and listed.takes_reasoning_effort,
                max_output_tokens=listed.max_output_tokens if listed else None,
            )
        )
        return proxy.Call(route, "chat/completions", chat, streamed, reply)


class MessagesReply(proxy.TranslatedReply):
    """A Chat Completions answer, whole or streamed, as Messages (from_chat.py)."""

    __slots__ = ("model", "streamed", "thinking")
    shape = ANTHROPIC

    def __init__(self, model: str, *, thinking: bool, streamed: bool) -> None:
        self.model, self.thinking, self.streamed = model, thinking, streamed

    async def answer(
        self,
        request: web.Request,
        upstream: UpstreamResponse,
        http: UpstreamClient,
        where: Where,
        shown: Mapping[str, str],
    ) -> web.StreamResponse:
        if self.streamed:
            translator = MessagesStream(self.model, thinking=self.thinking)
            return await translate_stream(request, upstream, http, translator, where, shown)
        answer = whole_answer(await http.read_body(upstream, where), where)
        whole = orjson.dumps(message(answer, self.model, thinking=self.thinking))
        return web.Response(
            body=redact_bytes(whole, http.secrets), content_type=JSON, headers=shown
        )


def _error_event(body: Json) -> bytes:
    return sse([("error", body)])


# The answer of an instance that speaks Messages, as it is; errors in Anthropic's shape.
NATIVE = proxy.Forwarded(ANTHROPIC, _error_event)

# What a client says of the protocol, kept on the native path (never its credentials).
_CLIENT_HEADERS = ("anthropic-version", "anthropic-beta")


def _client_headers(request: web.Request) -> dict[str, str]:
    return {
        name: value for name in _CLIENT_HEADERS if (value := request.headers.get(name)) is not None
    }


# A local count, for instances without a native count_tokens: about four characters a token
# for text (what tokenizers average over English and code), a few tokens of framing per
# message and tool, and a flat figure per image, whose size is unknown here.
CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 3
TOKENS_PER_IMAGE = 1600


async def count_tokens(request: web.Request, resolver: Resolver) -> web.Response:
    """POST /v1/messages/count_tokens: the instance's own count when it speaks Messages, else
    a local estimate (marked `x-localrouter-estimate: true`). Never fails for a well-formed
    request, and an estimate never touches the network."""
    body = await request_json(request)
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    model = body.get("model")
    found = None
    if isinstance(model, str):  # an id or an alias; the caller's allowlist holds here too
        found = resolver.registry.resolve(resolver.live.rules.target(model))
        client = request[CLIENT]
        if (
            found
            and client is not None
            and not may_call(client, model, f"{found[0].name}/{found[1]}")
        ):
            found = None
    if found is not None and (route := found[0].route(Wire.MESSAGES)) is not None:
        counted = await _native_count(request, body, found[0], found[1], route)
        if counted is not None:
            return web.Response(body=counted, content_type=JSON)
    estimate = {"input_tokens": estimate_tokens(body)}
    return web.Response(
        body=orjson.dumps(estimate), content_type=JSON, headers={"x-localrouter-estimate": "true"}
    )


async def _native_count(
    request: web.Request, body: dict[str, Any], instance: Instance, upstream_id: str, route: Route
) -> bytes | None:
    """The upstream's own count, or None if it cannot give one (then the estimate stands)."""
    http = instance.http
    pool = instance.keys
    try:
        key = pool.pick() if pool is not None else 0
    except NoKeyFree:
        return None
    target = route.target("messages/count_tokens")
    try:
        async with (
            asyncio.timeout(instance.settings.timeout_seconds),
            http.request(
                "POST",
                target.url,
                headers=route.keyed[key] if pool else route.headers,
                extra=_client_headers(request),
                data=orjson.dumps({**body, "model": upstream_id}),
                limits=route.answer_limits,
            ) as upstream,
        ):
            if upstream.status != 200:
                return None
            raw = await http.read_body(upstream, target)
    except (UpstreamError, TimeoutError, aiohttp.ClientError):
        return None
    try:
        counted = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    valid = isinstance(counted, dict) and isinstance(counted.get("input_tokens"), int)
    return orjson.dumps({"input_tokens": counted["input_tokens"]}) if valid else None


def estimate_tokens(body: dict[str, Any]) -> int:
    """A local estimate of a Messages request's input tokens (see CHARS_PER_TOKEN)."""
    chars = 0
    images = 0
    framing = 0

    def walk(value: Any) -> None:
        nonlocal chars, images
        if isinstance(value, str):
            chars += len(value)
        elif isinstance(value, dict):
            if value.get("type") == "image":
                images += 1
                return
            for key, item in value.items():
                if key not in ("type", "role", "cache_control", "id", "tool_use_id"):
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for key in ("system", "messages", "tools"):
        part = body.get(key)
        walk(part)
        if isinstance(part, list):
            framing += TOKENS_PER_MESSAGE * len(part)
    return -(-chars // CHARS_PER_TOKEN) + framing + TOKENS_PER_IMAGE * images
