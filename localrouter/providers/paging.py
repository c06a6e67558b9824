"""Token- and cursor-paged model lists, under a page cap."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from localrouter.providers.base import ModelInfo
from localrouter.providers.parsing import model_items, parse_items, too_many_pages

if TYPE_CHECKING:
    from localrouter.upstream.client import UpstreamClient

NextToken = Callable[[Any], str | None]  # page body -> the next page's token, None at the end
Parse = Callable[[dict[str, Any]], ModelInfo | None]


async def paged_models(
    http: UpstreamClient,
    url: str,
    *,
    headers: Mapping[str, str],
    params: Mapping[str, str | int],
    items_key: str,
    next_param: str,
    next_token: NextToken,
    parse: Parse,
    max_pages: int,
) -> list[ModelInfo]:
    """Follow `next_param=<token>` from page to page; more than `max_pages` is an error."""
    query = dict(params)
    models: list[ModelInfo] = []
    for _ in range(max_pages):
        body = await http.get_json(url, headers=headers, params=query)
        models += await parse_items(model_items(body, items_key), parse)
        token = next_token(body)
        if token is None:
            return models
        query[next_param] = token
    raise too_many_pages(max_pages)
