"""`/api/v1` as an OpenRouter base URL: the list in OpenRouter's envelope (`links`,
`total_count`, paged by `offset` and `limit` as OpenRouter's SDK asks), the calls OpenRouter
serves there (chat, completions, embeddings) through the one forwarding path, every error in
OpenRouter's shape (`code` the HTTP status, a number), upstream refusals included. And no view
shows an unknown price as free."""

from __future__ import annotations

from typing import Any

import openai
import orjson
import pytest

from tests.conftest import DaemonFactory, UpstreamFactory, openai_compatible
from tests.openrouter_upstream import ANSWER, ChatUpstream

ADMIN_TOKEN = "or-admin-token-4d5e6f"
CLIENT_TOKEN = "or-client-token-7a8b9c"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CLIENT = {"Authorization": f"Bearer {CLIENT_TOKEN}"}


async def lab_daemon(aiohttp_server: Any, daemon: DaemonFactory, upstream: ChatUpstream) -> Any:
    server = await aiohttp_server(upstream.app())
    config = {
        "server": {"auth_token": ADMIN_TOKEN},
        "providers": [openai_compatible("lab", str(server.make_url("/v1")))],
        "clients": [{"name": "tool", "token": CLIENT_TOKEN, "allow": ["lab/qwen*"]}],
    }
    return await daemon(config)


def sdk(client: Any, token: str = ADMIN_TOKEN) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=str(client.make_url("/api/v1")), api_key=token, max_retries=0
    )


def openrouter_error(body: Any, status: int) -> dict[str, Any]:
    """The error of an OpenRouter-shaped body: `code` is the HTTP status as a number, a
    message, metadata an object (OpenRouter's SDK parses exactly this)."""
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert error["code"] == status, error
    assert type(error["code"]) is int, error
    assert isinstance(error["message"], str), error
    assert error["message"], error
    assert isinstance(error.get("metadata", {}), dict), error
    return error


# The list: OpenRouter's envelope, paged as its SDK pages it.


async def test_the_list_has_openrouters_envelope(aiohttp_server: Any, daemon: DaemonFactory):
    client = await lab_daemon(aiohttp_server, daemon, ChatUpstream())
    for path in ("/api/v1/models", "/api/v1/models/user"):
        for headers, ids in ((ADMIN, ["lab/nomic-embed", "lab/qwen3-coder"]), (CLIENT, None)):
            answer = await client.get(path, headers=headers)
            assert answer.status == 200, await answer.text()
            body = await answer.json()
            assert set(body) == {"data", "links", "total_count"}
            assert body["links"] == {"next": None}
            assert body["total_count"] == len(body["data"])
            listed = [entry["id"] for entry in body["data"]]
            assert listed == (ids or ["lab/qwen3-coder"]), path  # a client: its allowlist


async def test_the_list_pages_by_offset_and_limit(
    aiohttp_server: Any, daemon: DaemonFactory
) -> None:
    models = ("m-a", "m-b", "m-c", "m-d", "m-e")
    client = await lab_daemon(aiohttp_server, daemon, ChatUpstream(models=models))
    whole = await (await client.get("/api/v1/models", headers=ADMIN)).json()
    everything = [entry["id"] for entry in whole["data"]]
    assert len(everything) == 5

    seen, query = [], "/api/v1/models?limit=2"
    while query:
        answer = await client.get(query, headers=ADMIN)
        assert answer.status == 200, await answer.text()
        page = await answer.json()
        assert page["total_count"] == 5
        assert len(page["data"]) <= 2
        seen += [entry["id"] for entry in page["data"]]
        query = page["links"]["next"]
    assert seen == everything

    past = await (await client.get("/api/v1/models?offset=5&limit=500", headers=ADMIN)).json()
    assert past == {"data": [], "links": {"next": None}, "total_count": 5}
    tail = await (await client.get("/api/v1/models?offset=3", headers=ADMIN)).json()
    assert [entry["id"] for entry in tail["data"]] == everything[3:]
    assert tail["data"] == whole["data"][3:]  # a page's entries are the whole list's

    for bad in ("limit=0", "limit=two", "offset=-1", "offset=1.5"):
        answer = await client.get(f"/api/v1/models?{bad}", headers=ADMIN)
        error = openrouter_error(await answer.json(), 400)
        assert bad.split("=")[0] in error["message"]


# Calls: the same forwarding as /v1, only the errors' shape differs.


async def test_the_openai_client_calls_through_api_v1(aiohttp_server: Any, daemon: DaemonFactory):
    upstream = ChatUpstream()
    client = await lab_daemon(aiohttp_server, daemon, upstream)
    async with sdk(client) as api:
        listed = await api.models.list()
        assert [model.id for model in listed.data] == ["lab/nomic-embed", "lab/qwen3-coder"]
        messages: Any = [{"role": "user", "content": "hi"}]
        answer = await api.chat.completions.create(model="lab/qwen3-coder", messages=messages)
        assert answer.choices[0].message.content == ANSWER
        stream = await api.chat.completions.create(
            model="lab/qwen3-coder", messages=messages, stream=True
        )
        pieces = [part.choices[0].delta.content async for part in stream if part.choices]
        assert "".join(piece or "" for piece in pieces) == ANSWER
        completion = await api.completions.create(model="lab/qwen3-coder", prompt="Say hi")
        assert completion.choices[0].text == ANSWER
        embedded = await api.embeddings.create(model="lab/nomic-embed", input="hi")
        assert embedded.data[0].embedding == [0.5, 0.25]
    assert upstream.paths == [
        "/v1/chat/completions",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
    ]
    assert [body["model"] for body in upstream.bodies] == ["qwen3-coder"] * 3 + ["nomic-embed"]
    assert upstream.bodies[0] == {"model": "qwen3-coder", "messages": messages}


async def test_api_v1_calls_follow_the_callers_allowlist(
    aiohttp_server: Any, daemon: DaemonFactory
):
    upstream = ChatUpstream()
    client = await lab_daemon(aiohttp_server, daemon, upstream)
    async with sdk(client, CLIENT_TOKEN) as api:
        answer = await api.chat.completions.create(
            model="lab/qwen3-coder", messages=[{"role": "user", "content": "hi"}]
        )
        assert answer.choices[0].message.content == ANSWER
        with pytest.raises(openai.APIStatusError) as refused:
            await api.embeddings.create(model="lab/nomic-embed", input="hi")
    assert refused.value.status_code in (403, 404)
    openrouter_error(refused.value.response.json(), refused.value.status_code)
    assert upstream.paths == ["/v1/chat/completions"]


# Errors: OpenRouter's shape under /api/v1, OpenAI's elsewhere.

CHAT = {"model": "lab/qwen3-coder", "messages": [{"role": "user", "content": "hi"}]}
NOPE = "acme/no-such-model"  # no instance lists it


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status"),
    [
        ("POST", "/api/v1/chat/completions", ADMIN, {**CHAT, "model": NOPE}, 404),
        ("POST", "/api/v1/completions", ADMIN, {"model": NOPE, "prompt": "hi"}, 404),
        ("POST", "/api/v1/embeddings", ADMIN, {"model": NOPE, "input": "hi"}, 404),
        ("POST", "/api/v1/chat/completions", {}, CHAT, 401),
        ("POST", "/api/v1/chat/completions", {"Authorization": "Bearer wrong-token-1"}, CHAT, 401),
        ("POST", "/api/v1/chat/completions", ADMIN, b"{not json", 400),
        ("POST", "/api/v1/chat/completions", ADMIN, {"messages": []}, 400),
        ("GET", "/api/v1/chat/completions", ADMIN, None, 405),
        ("POST", "/api/v1/models", ADMIN, {}, 405),
        ("GET", "/api/v1/models", {}, None, 401),
        ("GET", "/api/v1/credits", ADMIN, None, 404),  # an account endpoint we do not serve
        ("GET", "/api/v1/generation?id=gen-1", ADMIN, None, 404),  # no such request
        ("GET", "/api/v1/generation", ADMIN, None, 400),  # no id
    ],
    ids=lambda value: value if isinstance(value, str | int) else "",
)
async def test_errors_under_api_v1_are_openrouters(
    aiohttp_server: Any,
    daemon: DaemonFactory,
    method: str,
    path: str,
    headers: dict[str, str],
    body: Any,
    status: int,
):
    upstream = ChatUpstream()
    client = await lab_daemon(aiohttp_server, daemon, upstream)
    data = body if isinstance(body, bytes) else None if body is None else orjson.dumps(body)
    answer = await client.request(method, path, headers=headers, data=data)
    assert answer.status == status, await answer.text()
    openrouter_error(await answer.json(), status)
    assert upstream.paths == []


async def test_errors_under_v1_stay_openais(aiohttp_server: Any, daemon: DaemonFactory):
    client = await lab_daemon(aiohttp_server, daemon, ChatUpstream())
    answer = await client.post("/v1/chat/completions", headers=ADMIN, json={**CHAT, "model": NOPE})
    assert answer.status == 404
    error = (await answer.json())["error"]
    assert error["code"] == "model_not_found"
    assert error["type"] == "invalid_request_error"


REFUSAL = {
    "error": {
        "message": "temperature must be at most 2",
        "type": "invalid_request_error",
        "code": "invalid_value",
        "param": "temperature",
    }
}


@pytest.mark.parametrize("status", [400, 404, 422])
async def test_an_upstream_refusal_under_api_v1_is_openrouters(
    aiohttp_server: Any, daemon: DaemonFactory, status: int
):
    client = await lab_daemon(aiohttp_server, daemon, ChatUpstream(refusal=(status, REFUSAL)))
    answer = await client.post("/api/v1/chat/completions", headers=ADMIN, json=CHAT)
    assert answer.status == status
    error = openrouter_error(await answer.json(), status)
    assert "temperature must be at most 2" in error["message"]
    # The same refusal to an OpenAI client passes as the upstream gave it.
    answer = await client.post("/v1/chat/completions", headers=ADMIN, json=CHAT)
    assert answer.status == status
    assert await answer.json() == REFUSAL


async def test_a_stream_broken_under_api_v1_ends_with_openrouters_error(
    aiohttp_server: Any, daemon: DaemonFactory
):
    client = await lab_daemon(aiohttp_server, daemon, ChatUpstream(break_stream=True))
    answer = await client.post(
        "/api/v1/chat/completions", headers=ADMIN, json={**CHAT, "stream": True}
    )
    assert answer.status == 200
    events = [
        line.removeprefix(b"data: ")
        for line in (await answer.read()).split(b"\n\n")
        if line.startswith(b"data: ")
    ]
    assert orjson.loads(events[0])["choices"][0]["delta"]["content"] == "Hello "
    openrouter_error(orjson.loads(events[-1]), 502)


# Unknown prices: never free, in any view.

PRICED = {
    "data": [
        {"id": "acme/unpriced", "name": "Unpriced"},
        {"id": "acme/half", "name": "Half", "pricing": {"prompt": "0.000001", "completion": "-1"}},
        {"id": "acme/free", "name": "Free", "pricing": {"prompt": "0", "completion": "0"}},
    ]
}
LIST_VIEWS = {  # path: (where the rows are, the key naming a row's model)
    "/v1/models": ("data", "id"),
    "/api/v1/models": ("data", "id"),
    "/api/v1/models/user": ("data", "id"),
    "/v1/model/info": ("data", "model_name"),
    "/model/info": ("data", "model_name"),
    "/model_group/info": ("data", "model_group"),
    "/api/models": ("models", "id"),
    "/api/models/unique": ("models", "id"),
    "/api/v0/models": ("data", "id"),
    "/api/tags": ("models", "name"),
}
# Views that show prices: there a free model must still read as free.
WITH_PRICES = {
    "/v1/models",
    "/api/v1/models",
    "/api/v1/models/user",
    "/v1/model/info",
    "/model/info",
    "/model_group/info",
    "/api/models",
    "/api/models/unique",
    "/v1/models/{id}",
    "/api/models/unique/{id}",
}


def price_leaves(value: Any, path: str = "", priced: bool = False) -> list[tuple[str, Any]]:
    """Every price or cost a row shows, with its path: values under a key that names one,
    less what names an offer (`instance`, `id`) there."""
    if isinstance(value, dict):
        return [
            leaf
            for key, item in value.items()
            if not (priced and key in ("instance", "id"))
            for leaf in price_leaves(
                item, f"{path}.{key}", priced or "pric" in key or "cost" in key
            )
        ]
    if isinstance(value, list):
        return [leaf for item in value for leaf in price_leaves(item, path, priced)]
    return [(path, value)] if priced else []


async def priced_rows(client: Any, model: str) -> dict[str, Any]:
    """The row for `model` (an instance's id) in every view, list or single."""
    upstream_id = model.partition("/")[2]
    rows: dict[str, Any] = {}
    for path, (field, key) in LIST_VIEWS.items():
        listed = (await (await client.get(path)).json())[field]
        name = {"/api/tags": f"{model}:latest", "/api/models/unique": upstream_id}.get(path, model)
        (rows[path],) = [row for row in listed if row[key] == name]
    anthropic = await client.get("/v1/models", headers={"anthropic-version": "2023-06-01"})
    (rows["anthropic /v1/models"],) = [
        row for row in (await anthropic.json())["data"] if row["id"] == model
    ]
    rows["/v1/models/{id}"] = await (await client.get(f"/v1/models/{model}")).json()
    rows["/api/v0/models/{id}"] = await (await client.get(f"/api/v0/models/{model}")).json()
    unique_one = await client.get(f"/api/models/unique/{upstream_id}")
    rows["/api/models/unique/{id}"] = await unique_one.json()
    rows["/api/show"] = await (await client.post("/api/show", json={"model": model})).json()
    return rows


def unknown(path: str) -> tuple[Any, ...]:
    """How the view at `path` writes a price it does not know: null (or left out), and in
    OpenRouter's list its own "-1", the price of a model whose price varies."""
    return (None, "-1") if path.startswith("/api/v1/") else (None,)


@pytest.fixture
async def priced(upstream: UpstreamFactory, daemon: DaemonFactory) -> Any:
    listing = await upstream(orjson.dumps(PRICED))
    plain = await upstream()
    plain.serve_models(["mystery-model-x"])
    return await daemon(
        {
            "providers": [
                {"name": "or", "type": "openrouter", "base_url": listing.url},
                openai_compatible("lab", plain.url),
            ]
        }
    )


@pytest.mark.parametrize("model", ["or/acme/unpriced", "lab/mystery-model-x"])
async def test_an_unpriced_model_is_not_free_in_any_view(priced: Any, model: str):
    for path, row in (await priced_rows(priced, model)).items():
        shown = price_leaves(row)
        assert all(value in unknown(path) for _, value in shown), (path, shown)


async def test_a_half_priced_model_shows_only_its_known_price(priced: Any):
    for path, row in (await priced_rows(priced, "or/acme/half")).items():
        known = [(where, value) for where, value in price_leaves(row) if value not in unknown(path)]
        assert all(float(value) == pytest.approx(1e-6) for _, value in known), (path, known)


async def test_a_free_model_still_reads_free(priced: Any):
    for path, row in (await priced_rows(priced, "or/acme/free")).items():
        known = [(where, value) for where, value in price_leaves(row) if value not in unknown(path)]
        assert all(float(value) == 0 for _, value in known), (path, known)
        assert bool(known) == (path in WITH_PRICES), path


async def test_openrouters_list_gives_every_model_a_prompt_and_completion_price(priced: Any):
    """OpenRouter's SDK requires both as strings: one not known is "-1" (its "varies")."""
    listed = (await (await priced.get("/api/v1/models")).json())["data"]
    pricing = {entry["id"]: entry["pricing"] for entry in listed}
    assert pricing == {
        "lab/mystery-model-x": {"prompt": "-1", "completion": "-1"},
        "or/acme/free": {"prompt": "0", "completion": "0"},
        "or/acme/half": {"prompt": "0.000001", "completion": "-1"},
        "or/acme/unpriced": {"prompt": "-1", "completion": "-1"},
    }


async def test_the_cheapest_offer_is_one_whose_whole_price_is_known(
    upstream: UpstreamFactory, daemon: DaemonFactory
):
    """An offer whose completion price is unknown is not cheaper for it: it is not compared,
    and a model offered only so sorts with the unpriced ones."""
    lists = {
        "one": [
            {"id": "acme/omega", "pricing": {"prompt": "0.0000005"}},
            {"id": "acme/half", "pricing": {"prompt": "0.000000001"}},
        ],
        "two": [
            {"id": "acme/omega", "pricing": {"prompt": "0.000002", "completion": "0.000002"}},
            {"id": "acme/priced", "pricing": {"prompt": "0.000001", "completion": "0.000001"}},
        ],
    }
    providers = []
    for name, models in lists.items():
        listing = await upstream(orjson.dumps({"data": models}))
        providers.append({"name": name, "type": "openrouter", "base_url": listing.url})
    client = await daemon({"providers": providers})
    answer = await client.get("/api/models/unique?sort_by=cheapest_price&order=asc")
    rows = (await answer.json())["models"]
    assert [row["id"] for row in rows] == ["acme/priced", "acme/omega", "acme/half"]
    by_id = {row["id"]: row for row in rows}
    assert by_id["acme/omega"]["cheapest_price"]["instance"] == "two"
    assert by_id["acme/half"]["cheapest_price"] is None
    assert by_id["acme/half"]["providers"][0]["pricing"] == {
        "prompt": "0.000000001",
        "completion": None,
    }
