"""GET /v1/models and /v1/models/{id}: OpenAI's list, or Anthropic's shape for requests that
carry `anthropic-version` (Claude Code and the anthropic SDK; views/anthropic.py)."""

from __future__ import annotations

import orjson
from aiohttp import web
from multidict import istr

from localrouter.config.control import Client, ShapeKey
from localrouter.http.bodies import JSON
from localrouter.http.guard import CLIENT
from localrouter.lists.derived import DerivedCache
from localrouter.views.anthropic import (
    AnthropicModels,
    anthropic_models,
    one_response,
    page_response,
)
from localrouter.views.merged import ModelsView
from localrouter.views.route import CachedListRoute

ANTHROPIC_VERSION = istr("anthropic-version")  # sent by Claude Code and the anthropic SDK


class ListModels(CachedListRoute):
    """GET /v1/models: the caller's list as cached bytes, from memory when it is there; in
    Anthropic's shape (paged) when the request says it speaks Anthropic's protocol."""

    def __init__(self, models: ModelsView) -> None:
        super().__init__(models)
        self._anthropic: DerivedCache[ShapeKey | None, AnthropicModels] = DerivedCache(64)

    def now(self, request: web.Request, client: Client | None) -> web.StreamResponse | None:
        if ANTHROPIC_VERSION in request.headers:
            return None  # paged per request: awaited
        return super().now(request, client)

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        if ANTHROPIC_VERSION not in request.headers:
            return await super().__call__(request)
        lists, shown, key = await self._models.visible(request[CLIENT])
        paged = await self._anthropic.get_async(key, lists, lambda: anthropic_models(shown))
        return page_response(request, paged)


class RetrieveModel:
    """GET /v1/models/{id} (ids contain `/`): one entry as the caller may see it."""

    def __init__(self, models: ModelsView) -> None:
        self._models = models

    async def __call__(self, request: web.Request) -> web.Response:
        entry = await self._models.entry(request.match_info["model_id"], request[CLIENT])
        if ANTHROPIC_VERSION in request.headers:
            return one_response(entry)
        return web.Response(body=orjson.dumps(entry), content_type=JSON)
