"""Every model-list view, registered in one table: OpenAI's `/v1/models` (Anthropic's shape
when asked), the list in the shapes other servers give it (Ollama's `/api/tags`, LM Studio's
`/api/v0/models`, LiteLLM's `/v1/model/info` and `/model_group/info`, OpenRouter's
`/api/v1/models`), single-model lookups, the detailed `/api/models` and the distinct models.
Each list is built from the list as the caller sees it (aliases, hidden ids, a client's
allowlist) once per data change and per caller, then served as cached bytes. Adding a list
shape is one module and one row here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiohttp.typedefs import Handler

from localrouter.http.bodies import Body
from localrouter.lists.cache import Clock
from localrouter.lists.resolve import Resolver
from localrouter.views import ollama
from localrouter.views.detailed import DetailedModels
from localrouter.views.litellm import litellm_groups, litellm_info
from localrouter.views.lmstudio import LMStudioModel, lmstudio_models
from localrouter.views.merged import MergedModels, ModelsView
from localrouter.views.openai import ListModels, RetrieveModel
from localrouter.views.openrouter import OpenRouterModels, openrouter_models
from localrouter.views.route import CachedListRoute, Render
from localrouter.views.unique import UniqueModels

Route = tuple[str, str, Handler]


@dataclass(frozen=True, slots=True)
class ListView:
    name: str
    paths: tuple[str, ...]
    build: Callable[[MergedModels], Body]  # the whole body, from the caller's list
    # Its route: the cached list (a subclass may also answer what the cache does not: a page)
    route: Callable[[ModelsView, Render], CachedListRoute] = CachedListRoute


VIEWS = (
    ListView("ollama", ("/api/tags",), ollama.ollama_tags),
    ListView("lmstudio", ("/api/v0/models",), lmstudio_models),
    ListView("litellm", ("/v1/model/info", "/model/info"), litellm_info),
    ListView("litellm_groups", ("/model_group/info",), litellm_groups),
    ListView(
        "openrouter", ("/api/v1/models", "/api/v1/models/user"), openrouter_models, OpenRouterModels
    ),
)


@dataclass(frozen=True, slots=True)
class ModelViews:
    """The list views' routes, and the distinct models (app.py warms them up at start)."""

    routes: list[Route]
    unique: UniqueModels


def model_views(models: ModelsView, resolver: Resolver, clock: Clock) -> ModelViews:
    unique = UniqueModels(resolver)
    routes: list[Route] = [
        ("GET", "/v1/models", ListModels(models)),
        ("GET", "/v1/models/{model_id:.+}", RetrieveModel(models)),
        ("GET", "/api/models", DetailedModels(resolver, clock)),
        ("GET", "/api/models/unique", unique.page),
        ("GET", "/api/models/unique/{model_id:.+}", unique.one),
        ("POST", "/api/show", ollama.OllamaShow(models, resolver)),
        ("GET", "/api/version", ollama.version),
        ("GET", "/api/ps", ollama.running),
        *(("GET", path, view.route(models, view.build)) for view in VIEWS for path in view.paths),
        ("GET", "/api/v0/models/{model_id:.+}", LMStudioModel(models)),
    ]
    return ModelViews(routes, unique)
