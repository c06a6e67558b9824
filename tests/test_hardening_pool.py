"""A key pool under an upstream that answers every key 429 with a Retry-After of no time
(0, negative, a date in the past): a rest has a floor, a request tries each key a bounded
number of times, and the model's fallback answers. Over real sockets, with the official
clients; calls are counted at the fake upstream."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anthropic
import ollama
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import DaemonFactory, FakeClock, openai_compatible, settled
from tests.test_control import messages_sdk, named_answer, sdk

KEYS = ["sk-storm-key-one-1a2b3c4d", "sk-storm-key-two-5e6f7a8b", "sk-storm-key-three-9c0d1e2f"]
HI = [{"role": "user", "content": "hi"}]
NO_TIME = ["0", "-5", "Wed, 21 Oct 2015 07:28:00 GMT"]
# Where the fake stops answering 429, so that a storm ends (and the test fails) instead of
# running forever on code that retries without a bound.
STORM_BUDGET = 60
SLOW_CALL_SECONDS = 2.0  # longer than the rest each call earns: every key is free again


@dataclass
class Storming:
    """An OpenAI-compatible upstream that answers every chat call (and, with `lists_limited`,
    every list fetch) 429 with `retry_after`, whatever the key, until STORM_BUDGET calls."""

    retry_after: str
    lists_limited: bool = False
    slow: FakeClock | None = None  # a clock each call moves on by SLOW_CALL_SECONDS
    chat_keys: list[str] = field(default_factory=list)
    list_keys: list[str] = field(default_factory=list)
    url: str = ""

    def limited(self, calls: int) -> web.Response | None:
        if calls > STORM_BUDGET:
            return None
        headers = {"Retry-After": self.retry_after}
        return web.json_response({"error": {"message": "slow"}}, status=429, headers=headers)

    async def list_models(self, request: web.Request) -> web.Response:
        self.list_keys.append(request.headers.get("Authorization", ""))
        if self.slow is not None:
            self.slow.advance(SLOW_CALL_SECONDS)
        if self.lists_limited and (refused := self.limited(len(self.list_keys))) is not None:
            return refused
        return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})

    async def chat(self, request: web.Request) -> web.Response:
        self.chat_keys.append(request.headers.get("Authorization", ""))
        if self.slow is not None:
            self.slow.advance(SLOW_CALL_SECONDS)
        body = await request.json()
        return self.limited(len(self.chat_keys)) or named_answer(body["model"])


@pytest.fixture
def storming(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Callable[..., Any]:
    async def start(retry_after: str, **options: Any) -> Storming:
        fake = Storming(retry_after, **options)
        app = web.Application()
        app.router.add_get("/v1/models", fake.list_models)
        app.router.add_post("/v1/chat/completions", fake.chat)
        fake.url = str((await aiohttp_server(app)).make_url("/v1"))
        return fake

    return start


@dataclass
class Backup:
    asked: list[str] = field(default_factory=list)
    url: str = ""

    async def list_models(self, _: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})

    async def chat(self, request: web.Request) -> web.Response:
        model = (await request.json())["model"]
        self.asked.append(model)
        return named_answer(model)


@pytest.fixture
async def backup(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Backup:
    fake = Backup()
    app = web.Application()
    app.router.add_get("/v1/models", fake.list_models)
    app.router.add_post("/v1/chat/completions", fake.chat)
    fake.url = str((await aiohttp_server(app)).make_url("/v1"))
    return fake


def storm_config(lab: Storming, backup: Backup | None = None) -> dict[str, Any]:
    providers = [openai_compatible("lab", lab.url, api_keys=KEYS)]
    if backup is None:
        return {"providers": providers}
    providers.append(openai_compatible("backup", backup.url))
    return {"providers": providers, "models": {"fallbacks": {"lab/m": ["backup/m"]}}}


async def chat_via_openai(client: Any) -> tuple[str, dict[str, str]]:
    async with sdk(client) as api:
        raw = await api.chat.completions.with_raw_response.create(model="lab/m", messages=HI)
    return raw.parse().choices[0].message.content or "", dict(raw.headers)


async def responses_via_openai(client: Any) -> tuple[str, dict[str, str]]:
    async with sdk(client) as api:
        raw = await api.responses.with_raw_response.create(model="lab/m", input="hi")
    return raw.parse().output_text, dict(raw.headers)


async def messages_via_anthropic(client: Any) -> tuple[str, dict[str, str]]:
    async with messages_sdk(client) as claude:
        raw = await claude.messages.with_raw_response.create(
            model="lab/m", max_tokens=20, messages=HI
        )
    message = await raw.parse()
    assert isinstance(message.content[0], anthropic.types.TextBlock)
    return message.content[0].text, dict(raw.headers)


async def chat_via_ollama(client: Any) -> tuple[str, dict[str, str]]:
    async with ollama.AsyncClient(host=str(client.make_url(""))) as api:
        answer = await api.chat("lab/m", messages=HI)
    return answer.message.content or "", {}  # the ollama client shows no headers


ROUTES = {
    "chat": chat_via_openai,
    "responses": responses_via_openai,
    "messages": messages_via_anthropic,
    "ollama-chat": chat_via_ollama,
}


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("retry_after", NO_TIME)
async def test_a_pool_answering_429_with_no_rest_falls_back_after_one_call_per_key(
    route: str,
    retry_after: str,
    storming: Callable[..., Awaitable[Storming]],
    backup: Backup,
    daemon: DaemonFactory,
):
    lab = await storming(retry_after)
    client = await daemon(storm_config(lab, backup))
    text, headers = await ROUTES[route](client)
    assert len(lab.chat_keys) <= len(KEYS), f"{len(lab.chat_keys)} calls for {len(KEYS)} keys"
    assert sorted(lab.chat_keys) == sorted(f"Bearer {key}" for key in KEYS)  # each key once
    assert text == "this is m"
    assert backup.asked == ["m"]
    if headers:
        assert headers["x-localrouter-model"] == "backup/m"
        assert headers["x-localrouter-attempts"] == str(len(KEYS) + 1)


@pytest.mark.parametrize("route", ["chat", "messages"])
async def test_a_request_tries_each_key_once_even_when_its_rests_end_meanwhile(
    route: str,
    storming: Callable[..., Awaitable[Storming]],
    backup: Backup,
    daemon: DaemonFactory,
    clock: FakeClock,
):
    lab = await storming("1", slow=clock)
    client = await daemon(storm_config(lab, backup))
    text, headers = await ROUTES[route](client)
    assert len(lab.chat_keys) == len(KEYS), f"{len(lab.chat_keys)} calls for {len(KEYS)} keys"
    assert text == "this is m"
    assert headers["x-localrouter-model"] == "backup/m"
    assert headers["x-localrouter-attempts"] == str(len(KEYS) + 1)


async def test_a_rest_of_no_time_is_a_second_doubling_and_the_keys_come_back(
    storming: Callable[..., Awaitable[Storming]],
    backup: Backup,
    daemon: DaemonFactory,
    clock: FakeClock,
):
    lab = await storming("0")
    client = await daemon(storm_config(lab, backup))
    await chat_via_openai(client)
    assert len(lab.chat_keys) == len(KEYS)
    keys = (await (await client.get("/api/providers")).json())["providers"][0]["keys"]
    assert {key["state"] for key in keys} == {"resting"}
    assert {key["seconds_left"] for key in keys} == {1.0}  # the floor: no rest is shorter

    text, headers = await chat_via_openai(client)  # every key rests: straight to the backup
    assert (text, headers["x-localrouter-attempts"]) == ("this is m", "1")
    assert len(lab.chat_keys) == len(KEYS)

    clock.advance(1.0)
    await chat_via_openai(client)
    assert len(lab.chat_keys) == 2 * len(KEYS)  # rested, tried again: 429 in a row, doubled
    keys = (await (await client.get("/api/providers")).json())["providers"][0]["keys"]
    assert {key["seconds_left"] for key in keys} == {2.0}


@pytest.mark.parametrize(
    ("retry_after", "slow"), [*((when, False) for when in NO_TIME), ("1", True)]
)
async def test_a_list_fetch_tries_each_key_of_a_storming_pool_once(
    retry_after: str,
    slow: bool,
    storming: Callable[..., Awaitable[Storming]],
    daemon: DaemonFactory,
    clock: FakeClock,
):
    lab = await storming(retry_after, lists_limited=True, slow=clock if slow else None)
    client = await daemon(storm_config(lab))
    await client.get("/v1/models")
    stats = await settled(client)
    assert len(lab.list_keys) == len(KEYS), f"{len(lab.list_keys)} list fetches"
    assert stats["instances"]["lab"]["last_error"]


async def test_a_429_from_a_resting_pool_says_which_model_after_how_many_calls(
    storming: Callable[..., Awaitable[Storming]], daemon: DaemonFactory
):
    lab = await storming("30")
    client = await daemon(storm_config(lab))
    async with sdk(client) as api:
        with pytest.raises(openai.RateLimitError) as tried:
            await api.chat.completions.create(model="lab/m", messages=HI)
        with pytest.raises(openai.RateLimitError) as resting:  # no upstream call this time
            await api.chat.completions.create(model="lab/m", messages=HI)
    assert len(lab.chat_keys) == len(KEYS)
    first, second = tried.value.response.headers, resting.value.response.headers
    assert (first["x-localrouter-model"], first["x-localrouter-attempts"]) == ("lab/m", "3")
    assert second.get("x-localrouter-model") == "lab/m"
    assert second.get("x-localrouter-attempts") == "0"
    assert second["Retry-After"] == "30"
    async with messages_sdk(client) as claude:
        with pytest.raises(anthropic.RateLimitError) as refused:
            await claude.messages.create(model="lab/m", max_tokens=20, messages=HI)
    assert refused.value.response.headers.get("x-localrouter-attempts") == "0"
