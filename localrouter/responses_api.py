"""POST /v1/responses (OpenAI's Responses API): passed through to instances that speak it
(`openai`, or `responses: native`), else translated to Chat Completions and back
(responses_to_chat.py, chat_to_responses.py). The client's credentials are the daemon's token
and are never forwarded: the instance's own key goes upstream."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from localrouter.bridge import chat_call, translate_stream, whole_answer
from localrouter.chat_to_responses import Echo, ResponsesStream, response
from localrouter.errors import BadRequest, NotAChatModel, NotFound
from localrouter.providers.base import Wire
from localrouter.proxy import rewritten, send, upstream_error
from localrouter.resolve import resolve
from localrouter.response_store import MAX_RESPONSES, ResponseStore, caller_of
from localrouter.responses import JSON, model_request
from localrouter.responses_to_chat import chat_request
from localrouter.secrets import redact_bytes
from localrouter.state import RESPONSE_STORE, SETTINGS

DROPPED_TOOLS_HEADER = "x-localrouter-dropped-tools"


async def responses(request: web.Request) -> web.StreamResponse:
    body, model = await model_request(request)
    if not isinstance(body.get("input"), str | list):
        raise BadRequest("'input' is required: a string or a list of items.", param="input")
    instance, upstream_id = await resolve(request, model)
    if (native := instance.route(Wire.RESPONSES)) is not None:
        data, streamed = rewritten(body, upstream_id)
        del body  # see proxy.forward
        return await send(request, data, streamed, instance, native, "responses")
    store, caller = request.app[RESPONSE_STORE], caller_of(request)
    conversation = _prior(store, caller, body.get("previous_response_id")) + input_items(
        body["input"]
    )
    body["input"] = conversation
    kept = body.get("store") is not False
    weight = request.content_length or 0
    route = instance.route(Wire.CHAT)
    if route is None:
        kind = instance.settings.type
        raise NotAChatModel(f"'{model}' is a {kind} model (images, video or audio): no chat.")
    http = instance.http
    streamed = body.get("stream") is True
    listed = await instance.listed(upstream_id, request.app[SETTINGS].models_deadline_seconds)
    translated = chat_request(
        body,
        upstream_id,
        reasoning=listed is not None and listed.takes_reasoning_effort,
        max_output_tokens=listed.max_output_tokens if listed else None,
    )
    echo = {name: body.get(name) for name in _ECHOED if name in body}
    chat = orjson.dumps(translated.body)
    del body  # gone before the upstream answers (see messages_api)
    noted = {DROPPED_TOOLS_HEADER: ", ".join(translated.dropped_tools)}
    headers = noted if translated.dropped_tools else {}
    async with chat_call(instance, route, chat, streamed=streamed) as (upstream, where):
        if upstream.status >= 400:
            return await upstream_error(upstream, http, where)
        if streamed:
            stream = ResponsesStream(Echo.of(echo, model))
            answer = await translate_stream(request, upstream, http, stream, where, headers)
            if kept and stream.final is not None:
                final = redact_bytes(orjson.dumps(stream.final), http.secrets)
                _keep(store, caller, conversation, stream.final, final, weight)
            return answer
        answer_body = await whole_answer(http, upstream, where)
        made = response(answer_body, Echo.of(echo, model, answer_body))
        whole = redact_bytes(orjson.dumps(made), http.secrets)
        if kept:
            _keep(store, caller, conversation, made, whole, weight)
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


def _keep(
    store: ResponseStore,
    caller: str,
    conversation: list[dict[str, Any]],
    made: dict[str, Any],
    body: bytes | bytearray,
    request_bytes: int,
) -> None:
    if made.get("status") not in ("completed", "incomplete"):
        return
    items = conversation + [item for item in made["output"] if isinstance(item, dict)]
    # What the items weigh, near enough: the request they came in and the answer, twice
    # (earlier turns are shared with the response they came from, not copied).
    size = request_bytes + 2 * len(body)
    store.put(made["id"], caller, items, bytes(body), size)


async def retrieve(request: web.Request) -> web.Response:
    """GET /v1/responses/{id}: a response this daemon translated and kept."""
    response_id = request.match_info["response_id"]
    stored = request.app[RESPONSE_STORE].get(response_id, caller_of(request))
    if stored is None:
        raise NotFound(_unknown(response_id), param="response_id")
    return web.Response(body=stored.body, content_type=JSON)


async def delete(request: web.Request) -> web.Response:
    response_id = request.match_info["response_id"]
    if not request.app[RESPONSE_STORE].delete(response_id, caller_of(request)):
        raise NotFound(_unknown(response_id), param="response_id")
    gone = {"id": response_id, "object": "response", "deleted": True}
    return web.Response(body=orjson.dumps(gone), content_type=JSON)


def _unknown(response_id: str) -> str:
    return (
        f"No response with id {response_id[:100]!r}: it was not stored (store: false), was "
        "evicted, was made by another caller, or this daemon restarted since."
    )


# What a Response object repeats of its request.
_ECHOED = (
    "instructions",
    "max_output_tokens",
    "metadata",
    "parallel_tool_calls",
    "previous_response_id",
    "temperature",
    "top_p",
    "tool_choice",
    "tools",
    "text",
    "store",
)
