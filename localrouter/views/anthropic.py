"""GET /v1/models and /v1/models/{id} in Anthropic's shape, for requests that carry
`anthropic-version` (Claude Code and the anthropic SDK): `{type: "model", id, display_name,
created_at}` entries, paged by `limit`, `after_id` and `before_id`. The entries are derived once
per data change from the merged list; the default page's body is rendered once too."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from localrouter.base.errors import BadRequest
from localrouter.config.control import ShapeKey
from localrouter.http.bodies import JSON, Body, cached_response
from localrouter.lists.derived import DerivedCache

if TYPE_CHECKING:
    from localrouter.views.merged import MergedModels

DEFAULT_LIMIT = 20
MAX_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class AnthropicModels:
    entries: list[dict[str, Any]]
    position: dict[str, int]
    first_page: Body

    def dismantle(self) -> None:
        self.entries.clear()
        self.position.clear()


def anthropic_models(merged: MergedModels) -> AnthropicModels:
    entries = [anthropic_entry(entry) for entry in merged.by_id.values()]  # sorted by id
    position = {entry["id"]: index for index, entry in enumerate(entries)}
    return AnthropicModels(entries, position, Body.of_bytes(_page(entries, 0, DEFAULT_LIMIT)))


def anthropic_entry(entry: dict[str, Any]) -> dict[str, Any]:
    created = datetime.fromtimestamp(entry.get("created") or 0, UTC)
    model_id: str = entry["id"]
    name = entry.get("name")
    # No real name, the id says more; an alias is its own id, so that two aliases of one
    # model can be told apart in a picker (Claude Code's /model).
    if not name or model_id.endswith(f"/{name}") or "alias_of" in entry:
        name = model_id
    return {
        "type": "model",
        "id": model_id,
        "display_name": name,
        "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _page(entries: list[dict[str, Any]], start: int, limit: int) -> bytes:
    page = entries[start : start + limit]
    return orjson.dumps(
        {
            "data": page,
            "has_more": start + limit < len(entries),
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
        }
    )


def page_response(request: web.Request, models: AnthropicModels) -> web.Response:
    query = request.query
    if not query.keys() & {"limit", "after_id", "before_id"}:
        return cached_response(request, models.first_page)
    limit = _limit(query.get("limit"))
    start = 0
    if after := query.get("after_id"):
        start = _position(models, after, "after_id") + 1
    elif before := query.get("before_id"):
        start = max(_position(models, before, "before_id") - limit, 0)
        limit = min(limit, _position(models, before, "before_id"))
    return web.Response(body=_page(models.entries, start, limit), content_type=JSON)


def one_response(entry: dict[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(anthropic_entry(entry)), content_type=JSON)


def _limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(
            f"limit: expected a whole number, got {raw[:40]!r}", param="limit"
        ) from None
    if not 1 <= value <= MAX_LIMIT:
        raise BadRequest(f"limit: must be from 1 to {MAX_LIMIT}, got {value}", param="limit")
    return value


def _position(models: AnthropicModels, model_id: str, name: str) -> int:
    index = models.position.get(model_id)
    if index is None:
        raise BadRequest(f"{name}: no model with id {model_id[:200]!r}", param=name)
    return index


AnthropicCache = DerivedCache[ShapeKey | None, AnthropicModels]
