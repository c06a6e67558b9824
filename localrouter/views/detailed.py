"""GET /api/models: the detailed view, with filters, per-provider status and caller keys."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDictProxy, MultiMapping

from localrouter.base.errors import AdminOnly, BadRequest
from localrouter.config.control import Client, ShapeKey, shape_key
from localrouter.http.bodies import JSON
from localrouter.http.guard import CLIENT
from localrouter.lists.cache import Clock, ModelList, Served
from localrouter.lists.derived import DerivedCache, build_off_loop
from localrouter.lists.entries import merge_entries
from localrouter.lists.registry import InstanceLists, Registry
from localrouter.lists.resolve import Resolver

_TRUE = ("1", "true", "yes")
_FALSE = ("", "0", "false", "no")


@dataclass(frozen=True, slots=True)
class ModelsQuery:
    provider: str | None = None
    search: str | None = None
    capability: str | None = None
    refresh: bool = False

    @classmethod
    def parse(cls, query: MultiMapping[str], registry: Registry) -> ModelsQuery:
        provider = query.get("provider") or None
        if provider is not None:
            registry.named(provider, "provider")
        return cls(
            provider=provider,
            search=(query.get("search") or "").strip().lower() or None,
            capability=(query.get("capability") or "").strip().lower() or None,
            refresh=flag(query, "refresh"),
        )

    def keeps(self, entry: dict[str, Any]) -> bool:
        if self.search is not None and not (
            self.search in entry["id"].lower() or self.search in entry["name"].lower()
        ):
            return False
        return self.capability is None or self.capability in entry.get("capabilities", ())


def flag(query: MultiMapping[str], name: str) -> bool:
    value = query.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise BadRequest(f"{name}: expected true or false, got {value!r}", param=name)


def caller_keys(headers: CIMultiDictProxy[str], provider_types: set[str]) -> dict[str, str]:
    """X-<Type>-Key headers (X-Openai-Key, X-Fal-Key, X-Openai-Compatible-Key, ...) by type."""
    keys: dict[str, str] = {}
    for provider_type in provider_types:
        header = f"X-{provider_type.replace('_', '-')}-Key"
        if value := headers.get(header, "").strip():
            keys[provider_type] = value
    return keys


class DetailedCache(DerivedCache[tuple[ModelsQuery, ShapeKey | None], bytes]):
    """The filtered models of recent queries, as JSON bytes, kept until their lists change;
    per config and client when the list is shaped (model_rules.py)."""

    async def models_json(self, query: ModelsQuery, lists: InstanceLists, shape: Shaping) -> bytes:
        return await self.get_async(
            (query, shape[0] if shape else None),
            lists,
            lambda: filtered_json(query, lists, shape),
        )


# A shaped list's key, and how a bare alias target resolves (resolve.full_ids); None: as merged.
Shaping = tuple[ShapeKey, Callable[[str], str | None]] | None


def filtered_json(query: ModelsQuery, lists: InstanceLists, shape: Shaping) -> bytes:
    entries = merge_entries(lists.labels, lists.served)
    if shape is not None:
        (rules, client), full_id = shape
        entries = rules.shaped({entry["id"]: entry for entry in entries}, client, full_id)
    return orjson.dumps([entry for entry in entries if query.keeps(entry)])


def provider_status(
    lists: InstanceLists,
    before: tuple[ModelList | None, ...],
    now: float,
    shown: Collection[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Each instance's part in this answer (only those named in `shown`, when given); `cached`
    means no list was fetched for it."""
    status: dict[str, dict[str, Any]] = {}
    for instance, served, earlier in zip(lists.instances, lists.served, before, strict=True):
        if shown is not None and instance.name not in shown:
            continue
        models = served.models if served else None
        error = instance.cache.last_error
        status[instance.name] = {
            "success": served is not None and error is None,
            "count": len(models.models) if models else 0,
            "cached": models is not None and models is earlier,
            "source": served.source.value if served else None,
            "age_seconds": round(now - models.fetched_at, 3) if models else None,
            "error": error,
        }
    return status


def usable_instances(lists: InstanceLists, client: Client) -> frozenset[str]:
    """The instances `client` can use: those with a model its allowlist admits, or named by
    one of its patterns (so that it sees its own instance's error while that lists nothing)."""
    if client.allow is None:
        return frozenset(instance.name for instance in lists.instances)
    patterns = client.allow.patterns
    return frozenset(
        instance.name
        for instance, served in zip(lists.instances, lists.served, strict=True)
        if any(pattern.startswith(f"{instance.name}/") for pattern in patterns)
        or (served is not None and _admits_one(client, instance.name, served))
    )


def _admits_one(client: Client, name: str, served: Served) -> bool:
    return any(client.allows(f"{name}/{model.id}") for model in served.models.models)


class DetailedModels:
    """GET /api/models, for the app's registry and live config."""

    def __init__(self, resolver: Resolver, clock: Clock) -> None:
        self._resolver, self._clock = resolver, clock
        self._cache = DetailedCache()
        self._usable: DerivedCache[Client, frozenset[str]] = DerivedCache(capacity=64)

    async def __call__(self, request: web.Request) -> web.Response:
        return await detailed_models(
            request, self._resolver, self._cache, self._usable, self._clock
        )


async def detailed_models(
    request: web.Request,
    resolver: Resolver,
    cache: DetailedCache,
    usable: DerivedCache[Client, frozenset[str]],
    clock: Clock,
) -> web.Response:
    registry = resolver.registry
    query = ModelsQuery.parse(request.query, registry)
    client = request[CLIENT]
    if query.refresh and client is not None:
        raise AdminOnly(
            f"refresh=true fetches every instance's list again: it is for the admin "
            f"(server.auth_token), not client {client.name!r}. Lists refresh by themselves "
            "(model_cache TTLs)."
        )
    instances = registry.instances([query.provider] if query.provider else None)
    keys = caller_keys(request.headers, {i.settings.type for i in instances})
    keyed = bool(keys)
    if keyed:
        instances = registry.with_caller_keys(instances, keys)
    before = tuple(instance.cache.current for instance in instances)
    lists = await registry.lists(
        resolver.live.models_deadline_seconds, instances=instances, refresh=query.refresh
    )
    key = shape_key(resolver.live.rules, client)
    shape = (key, await resolver.full_ids()) if key is not None else None
    if keyed:  # a caller's lists stay out of the shared cache of rendered queries
        models_json = await build_off_loop(lists.served, lambda: filtered_json(query, lists, shape))
    else:
        models_json = await cache.models_json(query, lists, shape)
    shown = None
    if client is not None:
        shown = await usable.get_async(client, lists, lambda: usable_instances(lists, client))
    status = provider_status(lists, before, clock(), shown)
    errors = [
        {"provider": name, "error": item["error"]}
        for name, item in status.items()
        if item["error"] is not None
    ]
    head = orjson.dumps(
        {
            "success": not errors,
            "cached": all(item["cached"] for item in status.values()),
            "providers": status,
            "errors": errors,
        }
    )
    # Splice the (cached) models array into the small per-request envelope.
    body = head[:-1] + b',"models":' + models_json + b"}"
    return web.Response(body=body, content_type=JSON, headers={"Cache-Control": "no-cache"})
