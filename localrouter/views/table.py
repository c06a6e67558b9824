"""The model list in the shapes other servers give it, for the clients that read only those:
Ollama's `/api/tags`, LM Studio's `/api/v0/models`, LiteLLM's `/v1/model/info` and
`/model_group/info`, OpenRouter's `/api/v1/models`. Each is built from the list as the caller
sees it (aliases, hidden ids, a client's allowlist) once per data change and per caller,
then served as cached bytes like /v1/models. Adding a view is one module and one row here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from localrouter.config.control import Client, ShapeKey
from localrouter.http.bodies import Body, cached_response
from localrouter.lists.derived import DerivedCache
from localrouter.state import CLIENT
from localrouter.views.litellm import litellm_groups, litellm_info
from localrouter.views.lmstudio import lmstudio_models
from localrouter.views.merged import MergedModels, ModelsView, visible_list
from localrouter.views.ollama import ollama_tags
from localrouter.views.openrouter import openrouter_models


@dataclass(frozen=True, slots=True)
class ListView:
    name: str
    paths: tuple[str, ...]
    build: Callable[[MergedModels], Body]  # the whole body, from the caller's list


VIEWS = (
    ListView("ollama", ("/api/tags",), ollama_tags),
    ListView("lmstudio", ("/api/v0/models",), lmstudio_models),
    ListView("litellm", ("/v1/model/info", "/model/info"), litellm_info),
    ListView("litellm_groups", ("/model_group/info",), litellm_groups),
    ListView("openrouter", ("/api/v1/models",), openrouter_models),
)

ViewCaches = dict[str, DerivedCache[ShapeKey | None, Body]]


def view_caches() -> ViewCaches:
    return {view.name: DerivedCache(capacity=64) for view in VIEWS}  # per config and client


class ViewRoute:
    """The route of one view, bound to the app's models view and its own cache (no lookups
    on a request)."""

    def __init__(self, view: ListView, models: ModelsView, caches: ViewCaches) -> None:
        self._view, self._models, self._cache = view, models, caches[view.name]
        self.__name__ = f"{view.name}_models"

    def now(self, request: web.Request, client: Client | None) -> web.Response | None:
        """The answer when the caller's list and this view of it are there already
        (routing.AnswerNow)."""
        models = self._models
        visible = models.visible_now(client, count=False)  # counted once served, not twice
        if visible is None:
            return None
        lists, _, key = visible
        body = self._cache.peek(key, lists)
        if body is None:
            return None
        models.count_hit()
        return cached_response(request, body)

    async def __call__(self, request: web.Request) -> web.Response:
        client = request[CLIENT]
        lists, shown, key = self._models.visible_now(client) or await visible_list(request, client)
        body = self._cache.peek(key, lists) or await self._cache.get_async(
            key, lists, lambda: self._view.build(shown)
        )
        return cached_response(request, body)
