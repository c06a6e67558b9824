"""The list in OpenRouter's `GET /api/v1/models` schema, for clients of OpenRouter-shaped
providers and for OpenRouter's own SDK given `/api/v1` as its base URL: the envelope (`data`,
`links`, `total_count`), paged by `offset` and `limit` when asked (as the SDK asks for the next
page while a page is full); per model `id`, `canonical_slug`, `name`, `created`,
`description`, `context_length`, `architecture`, `pricing` (USD per token as decimal strings),
`top_provider`, `supported_parameters`. What is not known is null, as OpenRouter writes it; a
prompt or completion price not known is "-1", OpenRouter's price of a model whose price varies
(its schema requires both as strings), never "0", which reads as free."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any

from aiohttp import web
from multidict import MultiMapping

from localrouter.base.errors import BadRequest
from localrouter.config.control import Client
from localrouter.http.bodies import Body, cached_response
from localrouter.http.guard import CLIENT
from localrouter.views.route import CachedListRoute

if TYPE_CHECKING:
    from localrouter.views.merged import MergedModels

UNKNOWN_PRICE = "-1"  # OpenRouter's "varies": what its clients read as no fixed price
_PAGING = ("offset", "limit")


def openrouter_models(merged: MergedModels) -> Body:
    data = [openrouter_entry(entry) for entry in merged.by_id.values()]
    return Body.of({"data": data, "links": {"next": None}, "total_count": len(data)})


@dataclass(frozen=True, slots=True)
class Page:
    """A page of the list: from `offset`, at most `limit` models (None: all the rest)."""

    offset: int
    limit: int | None

    @classmethod
    def asked(cls, query: MultiMapping[str]) -> Page | None:
        """The page the query asks for; None when it asks for none (the whole list)."""
        if not any(name in query for name in _PAGING):
            return None
        offset = _whole_number(query, "offset", 0) if "offset" in query else 0
        limit = _whole_number(query, "limit", 1) if "limit" in query else None
        return cls(offset, limit)

    def body(self, merged: MergedModels, path: str) -> Body:
        total = len(merged.by_id)
        end = total if self.limit is None else min(total, self.offset + self.limit)
        entries = islice(merged.by_id.values(), self.offset, max(end, self.offset))
        following = f"{path}?offset={end}&limit={self.limit}" if end < total else None
        return Body.of(
            {
                "data": [openrouter_entry(entry) for entry in entries],
                "links": {"next": following},
                "total_count": total,
            }
        )


def _whole_number(query: MultiMapping[str], name: str, least: int) -> int:
    text = query.get(name, "")
    if not (text.isascii() and text.isdigit() and len(text) <= 9) or int(text) < least:
        raise BadRequest(
            f"{name}: expected a whole number of at least {least}, got {text!r}", param=name
        )
    return int(text)


class OpenRouterModels(CachedListRoute):
    """GET /api/v1/models: the caller's whole list as cached bytes, from memory when it is
    there, as every list view; a page (`offset`, `limit`) is cut from the same list, awaited."""

    def now(self, request: web.Request, client: Client | None) -> web.StreamResponse | None:
        if request.query_string and any(name in request.query for name in _PAGING):
            return None  # a page: awaited
        return super().now(request, client)

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        page = Page.asked(request.query) if request.query_string else None
        if page is None:
            return await super().__call__(request)
        _, shown, _ = await self._models.visible(request[CLIENT])
        return cached_response(request, page.body(shown, request.path))


def openrouter_entry(entry: dict[str, Any]) -> dict[str, Any]:
    architecture = entry.get("architecture") or {}
    inputs = architecture.get("input_modalities") or ["text"]
    outputs = architecture.get("output_modalities") or ["text"]
    top = entry.get("top_provider") or {}
    return {
        "id": entry["id"],
        "canonical_slug": entry["id"],
        "hugging_face_id": None,
        "name": entry.get("name") or entry["id"],
        "created": entry.get("created") or 0,
        "description": entry.get("description") or "",
        "context_length": entry.get("context_length"),
        "architecture": {
            "modality": f"{'+'.join(inputs)}->{'+'.join(outputs)}",
            "input_modalities": inputs,
            "output_modalities": outputs,
            "tokenizer": "Other",
            "instruct_type": None,
        },
        "pricing": {
            "prompt": UNKNOWN_PRICE,
            "completion": UNKNOWN_PRICE,
            **(entry.get("pricing") or {}),
        },
        "top_provider": {
            "context_length": entry.get("context_length"),
            "max_completion_tokens": top.get("max_completion_tokens"),
            "is_moderated": False,
        },
        "per_request_limits": None,
        "supported_parameters": entry.get("supported_parameters") or [],
        "default_parameters": {},
        "supported_voices": None,
        "knowledge_cutoff": None,
        "expiration_date": None,
        "links": {"details": f"/api/v1/models/{entry['id']}/endpoints"},
    }
