"""POST /v1/chat/completions, /v1/completions, /v1/embeddings: resolve the model, forward the
body with only `model` rewritten, and stream the answer back as it arrives. The same calls
under another base URL (OpenRouter's /api/v1) differ only in their errors' shape."""

from __future__ import annotations

from typing import Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from localrouter.base.errors import OPENAI, ErrorShape, NotAChatModel
from localrouter.http.bodies import JSON, model_request
from localrouter.lists.instance import Instance
from localrouter.protocols import attempts
from localrouter.protocols.attempts import Upstreams
from localrouter.protocols.forward import FORWARDED, Call, Forwarded, RequestBody, rewritten
from localrouter.protocols.session import header_session
from localrouter.providers.base import Wire


class Forwarding:
    """The request as it came, for any instance that speaks Chat Completions; a stream that
    did not ask for its usage is asked for it (`ask_usage`, where the instance takes
    stream_options), and the reply takes that usage out again for the client."""

    __slots__ = ("ask_usage", "body", "cache_key", "headers", "model", "path", "reply")

    def __init__(
        self,
        body: RequestBody,
        model: str,
        path: str,
        accept: str,
        reply: Forwarded,
        *,
        ask_usage: bool,
        cache_key: str | None = None,
    ) -> None:
        self.body, self.model, self.path, self.reply = body, model, path, reply
        self.headers = {"Accept": accept}
        self.ask_usage = ask_usage
        self.cache_key = cache_key  # a session a header named, for prompt_cache_key

    async def __call__(self, instance: Instance, upstream_id: str, name: str) -> Call:
        route = instance.route(Wire.CHAT)
        if route is None:
            kind = instance.settings.type
            raise NotAChatModel(
                f"'{self.model}' is a {kind} model (images, video or audio); {kind} has no "
                f"/{self.path} endpoint. Call it through {kind}'s own API.",
                param="model",
            )
        body = self.body.take()
        reply = self.reply
        if self.ask_usage and body.get("stream") is True and instance.settings.asks_stream_usage:
            options = body.get("stream_options")
            if not (isinstance(options, dict) and options.get("include_usage") is True):
                body["stream_options"] = {**(options if isinstance(options, dict) else {})}
                body["stream_options"]["include_usage"] = True
                reply = reply.stripping
        if self.cache_key and self.path == "chat/completions" and _takes_key(instance, body):
            body["prompt_cache_key"] = self.cache_key
        data, streamed = rewritten(body, upstream_id)
        return Call(route, self.path, data, streamed, reply, self.headers)


def _takes_key(instance: Instance, body: dict[str, Any]) -> bool:
    """Whether a session's prompt_cache_key may be added: the client set none, and the
    instance takes one (strict servers refuse unknown fields)."""
    return "prompt_cache_key" not in body and instance.settings.takes_prompt_cache_key


class Forward:
    """POST {base}/{path}: the body forwarded with only `model` rewritten; the upstream's refusals
    answered through `reply` (in OpenAI's shape, or the base URL's)."""

    __slots__ = ("_path", "_reply", "_upstreams")

    def __init__(self, upstreams: Upstreams, path: str, reply: Forwarded = FORWARDED) -> None:
        self._upstreams, self._path, self._reply = upstreams, path, reply

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        body, model, raw = await model_request(request)
        accept = request.headers.get(hdrs.ACCEPT, JSON)
        upstreams = self._upstreams
        named = header_session(request)
        asked = upstreams.asked(request, body, named)
        stream = body.get("stream") is True
        plan = Forwarding(
            RequestBody(body, raw),
            model,
            self._path,
            accept,
            self._reply,
            ask_usage=stream and upstreams.records(asked[1]),  # asked[1]: the caller's limits
            cache_key=named,
        )
        del body  # see RequestBody
        return await attempts.answer(
            request,
            model,
            plan,
            upstreams,
            asked,
            stream=stream,
        )


def routes(
    upstreams: Upstreams, base: str = "/v1", shape: ErrorShape = OPENAI
) -> list[tuple[str, str, Handler]]:
    """The calls under `base`, the upstream's refusals in `shape` (app.py gives the route
    wrapper the same shape for these paths)."""
    reply = FORWARDED if shape is OPENAI else Forwarded(shape)
    return [
        ("POST", f"{base}/{path}", Forward(upstreams, path, reply))
        for path in ("chat/completions", "completions", "embeddings")
    ]
