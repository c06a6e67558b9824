"""Hardening, round 2: hostile request bodies and what a client may learn of models it cannot
see. Each test failed on the code before its fix."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.conftest import DaemonFactory, openai_compatible
from tests.test_control import StartUpstream, chat_upstream
from tests.test_proxy import FakeOpenAI, fake, instance

__all__ = ["chat_upstream", "fake"]  # upstream fixtures, shared with their own test modules

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


# --- what a client may learn of models it cannot see (item 5) ------------------------------

ADMIN = "admin-token-5e6f7a8b"
LAB_ONLY = "lab-only-token-1c2d3e4f"


def visibility_config(url: str) -> dict[str, Any]:
    return {
        "server": {"auth_token": ADMIN},
        "providers": [openai_compatible("lab", url), openai_compatible("groq", url)],
        "models": {
            "aliases": {"fancy": "groq/qwen-missing", "gone": "lab/qwen-missing"},
            "hide": ["*/qwen-secret*"],
        },
        # "qwen*" admits bare names: a near miss of one is looked up, not refused.
        "clients": [{"name": "labber", "token": LAB_ONLY, "allow": ["lab/*", "qwen*"]}],
    }


async def refusal(client: Any, token: str, model: str) -> tuple[int, str]:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {token}"}
    response = await client.post("/v1/chat/completions", json=body, headers=headers)
    return response.status, (await response.json())["error"]["message"]


async def test_suggestions_name_only_models_the_caller_may_see(
    chat_upstream: StartUpstream, daemon: DaemonFactory
) -> None:
    """A near miss is answered with ids the caller may see: never another instance's model
    outside its allowlist, never a hidden model (the admin's suggestions skip hidden ones)."""
    up = await chat_upstream(["qwen-coder", "qwen-secret-coder"])
    client = await daemon(visibility_config(up.url))
    status, message = await refusal(client, LAB_ONLY, "qwen-codr")
    assert status == 404
    assert "lab/qwen-coder" in message
    assert "groq/" not in message
    assert "secret" not in message
    status, message = await refusal(client, ADMIN, "qwen-secret-codr")
    assert status == 404
    assert "secret-coder" not in message
    assert up.asked == []


async def test_a_name_outside_the_allowlist_is_refused_alike_whether_it_exists_or_not(
    chat_upstream: StartUpstream, daemon: DaemonFactory
) -> None:
    """An existing bare id, a missing one and a dangling alias, all outside the client's
    allowlist, get the same 403 that names nothing but the name asked for."""
    up = await chat_upstream(["qwen-coder", "llama"])
    client = await daemon(visibility_config(up.url))
    answers = {
        name: await refusal(client, LAB_ONLY, name)
        for name in ("groq/llama", "groq/no-such-model", "no-such-model", "fancy")
    }
    for name, (status, message) in answers.items():
        assert status == 403, name
        assert message == (
            f"Client 'labber' may not use '{name}': it is outside the client's allow list "
            "(clients[].allow in the config)."
        )
    assert "qwen-missing" not in str(answers)
    assert up.asked == []


async def test_an_alias_whose_target_is_not_listed_is_a_404_naming_the_target(
    chat_upstream: StartUpstream, daemon: DaemonFactory
) -> None:
    """An alias promises a listed model: when its `instance/model` target is not in the
    instance's list, the answer is our 404 naming the target, and no call is made."""
    up = await chat_upstream(["qwen-coder"])
    client = await daemon(visibility_config(up.url))
    status, message = await refusal(client, ADMIN, "gone")
    assert status == 404
    assert "'lab/qwen-missing'" in message
    assert "models.aliases" in message
    assert up.asked == []
