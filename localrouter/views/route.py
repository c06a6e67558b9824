"""The route of a cached list view: answered from memory when the caller's list and its
rendering are there already (http.endpoint.AnswersFromMemory), else awaited to fetch and build
what is missing. Either way the body is served as cached bytes (ETag, gzip, 304)."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from localrouter.config.control import Client, ShapeKey
from localrouter.http.bodies import Body, cached_response
from localrouter.http.endpoint import AnswersFromMemory
from localrouter.http.guard import CLIENT
from localrouter.lists.derived import DerivedCache
from localrouter.views.merged import MergedModels, ModelsView, Visible

# How a view renders the caller's list into a body (None: the list's own body, /v1/models).
Render = Callable[[MergedModels], Body]


class CachedListRoute(AnswersFromMemory):
    """One list shape's route. `render` None serves the caller's list as it is (/v1/models);
    else each caller's rendering is kept, one per config and client."""

    def __init__(self, models: ModelsView, render: Render | None = None) -> None:
        self._models = models
        self._render = render
        self._rendered: DerivedCache[ShapeKey | None, Body] = DerivedCache(capacity=64)

    def now(self, request: web.Request, client: Client | None) -> web.StreamResponse | None:
        models = self._models
        visible = models.visible_now(client)
        if visible is None:
            return None
        if self._render is None:
            body = visible[1].body
        else:
            lists, _, key = visible
            rendered = self._rendered.peek(key, lists)
            if rendered is None:
                return None
            body = rendered
        models.count_hit()
        return cached_response(request, body)

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        return cached_response(
            request, await self.body(await self._models.visible(request[CLIENT]))
        )

    async def body(self, visible: Visible) -> Body:
        lists, shown, key = visible
        render = self._render
        if render is None:
            return shown.body
        return await self._rendered.get_async(key, lists, lambda: render(shown))
