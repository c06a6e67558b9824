"""GET /api/models/unique: one row per distinct model across instances.

Models are grouped by their catalog id when the catalog matched them, else by their normalised
upstream id. Each row lists its providers with their prices and names the cheapest one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import structlog
from aiohttp import web
from multidict import MultiMapping

from localrouter.base.errors import BadRequest, NotFound
from localrouter.base.offload import sorted_in_steps
from localrouter.config.control import ShapeKey, shape_key
from localrouter.http.bodies import JSON
from localrouter.http.guard import CLIENT
from localrouter.lists.derived import DerivedCache
from localrouter.lists.distinct import Group, Offer, group_models
from localrouter.lists.registry import InstanceLists, Registry
from localrouter.lists.resolve import Resolver
from localrouter.views.detailed import flag

log = structlog.get_logger(__name__)

SortBy = Literal["provider_count", "name", "cheapest_price"]
SORTS: tuple[SortBy, ...] = ("provider_count", "name", "cheapest_price")
DEFAULT_ORDER = {"provider_count": "desc", "name": "asc", "cheapest_price": "asc"}


@dataclass(frozen=True, slots=True)
class UniqueQuery:
    min_providers: int = 1
    include_inactive: bool = False
    sort_by: SortBy = "provider_count"
    order: str = "desc"
    limit: int | None = None
    offset: int = 0
    provider: str | None = None

    @classmethod
    def parse(cls, query: MultiMapping[str], registry: Registry) -> UniqueQuery:
        sort_by = query.get("sort_by", "provider_count")
        if sort_by not in SORTS:
            raise BadRequest(
                f"sort_by: expected one of {', '.join(SORTS)}, got {sort_by!r}", param="sort_by"
            )
        order = query.get("order", DEFAULT_ORDER[sort_by])
        if order not in ("asc", "desc"):
            raise BadRequest(f"order: expected asc or desc, got {order!r}", param="order")
        provider = query.get("provider") or None
        if provider is not None:
            registry.named(provider, "provider")
        limit = _whole(query, "limit", minimum=0)
        return cls(
            min_providers=_whole(query, "min_providers", minimum=1) or 1,
            include_inactive=flag(query, "include_inactive"),
            sort_by=sort_by,
            order=order,
            limit=limit,
            offset=_whole(query, "offset", minimum=0) or 0,
            provider=provider,
        )


# The variants editors and dashboards ask for most, rendered ahead at start-up.
COMMON_QUERIES = (
    UniqueQuery(),
    UniqueQuery(min_providers=2),
    UniqueQuery(min_providers=3),
    UniqueQuery(min_providers=5),
    UniqueQuery(sort_by="name", order="asc"),
    UniqueQuery(sort_by="cheapest_price", order="asc"),
)


def _whole(query: MultiMapping[str], name: str, *, minimum: int) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name}: expected a whole number, got {raw!r}", param=name) from None
    if value < minimum:
        raise BadRequest(f"{name}: must be at least {minimum}, got {value}", param=name)
    return value


@dataclass(frozen=True, slots=True)
class UniqueRow:
    """A group as one query shows it: only the offers the query keeps."""

    id: str
    name: str
    offers: list[Offer]
    cheapest: Offer | None

    @property
    def provider_count(self) -> int:
        return len({offer.instance for offer in self.offers})

    @property
    def cost(self) -> float:
        """The cheapest offer's prompt + completion price (0.0 when nothing is priced)."""
        return self.cheapest.cost or 0.0 if self.cheapest is not None else 0.0

    def public(self) -> dict[str, Any]:
        cheapest = self.cheapest
        return {
            "id": self.id,
            "name": self.name,
            "provider_count": self.provider_count,
            "providers": [offer.public() for offer in self.offers],
            "cheapest_price": None
            if cheapest is None
            else {
                "instance": cheapest.instance,
                "id": cheapest.id,
                "prompt": cheapest.prompt,
                "completion": cheapest.completion,
            },
        }


def select(
    groups: list[Group], query: UniqueQuery, shape: ShapeKey | None = None
) -> tuple[int, list[dict[str, Any]]]:
    """Filter, sort (ties by id) and page the grouped rows: (total before paging, page).
    Under a shape, only the offers the client may see (model_rules.py; aliases are names,
    not offers: this view has none)."""
    rows = []
    for group in groups:
        offers = [o for o in group.offers if query.include_inactive or o.active]
        if shape is not None:
            offers = [o for o in offers if shape[0].admits(shape[1], o.id)]
        if len({o.instance for o in offers}) < query.min_providers or not offers:
            continue
        if query.provider and all(o.instance != query.provider for o in offers):
            continue
        rows.append(_row(group, offers))
    descending = query.order == "desc"
    rows = sorted_in_steps(rows, key=lambda row: row.id)  # groups come sorted: cheap
    if query.sort_by == "provider_count":
        rows = sorted_in_steps(rows, key=lambda row: row.provider_count, reverse=descending)
    elif query.sort_by == "name":
        rows = sorted_in_steps(rows, key=lambda row: row.name.lower(), reverse=descending)
    else:  # cheapest_price: unpriced rows last whatever the order
        priced = [row for row in rows if row.cheapest is not None]
        unpriced = [row for row in rows if row.cheapest is None]  # kept in id order, last
        priced = sorted_in_steps(priced, key=lambda row: row.cost, reverse=descending)
        rows = priced + unpriced
    end = None if query.limit is None else query.offset + query.limit
    return len(rows), [row.public() for row in rows[query.offset : end]]


def _row(group: Group, offers: list[Offer]) -> UniqueRow:
    priced = [o for o in offers if o.cost is not None]
    cheapest = min(priced, key=lambda o: o.cost or 0.0) if priced else None  # first wins a tie
    return UniqueRow(group.id, group.name or offers[0].upstream_id, offers, cheapest)


class UniqueCache:
    """The grouped table per data state, and each query's bytes, until a list changes."""

    def __init__(self) -> None:
        self._groups: DerivedCache[None, list[Group]] = DerivedCache(capacity=1)
        self._pages: DerivedCache[tuple[UniqueQuery, ShapeKey | None], bytes] = DerivedCache(
            capacity=128
        )

    def rendered_queries(self) -> set[UniqueQuery]:
        return {query for query, _ in self._pages.keys()}  # noqa: SIM118 (not a dict)

    async def groups(self, lists: InstanceLists) -> list[Group]:
        return await self._groups.get_async(None, lists, lambda: group_models(lists))

    async def page(
        self, query: UniqueQuery, lists: InstanceLists, shape: ShapeKey | None = None
    ) -> bytes:
        found = self._pages.peek((query, shape), lists)
        if found is not None:
            return found
        groups = await self.groups(lists)

        def render() -> bytes:
            total, rows = select(groups, query, shape)
            return orjson.dumps(
                {
                    "success": True,
                    "total": total,
                    "count": len(rows),
                    "offset": query.offset,
                    "limit": query.limit,
                    "models": rows,
                }
            )

        return await self._pages.get_async((query, shape), lists, render)


class UniqueModels:
    """GET /api/models/unique and /api/models/unique/{id}, for the app's registry."""

    def __init__(self, resolver: Resolver) -> None:
        self._resolver = resolver
        self.cache = UniqueCache()

    def _shape(self, request: web.Request) -> ShapeKey | None:
        return shape_key(self._resolver.live.rules, request[CLIENT])

    async def page(self, request: web.Request) -> web.Response:
        query = UniqueQuery.parse(request.query, self._resolver.registry)
        lists = await self._resolver.lists()
        body = await self.cache.page(query, lists, self._shape(request))
        return web.Response(body=body, content_type=JSON, headers={"Cache-Control": "no-cache"})

    async def one(self, request: web.Request) -> web.Response:
        wanted = request.match_info["model_id"]
        lists = await self._resolver.lists()
        query = UniqueQuery(include_inactive=True)
        for group in await self.cache.groups(lists):
            if group.id == wanted:
                _, rows = select([group], query, self._shape(request))
                if rows:
                    return web.Response(body=orjson.dumps(rows[0]), content_type=JSON)
        raise NotFound(f"No distinct model {wanted!r}; GET /api/models/unique lists them.")

    async def warm_common_queries(self) -> None:
        """Render the common variants once the first lists are in (run in the background)."""
        lists = await self._resolver.lists()
        for query in COMMON_QUERIES:
            await self.cache.page(query, lists)
            await asyncio.sleep(0)  # let requests in between
        log.debug("unique.warmed", queries=len(COMMON_QUERIES))
