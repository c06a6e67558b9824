"""Every typed key the application stores, in one place."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

if TYPE_CHECKING:
    from localrouter.anthropic_models import AnthropicCache
    from localrouter.api_models import DetailedCache
    from localrouter.cache import Clock
    from localrouter.client_views import ViewCaches
    from localrouter.derived import DerivedCache
    from localrouter.fleet import Fleet
    from localrouter.live_settings import LiveSettings
    from localrouter.log import SecretRedactor
    from localrouter.metrics import Metrics
    from localrouter.model_list import ModelsView
    from localrouter.model_rules import Client
    from localrouter.registry import Registry
    from localrouter.reload import ConfigReloader
    from localrouter.resolve import ModelIndex
    from localrouter.response_store import ResponseStore
    from localrouter.routing import Guard
    from localrouter.unique import UniqueCache

CLOCK: web.AppKey[Clock] = web.AppKey("clock")
GUARD: web.AppKey[Guard] = web.AppKey("guard")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
REDACTOR: web.AppKey[SecretRedactor] = web.AppKey("redactor")
HTTP_SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("http_session")
REGISTRY: web.AppKey[Registry] = web.AppKey("registry")
FLEET: web.AppKey[Fleet | None] = web.AppKey("fleet")  # with fleet.redis_url: the shared Redis
RELOADER: web.AppKey[ConfigReloader] = web.AppKey("reloader")
MODELS_VIEW: web.AppKey[ModelsView] = web.AppKey("models_view")
DETAILED_CACHE: web.AppKey[DetailedCache] = web.AppKey("detailed_cache")
UNIQUE_CACHE: web.AppKey[UniqueCache] = web.AppKey("unique_cache")
ANTHROPIC_MODELS: web.AppKey[AnthropicCache] = web.AppKey("anthropic_models")
VIEW_CACHES: web.AppKey[ViewCaches] = web.AppKey("view_caches")
RESPONSE_STORE: web.AppKey[ResponseStore] = web.AppKey("response_store")
MODEL_INDEX: web.AppKey[DerivedCache[None, ModelIndex]] = web.AppKey("model_index")
SETTINGS: web.AppKey[LiveSettings] = web.AppKey("settings")
CACHE_DIR: web.AppKey[Path | None] = web.AppKey("cache_dir")

# The client a request came from (clients: in the config); None for one who sees everything.
CLIENT: web.RequestKey[Client | None] = web.RequestKey("client")
