"""Hardening, round 2: hostile request bodies and what a client may learn of models it cannot
see. Each test failed on the code before its fix."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.conftest import DaemonFactory
from tests.test_proxy import FakeOpenAI, fake, instance

__all__ = ["fake"]  # the upstream fixture, shared with test_proxy.py

JSON = {"Content-Type": "application/json"}
CALL_ROUTES = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/responses",
    "/api/chat",
    "/api/generate",
    "/api/embed",
)


def deep_body(route: str, depth: int) -> bytes:
    """A well-formed request for `route` with one field nested `depth` levels (written by
    hand: JSON encoders refuse to go that deep)."""
    body: dict[str, Any] = {"model": "up/gpt-4o-mini"}
    if route.startswith("/v1/responses") or route.endswith(("embeddings", "embed")):
        body["input"] = "hi"
    elif route == "/api/generate":
        body["prompt"] = "hi"
    else:
        body["messages"] = [{"role": "user", "content": "hi"}]
    deep = b"[" * depth + b'"bottom"' + b"]" * depth
    return orjson.dumps(body)[:-1] + b',"extra":' + deep + b"}"


@pytest.mark.parametrize("depth", [255, 600, 1000])
@pytest.mark.parametrize("route", CALL_ROUTES)
async def test_an_over_deep_body_is_a_400_that_says_so_before_any_work(
    fake: FakeOpenAI, daemon: DaemonFactory, route: str, depth: int
) -> None:
    """JSON nested deeper than 254 levels is refused with a 400 naming the limit, on every
    call route, and nothing reaches the upstream (it gave a 500 and a traceback, and
    count_tokens recursed without limit)."""
    client = await daemon({"providers": [instance(fake)]})
    response = await client.post(route, data=deep_body(route, depth), headers=JSON)
    assert response.status == 400
    text = await response.text()
    assert "deeper than 254 levels" in text or "not valid JSON" in text
    assert fake.received == []


async def test_a_body_at_the_depth_limit_is_forwarded(
    fake: FakeOpenAI, daemon: DaemonFactory
) -> None:
    """254 levels is still a request (the limit is orjson's, which forwards it)."""
    client = await daemon({"providers": [instance(fake)]})
    body = deep_body("/v1/chat", 253)
    response = await client.post("/v1/chat/completions", data=body, headers=JSON)
    assert response.status == 200
    assert len(fake.received) == 1
