"""POST /v1/chat/completions, /v1/completions, /v1/embeddings: resolve the model, forward the
body with only `model` rewritten, and stream the answer back as it arrives."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from localrouter.base.errors import NotAChatModel
from localrouter.http.bodies import JSON, model_request
from localrouter.lists.instance import Instance
from localrouter.protocols import attempts
from localrouter.protocols.attempts import Upstreams
from localrouter.protocols.forward import FORWARDED, Call, RequestBody, rewritten
from localrouter.providers.base import Wire


class Forwarding:
    """The request as it came, for any instance that speaks Chat Completions."""

    __slots__ = ("body", "headers", "model", "path")

    def __init__(self, body: RequestBody, model: str, path: str, accept: str) -> None:
        self.body, self.model, self.path = body, model, path
        self.headers = {"Accept": accept}

    async def __call__(self, instance: Instance, upstream_id: str) -> Call:
        route = instance.route(Wire.CHAT)
        if route is None:
            kind = instance.settings.type
            raise NotAChatModel(
                f"'{self.model}' is a {kind} model (images, video or audio); {kind} has no "
                f"/{self.path} endpoint. Call it through {kind}'s own API.",
                param="model",
            )
        data, streamed = rewritten(self.body.take(), upstream_id)
        return Call(route, self.path, data, streamed, FORWARDED, self.headers)


class Forward:
    """POST /v1/{path}: the body forwarded with only `model` rewritten."""

    __slots__ = ("_path", "_upstreams")

    def __init__(self, upstreams: Upstreams, path: str) -> None:
        self._upstreams, self._path = upstreams, path

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        body, model, raw = await model_request(request)
        accept = request.headers.get("Accept", JSON)
        plan = Forwarding(RequestBody(body, raw), model, self._path, accept)
        del body  # see RequestBody
        return await attempts.answer(request, model, plan, self._upstreams)


def routes(upstreams: Upstreams) -> list[tuple[str, str, Handler]]:
    return [
        ("POST", f"/v1/{path}", Forward(upstreams, path))
        for path in ("chat/completions", "completions", "embeddings")
    ]
