"""POST /v1/messages (Anthropic's Messages API) for any chat-capable instance, translated to
Chat Completions and back (messages_to_chat.py, chat_to_messages.py); errors in Anthropic's
shape. The client's credentials are the daemon's token (x-api-key or Authorization) and are
never forwarded: the instance's own key goes upstream."""

from __future__ import annotations

import orjson
from aiohttp import web

from localrouter.base.errors import (
    ANTHROPIC,
    BadRequest,
)
from localrouter.base.jsonload import Json
from localrouter.base.secrets import redact_bytes
from localrouter.http.bodies import JSON, model_request
from localrouter.lists.instance import Instance
from localrouter.lists.resolve import Resolver
from localrouter.protocols import attempts
from localrouter.protocols import forward as proxy
from localrouter.protocols.anthropic.count import count_tokens
from localrouter.protocols.anthropic.from_chat import MessagesStream, message
from localrouter.protocols.anthropic.to_chat import chat_request, wants_thinking
from localrouter.protocols.bridge import sse, translate_stream, whole_answer
from localrouter.protocols.forward import (
    Exchange,
    RequestBody,
    chat_route,
    rewritten,
    translated_for,
)
from localrouter.protocols.session import header_session
from localrouter.providers.base import Wire
from localrouter.usage.scan import ANTHROPIC as ANTHROPIC_USAGE


class Messages:
    """POST /v1/messages and /v1/messages/count_tokens, for the app's upstreams."""

    def __init__(self, upstreams: attempts.Upstreams) -> None:
        self._upstreams = upstreams

    async def create(self, request: web.Request) -> web.StreamResponse:
        body, model, raw = await model_request(request)
        if not isinstance(body.get("messages"), list):
            raise BadRequest("'messages' is required: a list of messages.", param="messages")
        named = header_session(request)  # Claude Code's session
        plan = MessagesPlan(request, RequestBody(body, raw), model, self._upstreams.resolver, named)
        stream = body.get("stream") is True
        asked = self._upstreams.asked(request, body, named)
        del body  # see RequestBody
        return await attempts.answer(
            request,
            model,
            plan,
            self._upstreams,
            asked,
            stream=stream,
        )

    async def count_tokens(self, request: web.Request) -> web.StreamResponse:
        return await count_tokens(request, self._upstreams.resolver, client_headers(request))


class MessagesPlan:
    """A Messages request as it is for an instance that speaks Messages, else translated to
    Chat Completions."""

    __slots__ = ("body", "model", "named", "request", "resolver")

    def __init__(
        self,
        request: web.Request,
        body: RequestBody,
        model: str,
        resolver: Resolver,
        named: str | None,
    ) -> None:
        self.request, self.body, self.model, self.resolver = request, body, model, resolver
        self.named = named  # the session a header names (header_session)

    async def __call__(self, instance: Instance, upstream_id: str, name: str) -> proxy.Call:
        request = self.request
        if (native := instance.route(Wire.MESSAGES)) is not None:
            data, streamed = rewritten(self.body.take(), upstream_id)
            return proxy.Call(
                native,
                "messages",
                data,
                streamed,
                NATIVE,
                headers=client_headers(request),
                params=dict(request.query) or None,
            )
        route = instance.route(Wire.CHAT) or chat_route(instance, self.model)  # which refuses
        listed = await self.resolver.listing(instance, upstream_id)
        body = self.body.take()
        streamed = body.get("stream") is True
        thinking = "thinking" in body and wants_thinking(body)
        reply = MessagesReply(name, thinking=thinking, streamed=streamed)
        chat = translated_for(
            instance,
            chat_request(
                body,
                upstream_id,
                reasoning=thinking and listed is not None and listed.takes_reasoning_effort,
                max_output_tokens=listed.max_output_tokens if listed else None,
                cache_markers=instance.settings.keeps_cache_markers,
            ),
            self.named,  # Claude Code's session, as prompt_cache_key
        )
        return proxy.Call(route, "chat/completions", chat, streamed, reply)


class MessagesReply(proxy.TranslatedReply):
    """A Chat Completions answer, whole or streamed, as Messages (from_chat.py)."""

    __slots__ = ("model", "streamed", "thinking")
    shape = ANTHROPIC

    def __init__(self, model: str, *, thinking: bool, streamed: bool) -> None:
        self.model, self.thinking, self.streamed = model, thinking, streamed

    async def answer(self, exchange: Exchange) -> web.StreamResponse:
        request, upstream, http, where, shown, recorded = exchange
        if self.streamed:
            translator = MessagesStream(self.model, thinking=self.thinking)
            return await translate_stream(
                request, upstream, http, translator, where, shown, recorded
            )
        answer = whole_answer(recorded, await http.read_body(upstream, where), where)
        whole = orjson.dumps(message(answer, self.model, thinking=self.thinking))
        return web.Response(
            body=redact_bytes(whole, http.secrets), content_type=JSON, headers=shown
        )


def _error_event(body: Json) -> bytes:
    return sse([("error", body)])


# The answer of an instance that speaks Messages, as it is; errors in Anthropic's shape.
NATIVE = proxy.Forwarded(ANTHROPIC, _error_event, ANTHROPIC_USAGE)

# What a client says of the protocol, kept on the native path (never its credentials).
_CLIENT_HEADERS = ("anthropic-version", "anthropic-beta")


def client_headers(request: web.Request) -> dict[str, str]:
    return {
        name: value for name in _CLIENT_HEADERS if (value := request.headers.get(name)) is not None
    }
