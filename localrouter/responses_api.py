"""POST /v1/responses (OpenAI's Responses API): passed through to instances that speak it
(`openai`, or `responses: native`), else translated to Chat Completions and back
(responses_to_chat.py, chat_to_responses.py). The client's credentials are the daemon's token
and are never forwarded: the instance's own key goes upstream."""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import web

from localrouter.bridge import gateway_errors, translate_stream
from localrouter.chat_to_responses import Echo, ResponsesStream, response
from localrouter.errors import BadRequest, NotAChatModel, UpstreamError
from localrouter.providers.base import Wire
from localrouter.proxy import send, upstream_error
from localrouter.resolve import resolve
from localrouter.responses import JSON, request_json
from localrouter.responses_to_chat import chat_request
from localrouter.secrets import redact_bytes
from localrouter.state import SETTINGS

DROPPED_TOOLS_HEADER = "x-localrouter-dropped-tools"


async def responses(request: web.Request) -> web.StreamResponse:
    body = await request_json(request)
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required: an id from GET /v1/models.", param="model")
    if not isinstance(body.get("input"), str | list):
        raise BadRequest("'input' is required: a string or a list of items.", param="input")
    instance, upstream_id = await resolve(request, model)
    if (native := instance.route(Wire.RESPONSES)) is not None:
        return await send(request, body, instance, upstream_id, native, "responses")
    route = instance.route(Wire.CHAT)
    if route is None:
        kind = instance.settings.type
        raise NotAChatModel(f"'{model}' is a {kind} model (images, video or audio): no chat.")
    http = instance.http
    url = route.url("chat/completions")
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
    where = http.where(url)
    seconds = instance.settings.chat_timeout_seconds
    with gateway_errors(where, http, seconds):
        async with (
            asyncio.timeout(None if streamed else seconds),
            http.request(
                "POST",
                url,
                data=chat,
                headers=dict(route.headers),
                limits=route.stream_limits if streamed else route.answer_limits,
            ) as upstream,
        ):
            if upstream.status >= 400:
                return await upstream_error(upstream, http, where)
            if streamed:
                stream = ResponsesStream(Echo.of(echo, model))
                return await translate_stream(request, upstream, http, stream, where, headers)
            answer_body = orjson.loads(await http.read_body(upstream, where))
            if not isinstance(answer_body, dict):
                raise UpstreamError(f"{where} answered with something other than an object")
            whole = orjson.dumps(response(answer_body, Echo.of(echo, model, answer_body)))
            return web.Response(
                body=redact_bytes(whole, http.secrets), content_type=JSON, headers=headers
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
