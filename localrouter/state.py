"""Every typed key the application stores, in one place."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

if TYPE_CHECKING:
    from localrouter.base.log import SecretRedactor
    from localrouter.config.control import Client
    from localrouter.config.live import LiveSettings
    from localrouter.config.reload import ConfigReloader
    from localrouter.http.endpoint import Guard
    from localrouter.http.metrics import Metrics
    from localrouter.lists.cache import Clock
    from localrouter.lists.derived import DerivedCache
    from localrouter.lists.fleet import Fleet
    from localrouter.lists.registry import Registry
    from localrouter.lists.resolve import ModelIndex
    from localrouter.protocols.responses.store import ResponseStore
    from localrouter.views.anthropic import AnthropicCache
    from localrouter.views.detailed import DetailedCache
    from localrouter.views.merged import ModelsView
    from localrouter.views.table import ViewCaches
    from localrouter.views.unique import UniqueCache

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
