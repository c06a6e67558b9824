"""POST /v1/messages/count_tokens: the instance's own count when it speaks Messages (asked
through the same upstream call as every request: forward.send, with its key pool, limits and
redaction), else a local estimate marked `x-localrouter-estimate: true`. Never fails for a
well-formed request, and an estimate never touches the network."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from localrouter.base.errors import ANTHROPIC, BadRequest, GatewayError, NoKeyFree
from localrouter.base.jsonload import Json
from localrouter.config.control import may_call
from localrouter.http.bodies import JSON, request_json
from localrouter.http.guard import CLIENT
from localrouter.lists.instance import Instance, Route
from localrouter.lists.resolve import Resolver
from localrouter.protocols.forward import Call, Exchange, TranslatedReply, send
from localrouter.providers.base import Wire
from localrouter.usage.tokens import estimated

# A local count, for instances without a native count_tokens: text by usage.tokens.estimated,
# a few tokens of framing per message and tool, and a flat figure per image, whose size is
# unknown here.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_IMAGE = 1600
# The status an upstream's count is answered with; anything else falls back to the estimate.
COUNTED = 200
_NOT_COUNTED = 299  # the reply's own mark for an answer that holds no count


async def count_tokens(
    request: web.Request, resolver: Resolver, client_headers: Mapping[str, str]
) -> web.StreamResponse:
    body = await request_json(request)
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    model = body.get("model")
    found = None
    if isinstance(model, str):  # an id or an alias; the caller's allowlist holds here too
        found = resolver.registry.resolve(resolver.live.rules.target(model))
        client = request[CLIENT]
        if found and client and not may_call(client, model, f"{found[0].name}/{found[1]}"):
            found = None
    if found is not None:
        instance, upstream_id = found
        route = instance.route(Wire.MESSAGES)
        if route is not None:
            counted = await _native_count(
                request, body, instance, upstream_id, route, client_headers
            )
            if counted is not None:
                return counted
    estimate = {"input_tokens": estimate_tokens(body)}
    return web.Response(
        body=orjson.dumps(estimate), content_type=JSON, headers={"x-localrouter-estimate": "true"}
    )


class Counted(TranslatedReply):
    """The upstream's count, checked: `{"input_tokens": n}` and nothing else."""

    __slots__ = ()
    shape = ANTHROPIC

    async def answer(self, exchange: Exchange) -> web.StreamResponse:
        _request, upstream, http, where, _shown, _recorded = exchange
        try:
            counted = orjson.loads(await http.read_body(upstream, where))
        except orjson.JSONDecodeError:
            counted = None
        tokens = counted.get("input_tokens") if isinstance(counted, dict) else None
        if type(tokens) is not int or upstream.status != COUNTED:
            return web.Response(status=_NOT_COUNTED)
        return web.Response(body=orjson.dumps({"input_tokens": tokens}), content_type=JSON)


COUNT = Counted()


async def _native_count(
    request: web.Request,
    body: Json,
    instance: Instance,
    upstream_id: str,
    route: Route,
    client_headers: Mapping[str, str],
) -> web.StreamResponse | None:
    """The upstream's own count, or None if it cannot give one (then the estimate stands)."""
    pool = instance.keys
    try:
        key = pool.pick() if pool is not None else 0
    except NoKeyFree:
        return None
    data = orjson.dumps({**body, "model": upstream_id})
    call = Call(route, "messages/count_tokens", data, False, COUNT, client_headers)
    try:
        answered = await send(request, instance, call, {}, key, recorded=None)  # no record
    except GatewayError:
        return None
    return answered if answered.status == COUNTED else None


def estimate_tokens(body: dict[str, Any]) -> int:
    """A local estimate of a Messages request's input tokens."""
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
    return estimated(chars) + framing + TOKENS_PER_IMAGE * images
