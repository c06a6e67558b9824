"""Prompt-cache markers survive the gateway where the upstream honours them (issue 35): an
Anthropic-native instance gets `cache_control` exactly as sent, ttl included; a Messages call
translated for an OpenRouter-shaped upstream keeps each marker on the part it was on, its
1-hour ttl dropped for a model that is not Anthropic's; a plain OpenAI-compatible upstream
gets no marker and no error. Driven with the official anthropic client."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest
from aiohttp import web

from tests.conftest import DaemonFactory
from tests.test_proxy import completion

HOUR = {"type": "ephemeral", "ttl": "1h"}
FIVE_MINUTES = {"type": "ephemeral"}
SYSTEM: Any = [
    {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.0"},
    {"type": "text", "text": "You are Claude Code.", "cache_control": HOUR},
    {"type": "text", "text": "Project rules: be brief.", "cache_control": FIVE_MINUTES},
]
MESSAGES: Any = [
    {"role": "user", "content": "first question"},
    {"role": "assistant", "content": "first answer"},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "a long file"},
            {"type": "text", "text": "the question", "cache_control": FIVE_MINUTES},
        ],
    },
]
TOOLS: Any = [
    {
        "name": "read",
        "description": "Read a file",
        "input_schema": {"type": "object", "properties": {}},
        "cache_control": HOUR,
    }
]


class Upstream:
    """Anthropic's /v1/messages and OpenAI's /v1/chat/completions, noting every body."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    async def messages(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.bodies.append(body)
        return web.json_response(
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": [{"type": "text", "text": "ok"}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 5, "output_tokens": 1},
            }
        )

    async def chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.bodies.append(body)
        return web.json_response(completion(body["model"], "ok"))

    async def models(self, _: web.Request) -> web.Response:
        return web.json_response({"data": []})


@pytest.fixture
async def upstream(aiohttp_server: Any) -> tuple[Upstream, str]:
    fake = Upstream()
    app = web.Application()
    app.router.add_post("/v1/messages", fake.messages)
    app.router.add_post("/v1/chat/completions", fake.chat)
    app.router.add_get("/{tail:.*}", fake.models)
    server = await aiohttp_server(app)
    return fake, str(server.make_url("/v1"))


async def ask(daemon: DaemonFactory, url: str, model: str) -> None:
    providers = [
        {"name": "anth", "type": "anthropic", "base_url": url, "api_key": "sk-ant-test-1234567"},
        {"name": "or", "type": "openrouter", "base_url": url, "api_key": "sk-or-test-12345678"},
        {"name": "lab", "type": "openai_compatible", "base_url": url},
    ]
    client = await daemon({"providers": providers})
    async with anthropic.AsyncAnthropic(
        base_url=str(client.make_url("")), api_key="unused", max_retries=0
    ) as api:
        await api.messages.create(
            model=model, max_tokens=64, system=SYSTEM, messages=MESSAGES, tools=TOOLS
        )


async def test_a_native_instance_gets_the_markers_as_sent(
    upstream: tuple[Upstream, str], daemon: DaemonFactory
) -> None:
    """System, tool and message markers reach an Anthropic-native upstream unchanged, ttl
    included."""
    fake, url = upstream
    await ask(daemon, url, "anth/claude-sonnet-4-5")
    sent = fake.bodies[-1]
    assert sent["system"] == SYSTEM
    assert sent["messages"] == MESSAGES
    assert sent["tools"][0]["cache_control"] == HOUR


@pytest.mark.parametrize(
    ("model", "hour"),
    [("anthropic/claude-sonnet-4.5", HOUR), ("google/gemini-2.5-pro", FIVE_MINUTES)],
)
async def test_an_openrouter_upstream_gets_each_marker_on_its_part(
    upstream: tuple[Upstream, str], daemon: DaemonFactory, model: str, hour: dict[str, str]
) -> None:
    """Translated for OpenRouter: the system parts and the last user part carry their
    markers; a 1-hour ttl stays for an Anthropic model and goes (the marker stays) for
    another."""
    fake, url = upstream
    await ask(daemon, url, f"or/{model}")
    sent = fake.bodies[-1]
    system = sent["messages"][0]
    assert system["role"] == "system"
    assert system["content"] == [
        {"type": "text", "text": "You are Claude Code.", "cache_control": hour},
        {"type": "text", "text": "Project rules: be brief.", "cache_control": FIVE_MINUTES},
    ]
    last = sent["messages"][-1]
    assert last["content"] == [
        {"type": "text", "text": "a long file"},
        {"type": "text", "text": "the question", "cache_control": FIVE_MINUTES},
    ]


async def test_a_plain_openai_compatible_upstream_gets_no_marker(
    upstream: tuple[Upstream, str], daemon: DaemonFactory
) -> None:
    """No cache_control anywhere in what a plain server gets, and the call answers."""
    fake, url = upstream
    await ask(daemon, url, "lab/qwen3-coder")
    assert "cache_control" not in str(fake.bodies[-1])
    assert fake.bodies[-1]["messages"][0]["content"] == (
        "You are Claude Code.\n\nProject rules: be brief."
    )
