"""A session id reaches the upstream as `prompt_cache_key` where it helps: `openai` instances,
and any instance whose config says it takes one; never a strict OpenAI-compatible server that
may refuse unknown fields (issue 35)."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

from tests.conftest import DaemonFactory
from tests.test_proxy import UPSTREAM_KEY, FakeOpenAI, fake

__all__ = ["fake"]

SESSION = "claude-session-6f1d2c"


def instances(fake: FakeOpenAI) -> list[dict[str, Any]]:
    url = f"{fake.url}/v1"
    return [
        {"name": "oa", "type": "openai", "base_url": url, "api_key": UPSTREAM_KEY},
        {"name": "strict", "type": "openai_compatible", "base_url": url},
        {"name": "told", "type": "openai_compatible", "base_url": url, "prompt_cache_key": True},
    ]


@pytest.mark.parametrize(("instance", "keyed"), [("oa", True), ("strict", False), ("told", True)])
async def test_claude_codes_session_becomes_the_prompt_cache_key_of_a_translated_message(
    fake: FakeOpenAI, daemon: DaemonFactory, instance: str, keyed: bool
) -> None:
    """A Messages call translated for an instance that takes prompt_cache_key carries Claude
    Code's session header as one; a strict server gets none."""
    client = await daemon({"providers": instances(fake)})
    async with anthropic.AsyncAnthropic(
        base_url=str(client.make_url("")),
        api_key="unused",
        default_headers={"x-claude-code-session-id": SESSION},
        max_retries=0,
    ) as api:
        await api.messages.create(
            model=f"{instance}/gpt-4o-mini",
            max_tokens=32,
            messages=[{"role": "user", "content": "hi"}],
        )
    sent = fake.received[-1]["body"]
    assert sent.get("prompt_cache_key") == (SESSION if keyed else None)


@pytest.mark.parametrize(("instance", "keyed"), [("oa", True), ("strict", False), ("told", True)])
async def test_a_session_header_becomes_the_prompt_cache_key_of_a_forwarded_chat(
    fake: FakeOpenAI, daemon: DaemonFactory, instance: str, keyed: bool
) -> None:
    """A chat forwarded as it came gains the session's prompt_cache_key only where the
    instance takes one, and a client's own prompt_cache_key is never replaced."""
    client = await daemon({"providers": instances(fake)})
    async with openai.AsyncOpenAI(
        base_url=str(client.make_url("/v1")),
        api_key="unused",
        default_headers={"x-localrouter-session": SESSION},
        max_retries=0,
    ) as api:
        messages: Any = [{"role": "user", "content": "hi"}]
        await api.chat.completions.create(model=f"{instance}/gpt-4o-mini", messages=messages)
        assert fake.received[-1]["body"].get("prompt_cache_key") == (SESSION if keyed else None)
        await api.chat.completions.create(
            model=f"{instance}/gpt-4o-mini", messages=messages, prompt_cache_key="mine"
        )
        assert fake.received[-1]["body"]["prompt_cache_key"] == "mine"


@pytest.mark.parametrize(("instance", "keyed"), [("strict", False), ("told", True)])
async def test_a_translated_responses_request_keeps_its_prompt_cache_key_where_taken(
    fake: FakeOpenAI, daemon: DaemonFactory, instance: str, keyed: bool
) -> None:
    """Codex's prompt_cache_key survives the translation to Chat Completions for an instance
    that takes one, and is left out for a strict one."""
    client = await daemon({"providers": instances(fake)})
    async with openai.AsyncOpenAI(
        base_url=str(client.make_url("/v1")), api_key="unused", max_retries=0
    ) as api:
        await api.responses.create(
            model=f"{instance}/gpt-4o-mini", input="hi", prompt_cache_key="codex-conv-1"
        )
    assert fake.received[-1]["body"].get("prompt_cache_key") == ("codex-conv-1" if keyed else None)


async def test_a_native_responses_request_keeps_its_cache_fields_as_sent(
    fake: FakeOpenAI, daemon: DaemonFactory
) -> None:
    """An `openai` instance speaks Responses: prompt_cache_key and prompt_cache_retention go
    through as the client sent them."""
    client = await daemon({"providers": instances(fake)})
    body = {
        "model": "oa/gpt-4o-mini",
        "input": "hi",
        "prompt_cache_key": "codex-conv-2",
        "prompt_cache_retention": "24h",
    }
    await client.post("/v1/responses", json=body)
    sent = fake.received[-1]
    assert sent["path"] == "/v1/responses"
    assert sent["body"]["prompt_cache_key"] == "codex-conv-2"
    assert sent["body"]["prompt_cache_retention"] == "24h"
