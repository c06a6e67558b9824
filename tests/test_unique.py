"""GET /api/models/unique: grouping, every filter and sort (ties included), paging, errors."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from localrouter.app import COMPONENTS
from localrouter.views.unique import COMMON_QUERIES, UniqueQuery
from tests.conftest import DaemonFactory, UpstreamFactory, eventually


def model(
    model_id: str,
    name: str,
    prompt: str | None = None,
    completion: str | None = None,
    active: bool = True,
) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": model_id, "name": name, "active": active}
    if prompt is not None:
        entry["pricing"] = {"prompt": prompt, "completion": completion}
    return entry


# Vendor "acme" is in no catalog, so rows group by normalised upstream id.
LISTS = {
    "one": [
        model("acme/alpha", "Alpha", "0.000003", "0.000006"),
        model("acme/beta", "beta", "0.000001", "0.000001"),
        model("acme/gamma", "Same"),
        model("acme/old", "Old", "0.000001", "0.000001", active=False),
    ],
    "two": [
        model("acme/alpha", "Alpha", "0.000002", "0.000006"),
        model("acme/beta-latest", "beta", "0.000001", "0.000001"),
    ],
    "three": [
        model("acme/alpha", "Alpha", "0.00001", "0.00001"),
        model("acme/delta", "Same", "0.000004", "0.000004"),
    ],
}


@pytest.fixture
async def client(upstream: UpstreamFactory, daemon: DaemonFactory) -> Any:
    providers = []
    for name, models in LISTS.items():
        up = await upstream(orjson.dumps({"data": models}))
        providers.append({"name": name, "type": "openrouter", "base_url": up.url})
    return await daemon({"providers": providers})


async def unique(client: Any, query: str = "") -> dict[str, Any]:
    response = await client.get(f"/api/models/unique?{query}")
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def ids(client: Any, query: str = "") -> list[str]:
    return [row["id"] for row in (await unique(client, query))["models"]]


async def test_rows_group_providers_and_name_the_cheapest(client: Any):
    body = await unique(client)
    assert body["total"] == 4
    alpha = body["models"][0]
    assert alpha["id"] == "acme/alpha"
    assert alpha["provider_count"] == 3
    assert [p["instance"] for p in alpha["providers"]] == ["one", "two", "three"]
    assert alpha["providers"][1]["pricing"] == {"prompt": "0.000002", "completion": "0.000006"}
    assert alpha["cheapest_price"] == {
        "instance": "two",
        "id": "two/acme/alpha",
        "prompt": "0.000002",
        "completion": "0.000006",
    }
    beta = body["models"][1]
    assert [p["upstream_id"] for p in beta["providers"]] == ["acme/beta", "acme/beta-latest"]
    assert beta["cheapest_price"]["instance"] == "one"  # equal prices: the first instance


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["acme/alpha", "acme/beta", "acme/delta", "acme/gamma"]),
        ("order=asc", ["acme/delta", "acme/gamma", "acme/beta", "acme/alpha"]),
        ("min_providers=2", ["acme/alpha", "acme/beta"]),
        ("min_providers=3", ["acme/alpha"]),
        ("min_providers=5", []),
        (
            "include_inactive=true",
            ["acme/alpha", "acme/beta", "acme/delta", "acme/gamma", "acme/old"],
        ),
        ("sort_by=name", ["acme/alpha", "acme/beta", "acme/delta", "acme/gamma"]),
        ("sort_by=name&order=desc", ["acme/delta", "acme/gamma", "acme/beta", "acme/alpha"]),
        ("sort_by=cheapest_price", ["acme/beta", "acme/alpha", "acme/delta", "acme/gamma"]),
        (
            "sort_by=cheapest_price&order=desc",
            ["acme/alpha", "acme/delta", "acme/beta", "acme/gamma"],
        ),
        ("limit=2&offset=1", ["acme/beta", "acme/delta"]),
        ("limit=0", []),
        ("offset=10", []),
        ("provider=three", ["acme/alpha", "acme/delta"]),
        ("provider=one&min_providers=2", ["acme/alpha", "acme/beta"]),
    ],
)
async def test_filters_sorts_and_ties(client: Any, query: str, expected: list[str]):
    # Ties: delta and gamma share provider_count 1 and the name "Same"; alpha and delta share
    # the cheapest price 0.000008: each tie is ordered by id, in either order.
    """/api/models/unique filters by provider count, provider and activity, sorts by each key in
    either order with ties broken by id, and pages with limit and offset."""
    assert await ids(client, query) == expected


async def test_paging_reports_the_total(client: Any):
    body = await unique(client, "limit=1&offset=1")
    assert (body["total"], body["count"], body["offset"], body["limit"]) == (4, 1, 1, 1)


async def test_one_distinct_model(client: Any):
    """One distinct model is retrieved by its id with its provider count; an unknown id is a 404
    not_found."""
    response = await client.get("/api/models/unique/acme/alpha")
    assert response.status == 200
    assert (await response.json())["provider_count"] == 3
    missing = await client.get("/api/models/unique/acme/nothing")
    assert missing.status == 404
    assert (await missing.json())["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("sort_by=price", "sort_by"),
        ("order=up", "order"),
        ("limit=-1", "limit"),
        ("limit=ten", "limit"),
        ("offset=-2", "offset"),
        ("min_providers=two", "min_providers"),
        ("min_providers=0", "min_providers"),
        ("provider=nope", "provider"),
        ("include_inactive=maybe", "include_inactive"),
    ],
)
async def test_invalid_parameters_are_400_naming_the_parameter(client: Any, query: str, param: str):
    response = await client.get(f"/api/models/unique?{query}")
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["param"] == param
    assert error["message"].startswith(f"{param}:")


async def test_queries_are_answered_from_cached_bytes_until_the_data_changes(client: Any):
    registry = client.app[COMPONENTS].registry
    cache = client.app[COMPONENTS].unique
    lists = await registry.lists(1.0)
    query = UniqueQuery(min_providers=2)
    first = await cache.page(query, lists)
    assert await cache.page(query, lists) is first
    registry.expire(["one"])  # the list is now served as stale: a different answer
    changed = await registry.lists(1.0)
    assert await cache.page(query, changed) is not first


async def test_common_variants_are_warmed_at_startup(client: Any):
    cache = client.app[COMPONENTS].unique

    async def warmed() -> bool:
        return set(COMMON_QUERIES) <= cache.rendered_queries()

    assert await eventually(warmed, "the common queries being rendered")
