"""POST /v1/responses (OpenAI's Responses API): passed through to instances that speak it
(`openai`, or `responses: native`), else translated to Chat Completions and back
(responses_to_chat.py, chat_to_responses.py). The client's credentials are the daemon's token
and are never forwarded: the instance's own key goes upstream."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from localrouter.base.errors import BadRequest, NotFound
from localrouter.base.secrets import redact_bytes
from localrouter.http.bodies import JSON, model_request
from localrouter.lists.instance import Instance
from localrouter.protocols import attempts
from localrouter.protocols.bridge import translate_stream, whole_answer
from localrouter.protocols.forward import (
    Call,
    Exchange,
    Forwarded,
    RequestBody,
    TranslatedReply,
    chat_route,
    rewritten,
    translated_for,
)
from localrouter.protocols.responses.from_chat import Echo, ResponsesStream, echoed, response
from localrouter.protocols.responses.store import MAX_RESPONSES, ResponseStore, caller_of
from localrouter.protocols.responses.to_chat import chat_request
from localrouter.protocols.session import header_session
from localrouter.providers.base import Wire
from localrouter.usage.scan import RESPONSES as RESPONSES_USAGE

DROPPED_TOOLS_HEADER = "x-localrouter-dropped-tools"


class Responses:
    """POST /v1/responses, and GET and DELETE /v1/responses/{id} of what this daemon keeps."""

    def __init__(self, upstreams: attempts.Upstreams, store: ResponseStore) -> None:
        self._upstreams, self._store = upstreams, store

    async def create(self, request: web.Request) -> web.StreamResponse:
        body, model, raw = await model_request(request)
        if not isinstance(body.get("input"), (str, list)):
            raise BadRequest("'input' is required: a string or a list of items.", param="input")
        named = header_session(request)
        plan = ResponsesPlan(
            request, RequestBody(body, raw), len(raw), model, self._upstreams, self._store, named
        )
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

    async def retrieve(self, request: web.Request) -> web.Response:
        """GET /v1/responses/{id}: a response this daemon translated and kept."""
        response_id = request.match_info["response_id"]
        stored = self._store.get(response_id, self._caller(request))
        if stored is None:
            raise NotFound(_unknown(response_id), param="response_id")
        return web.Response(body=stored.body, content_type=JSON)

    async def delete(self, request: web.Request) -> web.Response:
        response_id = request.match_info["response_id"]
        if not self._store.delete(response_id, self._caller(request)):
            raise NotFound(_unknown(response_id), param="response_id")
        gone = {"id": response_id, "object": "response", "deleted": True}
        return web.Response(body=orjson.dumps(gone), content_type=JSON)

    def _caller(self, request: web.Request) -> str:
        return caller_of(request, self._upstreams.live.current.server)


class ResponsesPlan:
    """A Responses request as it is for an instance that speaks Responses, else translated
    to Chat Completions (with the conversation a `previous_response_id` continues)."""

    __slots__ = ("body", "model", "named", "request", "size", "store", "upstreams")

    def __init__(
        self,
        request: web.Request,
        body: RequestBody,
        size: int,  # the bytes read of the request (whatever its Content-Length said, or not)
        model: str,
        upstreams: attempts.Upstreams,
        store: ResponseStore,
        named: str | None,  # the session a header names (header_session)
    ) -> None:
        self.request, self.body, self.size, self.model = request, body, size, model
        self.upstreams, self.store, self.named = upstreams, store, named

    async def __call__(self, instance: Instance, upstream_id: str, name: str) -> Call:
        request = self.request
        if (native := instance.route(Wire.RESPONSES)) is not None:
            data, streamed = rewritten(self.body.take(), upstream_id)
            return Call(native, "responses", data, streamed, NATIVE)
        route = chat_route(instance, self.model)
        listed = await self.upstreams.resolver.listing(instance, upstream_id)
        body = self.body.take()
        store, caller = self.store, caller_of(request, self.upstreams.live.current.server)
        conversation = _prior(store, caller, body.get("previous_response_id")) + input_items(
            body["input"]
        )
        body["input"] = conversation
        translated = chat_request(
            body,
            upstream_id,
            reasoning=listed is not None and listed.takes_reasoning_effort,
            max_output_tokens=listed.max_output_tokens if listed else None,
        )
        streamed = body.get("stream") is True
        reply = ResponsesReply(
            echoed(body),
            name,
            streamed=streamed,
            headers={DROPPED_TOOLS_HEADER: ", ".join(translated.dropped_tools)}
            if translated.dropped_tools
            else None,
            kept=(store, caller, conversation, self.size)
            if body.get("store") is not False
            else None,
        )
        key = body.get("prompt_cache_key")  # the client's, kept; else its session header's
        cache_key = key if isinstance(key, str) and key else self.named
        chat = translated_for(instance, translated.body, cache_key)
        return Call(route, "chat/completions", chat, streamed, reply)


# Where a translated response is kept: the store, its caller, the conversation up to it and
# what the request weighed (the bytes read).
Keeping = tuple[ResponseStore, str, list[dict[str, Any]], int]


class ResponsesReply(TranslatedReply):
    """A Chat Completions answer, whole or streamed, as a Response (from_chat.py); kept for
    `previous_response_id` unless the request said `store: false`."""

    __slots__ = ("echo", "headers", "kept", "model", "streamed")

    def __init__(
        self,
        echo: dict[str, Any],  # chat_to_responses.echoed
        model: str,
        *,
        streamed: bool,
        headers: dict[str, str] | None,
        kept: Keeping | None,
    ) -> None:
        self.echo, self.model, self.streamed, self.headers, self.kept = (
            echo,
            model,
            streamed,
            headers,
            kept,
        )

    async def answer(self, exchange: Exchange) -> web.StreamResponse:
        request, upstream, http, where, shown, recorded = exchange
        headers = {**self.headers, **shown} if self.headers else shown
        if self.streamed:
            stream = ResponsesStream(Echo.of(self.echo, self.model))
            answer = await translate_stream(
                request, upstream, http, stream, where, headers, recorded
            )
            if self.kept and (final := stream.final_body()) is not None:
                _keep(self.kept, orjson.loads(final), redact_bytes(final, http.secrets))
            return answer
        chat = whole_answer(recorded, await http.read_body(upstream, where), where)
        made = response(chat, Echo.of(self.echo, self.model, chat))
        whole = redact_bytes(orjson.dumps(made), http.secrets)
        if self.kept:
            _keep(self.kept, made, whole)
        return web.Response(body=whole, content_type=JSON, headers=headers)


def input_items(given: str | list[Any]) -> list[dict[str, Any]]:
    if isinstance(given, str):
        return [{"type": "message", "role": "user", "content": given}]
    return [item for item in given if isinstance(item, dict)]


def _prior(store: ResponseStore, caller: str, previous: Any) -> list[dict[str, Any]]:
    """The conversation a `previous_response_id` continues (its input and output items)."""
    if previous is None:
        return []
    stored = store.get(previous, caller) if isinstance(previous, str) else None
    if stored is None:
        raise NotFound(
            f"No response with id {str(previous)[:100]!r} for this caller: localrouter keeps "
            f"the last {MAX_RESPONSES} stored responses in memory, until it restarts; "
            "send the whole conversation as `input` instead.",
            param="previous_response_id",
        )
    return stored.items


def _keep(kept: Keeping, made: dict[str, Any], body: bytes | bytearray) -> None:
    store, caller, conversation, request_bytes = kept
    if made.get("status") not in ("completed", "incomplete"):
        return
    items = conversation + [item for item in made["output"] if isinstance(item, dict)]
    # What the items weigh, near enough: the request they came in and the answer, twice
    # (earlier turns are shared with the response they came from, not copied).
    size = request_bytes + 2 * len(body)
    store.put(made["id"], caller, items, bytes(body), size)


def _unknown(response_id: str) -> str:
    return (
        f"No response with id {response_id[:100]!r}: it was not stored (store: false), was "
        "evicted, was made by another caller, or this daemon restarted since."
    )


# The answer of an instance that speaks Responses, as it is (errors and usage in its shapes).
NATIVE = Forwarded(usage=RESPONSES_USAGE)
