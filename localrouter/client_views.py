"""The model list in the shapes other servers give it, for the clients that read only those:
Ollama's `/api/tags`, LM Studio's `/api/v0/models`, LiteLLM's `/v1/model/info` and
`/model_group/info`, OpenRouter's `/api/v1/models`. Each is built from the list as the caller
sees it (aliases, hidden ids, a client's allowlist) once per data change and per caller,
then served as cached bytes like /v1/models. Adding a view is one module and one row here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from localrouter.derived import DerivedCache
from localrouter.litellm_models import litellm_groups, litellm_info
from localrouter.lmstudio_models import lmstudio_models
from localrouter.model_list import MergedModels, ModelsView, visible_list
from localrouter.model_rules import ShapeKey
from localrouter.ollama_models import ollama_tags
from localrouter.openrouter_models import openrouter_models
from localrouter.responses import Body, cached_response
from localrouter.state import CLIENT


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


def handler(
    view: ListView, models: ModelsView, caches: ViewCaches
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The route of one view, bound to the app's models view and its own cache (no lookups
    on a request)."""
    cache = caches[view.name]

    async def serve(request: web.Request) -> web.Response:
        client = request[CLIENT]
        lists, shown, key = models.visible_now(client) or await visible_list(request, client)
        body = cache.peek(key, lists) or await cache.get_async(
            key, lists, lambda: view.build(shown)
        )
        return cached_response(request, body)

    serve.__name__ = f"{view.name}_models"
    return serve
