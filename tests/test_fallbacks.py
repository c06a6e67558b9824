"""Second choices and several keys: models.fallbacks and providers[].api_keys, over real
sockets with the official clients, against upstreams that fail on cue."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import openai
import orjson
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestServer, unused_port

from localrouter.app import COMPONENTS
from localrouter.base.errors import ConfigError
from localrouter.cli import main
from localrouter.config.loading import literal_secrets_exposed, parse_settings
from tests.conftest import DaemonFactory, FakeClock, openai_compatible, settings_from
from tests.test_control import ADMIN, EDITOR, messages_sdk, named_answer, sdk
from tests.test_reload import write_config

KEYS = ["sk-pool-key-one-1a2b3c4d", "sk-pool-key-two-5e6f7a8b", "sk-pool-key-three-9c0d1e2f"]
HI = [{"role": "user", "content": "hi"}]


@dataclass
class Scripted:
    """An OpenAI-compatible server that fails on cue. `script` holds the answers to the next
    chat calls (a status, or "stream-then-die"); once it is empty, calls succeed. Keys in
    `refused` get a 401, keys in `limited` a 429 with that Retry-After."""

    models: list[str]
    script: list[int | str] = field(default_factory=list)
    refused: set[str] = field(default_factory=set)
    limited: dict[str, str] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)  # the model of each chat call
    keys: list[str] = field(default_factory=list)  # the key of each chat call
    list_keys: list[str] = field(default_factory=list)  # the key of each list fetch
    url: str = ""

    @staticmethod
    def key_of(request: web.Request) -> str:
        return request.headers.get("Authorization", "").removeprefix("Bearer ")

    def refusal(self, key: str) -> web.Response | None:
        if key in self.refused:
            return web.json_response({"error": {"message": f"bad key {key}"}}, status=401)
        if key in self.limited:
            wait = {"Retry-After": self.limited[key]}
            return web.json_response({"error": {"message": "slow"}}, status=429, headers=wait)
        return None

    async def list_models(self, request: web.Request) -> web.Response:
        key = self.key_of(request)
        self.list_keys.append(key)
        if (refused := self.refusal(key)) is not None:
            return refused
        data = [{"id": model, "object": "model", "owned_by": "x"} for model in self.models]
        return web.json_response({"object": "list", "data": data})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        key = self.key_of(request)
        self.asked.append(body["model"])
        self.keys.append(key)
        if (refused := self.refusal(key)) is not None:
            return refused
        step = self.script.pop(0) if self.script else "ok"
        if isinstance(step, int):
            return web.json_response({"error": {"message": f"failing with {step}"}}, status=step)
        if body.get("stream"):
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            await response.write(chunk(body["model"], "first "))
            if step == "stream-then-die":
                assert request.transport is not None
                request.transport.close()
                return response
            await response.write(chunk(body["model"], "second"))
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            return response
        return named_answer(body["model"])


def chunk(model: str, text: str) -> bytes:
    choice = {"index": 0, "delta": {"content": text}, "finish_reason": None}
    body = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": model}
    return b"data: " + orjson.dumps({**body, "choices": [choice]}) + b"\n\n"


StartScripted = Callable[..., Awaitable[Scripted]]


@pytest.fixture
def scripted(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> StartScripted:
    async def start(models: list[str], **options: Any) -> Scripted:
        fake = Scripted(models, **options)
        app = web.Application()
        app.router.add_get("/v1/models", fake.list_models)
        app.router.add_post("/v1/chat/completions", fake.chat)
        server = await aiohttp_server(app)
        fake.url = str(server.make_url("/v1"))
        return fake

    return start


def fallback_config(main_url: str, backup_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "providers": [openai_compatible("main", main_url), openai_compatible("backup", backup_url)],
        "models": {"fallbacks": {"main/m": ["backup/m"]}},
        **extra,
    }


async def metrics_text(client: Any) -> str:
    return await (await client.get("/metrics")).text()


@pytest.mark.parametrize("failure", [429, 503, "connect-refused"])
async def test_a_failed_call_falls_back_and_says_who_answered(
    failure: int | str, scripted: StartScripted, daemon: DaemonFactory
):
    backup = await scripted(["m"])
    if failure == "connect-refused":
        main_url, main = f"http://127.0.0.1:{unused_port()}/v1", None
    else:
        main = await scripted(["m"], script=[failure])
        main_url = main.url
    client = await daemon(fallback_config(main_url, backup.url))
    async with sdk(client) as api:
        raw = await api.chat.completions.with_raw_response.create(model="main/m", messages=HI)
    assert raw.parse().choices[0].message.content == "this is m"
    assert raw.headers["x-localrouter-model"] == "backup/m"
    assert raw.headers["x-localrouter-attempts"] == "2"
    assert backup.asked == ["m"]
    if main is not None:
        assert main.asked == ["m"]
    assert 'localrouter_fallbacks_total{from="main/m",to="backup/m"} 1.0' in await metrics_text(
        client
    )


async def test_an_upstream_404_falls_back_through_an_alias_in_every_protocol(
    scripted: StartScripted, daemon: DaemonFactory
):
    main = await scripted(["m"], script=[404, 404, 404])  # the model vanished upstream
    backup = await scripted(["m"])
    config = fallback_config(main.url, backup.url)
    config["models"] = {"aliases": {"spare": "backup/m"}, "fallbacks": {"main/m": ["spare"]}}
    client = await daemon(config)
    async with sdk(client) as api:
        answer = await api.chat.completions.create(model="main/m", messages=HI)
        assert answer.choices[0].message.content == "this is m"
        made = await api.responses.create(model="main/m", input="hi")
        assert made.output_text == "this is m"
    async with messages_sdk(client) as claude:
        message = await claude.messages.create(model="main/m", max_tokens=20, messages=HI)
    assert message.content[0].text == "this is m"  # type: ignore[union-attr]
    assert len(main.asked) == 3
    assert len(backup.asked) == 3
    metrics = await metrics_text(client)
    assert 'localrouter_fallbacks_total{from="main/m",to="spare"} 3.0' in metrics


async def test_a_stream_falls_back_before_its_first_byte_and_never_after(
    scripted: StartScripted, daemon: DaemonFactory
):
    main = await scripted(["m"], script=[503, "stream-then-die"])
    backup = await scripted(["m"])
    client = await daemon(fallback_config(main.url, backup.url))
    async with sdk(client) as api:
        stream = await api.chat.completions.create(model="main/m", messages=HI, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "first second"  # the backup's whole stream, after main's 503
    assert backup.asked == ["m"]

    answer = await client.post(
        "/v1/chat/completions", json={"model": "main/m", "messages": HI, "stream": True}
    )
    assert answer.headers["x-localrouter-model"] == "main/m"
    body = await answer.read()
    assert b"first " in body  # a byte reached the client: the break is reported, not retried
    assert b"upstream_stream_broken" in body
    assert backup.asked == ["m"]


@pytest.mark.parametrize("status", [400, 413, 422])
async def test_a_callers_mistake_is_never_retried(
    status: int, scripted: StartScripted, daemon: DaemonFactory
):
    main = await scripted(["m"], script=[status])
    backup = await scripted(["m"])
    client = await daemon(fallback_config(main.url, backup.url))
    answer = await client.post("/v1/chat/completions", json={"model": "main/m", "messages": HI})
    assert answer.status == status
    assert answer.headers["x-localrouter-attempts"] == "1"
    assert backup.asked == []


async def test_when_every_choice_fails_the_last_failure_is_answered(
    scripted: StartScripted, daemon: DaemonFactory
):
    main = await scripted(["m"], script=[503])
    backup = await scripted(["m"], script=[502])
    client = await daemon(fallback_config(main.url, backup.url))
    async with sdk(client) as api:
        with pytest.raises(openai.InternalServerError) as raised:
            await api.chat.completions.create(model="main/m", messages=HI)
    assert raised.value.status_code == 502
    assert "failing with 502" in str(raised.value)
    assert raised.value.response.headers["x-localrouter-model"] == "backup/m"
    assert raised.value.response.headers["x-localrouter-attempts"] == "2"


async def test_a_fallback_never_leaves_the_allowlist(
    scripted: StartScripted, daemon: DaemonFactory
):
    main = await scripted(["m"], script=[503, 503])
    backup = await scripted(["m"])
    config = fallback_config(
        main.url,
        backup.url,
        server={"auth_token": ADMIN},
        clients=[{"name": "editor", "token": EDITOR, "allow": ["main/*"]}],
    )
    client = await daemon(config)
    async with sdk(client, EDITOR) as editor:
        with pytest.raises(openai.InternalServerError) as raised:
            await editor.chat.completions.create(model="main/m", messages=HI)
    assert raised.value.status_code == 503  # main's own failure: backup/m is not the editor's
    assert backup.asked == []
    async with sdk(client, ADMIN) as admin:
        answer = await admin.chat.completions.create(model="main/m", messages=HI)
    assert answer.choices[0].message.content == "this is m"
    assert backup.asked == ["m"]


async def test_a_model_nobody_serves_now_goes_to_its_fallback(
    scripted: StartScripted, daemon: DaemonFactory
):
    backup = await scripted(["m"])
    config = {
        "providers": [openai_compatible("backup", backup.url)],
        "models": {"fallbacks": {"retired": ["backup/m"]}},
    }
    client = await daemon(config)
    async with messages_sdk(client) as claude:
        message = await claude.messages.create(model="retired", max_tokens=20, messages=HI)
    assert message.content[0].text == "this is m"  # type: ignore[union-attr]


def pool_config(url: str, **extra: Any) -> dict[str, Any]:
    return {"providers": [openai_compatible("lab", url, api_keys=KEYS)], **extra}


async def test_a_pool_takes_its_keys_in_turn_for_calls_and_lists(
    scripted: StartScripted, daemon: DaemonFactory
):
    lab = await scripted(["m"])
    client = await daemon(pool_config(lab.url))
    assert (await client.get("/v1/models")).status == 200
    async with sdk(client) as api:
        for _ in range(6):
            await api.chat.completions.create(model="lab/m", messages=HI)
    assert lab.list_keys[:1] == [KEYS[0]]
    assert lab.keys == [*KEYS[1:], *KEYS, KEYS[0]]  # the list fetch took the first turn


async def test_a_rate_limited_key_rests_for_its_retry_after(
    scripted: StartScripted, daemon: DaemonFactory, clock: FakeClock
):
    lab = await scripted(["m"], limited={KEYS[1]: "30"})
    client = await daemon(pool_config(lab.url))
    assert (await client.get("/v1/models")).status == 200  # fetched with key #1
    async with sdk(client) as api:
        first = await api.chat.completions.with_raw_response.create(model="lab/m", messages=HI)
        second = await api.chat.completions.with_raw_response.create(model="lab/m", messages=HI)
        assert first.headers["x-localrouter-attempts"] == "2"  # #2 was limited, #3 answered
        assert second.headers["x-localrouter-attempts"] == "1"
        assert lab.keys == [KEYS[1], KEYS[2], KEYS[0]]
        lab.limited.clear()
        for _ in range(4):
            await api.chat.completions.create(model="lab/m", messages=HI)
        assert lab.keys[3:] == [KEYS[2], KEYS[0], KEYS[2], KEYS[0]]  # #2 rests: skipped
        providers = await (await client.get("/api/providers")).json()
        keys = providers["providers"][0]["keys"]
        assert keys[1] == {"key": "lab key #2", "state": "resting", "seconds_left": 30.0}
        clock.advance(31)
        await api.chat.completions.create(model="lab/m", messages=HI)
        await api.chat.completions.create(model="lab/m", messages=HI)
    assert KEYS[1] in lab.keys[-2:]


async def test_a_refused_key_is_out_until_the_config_changes_and_never_shown(
    tmp_path: Path, scripted: StartScripted, daemon: DaemonFactory
):
    lab = await scripted(["m"], refused={KEYS[0]})
    path = tmp_path / "config.yaml"
    config = pool_config(lab.url)
    write_config(path, config)
    with structlog.testing.capture_logs() as logs:
        client = await daemon(config, config_path=path)
        async with sdk(client) as api:
            for _ in range(4):
                await api.chat.completions.create(model="lab/m", messages=HI)
        shown = ""
        for where in ("/health", "/api/providers", "/api/cache/stats", "/metrics", "/v1/models"):
            shown += await (await client.get(where)).text()
    assert KEYS[0] not in lab.keys[-4:]  # the list fetch met #1's 401 first; calls skip it
    health = await (await client.get("/health")).json()
    assert (
        "instance lab: lab key #1 was refused (HTTP 401); fix it in the config"
        in (health["reasons"])
    )
    assert health["status"] == "degraded"
    for key in KEYS:
        assert key not in shown
        assert key not in repr(logs)

    lab.refused.clear()
    write_config(path, {**config, "providers": [{**config["providers"][0], "timeout_seconds": 9}]})
    assert await client.app[COMPONENTS].reloader.reload()
    async with sdk(client) as api:
        for _ in range(3):
            await api.chat.completions.create(model="lab/m", messages=HI)
    assert KEYS[0] in lab.keys[-3:]  # a changed instance starts with a fresh pool
    assert (await (await client.get("/health")).json())["status"] == "ok"


async def test_when_every_key_rests_the_answer_is_429_with_the_shortest_wait_or_a_fallback(
    scripted: StartScripted, daemon: DaemonFactory
):
    lab = await scripted(["m"], limited={KEYS[0]: "40", KEYS[1]: "20", KEYS[2]: "90"})
    backup = await scripted(["m"])
    client = await daemon(pool_config(lab.url))
    async with sdk(client) as api:
        with pytest.raises(openai.RateLimitError) as raised:
            await api.chat.completions.create(model="lab/m", messages=HI)
        with pytest.raises(openai.RateLimitError) as again:
            await api.chat.completions.create(model="lab/m", messages=HI)
    assert raised.value.response.headers["Retry-After"] == "20"
    assert "every key of instance 'lab' is rate limited" in str(again.value)
    assert again.value.response.headers["Retry-After"] == "20"

    config = pool_config(lab.url, models={"fallbacks": {"lab/m": ["backup/m"]}})
    config["providers"].append(openai_compatible("backup", backup.url))
    client = await daemon(config)
    async with messages_sdk(client) as claude:
        message = await claude.messages.create(model="lab/m", max_tokens=20, messages=HI)
    assert message.content[0].text == "this is m"  # type: ignore[union-attr]


async def test_fallbacks_and_pools_reload_live(
    tmp_path: Path, scripted: StartScripted, daemon: DaemonFactory
):
    main = await scripted(["m"])
    backup = await scripted(["m"])
    path = tmp_path / "config.yaml"
    config = {
        "providers": [openai_compatible("main", main.url), openai_compatible("backup", backup.url)]
    }
    write_config(path, config)
    client = await daemon(config, config_path=path)
    reloader = client.app[COMPONENTS].reloader
    main.script = [503]
    answer = await client.post("/v1/chat/completions", json={"model": "main/m", "messages": HI})
    assert answer.status == 503

    write_config(path, {**config, "models": {"fallbacks": {"main/m": ["backup/m"]}}})
    assert await reloader.reload()
    main.script = [503]
    answer = await client.post("/v1/chat/completions", json={"model": "main/m", "messages": HI})
    assert answer.headers["x-localrouter-model"] == "backup/m"

    pooled = {"providers": [openai_compatible("main", main.url, api_keys=KEYS[:2])]}
    write_config(path, pooled)
    assert await reloader.reload()
    for _ in range(2):
        await client.post("/v1/chat/completions", json={"model": "main/m", "messages": HI})
    assert set(main.keys[-2:]) == set(KEYS[:2])

    write_config(path, {"providers": [openai_compatible("main", main.url, api_keys=[])]})
    assert not await reloader.reload()  # a broken edit changes nothing
    answer = await client.post("/v1/chat/completions", json={"model": "main/m", "messages": HI})
    assert answer.status == 200


async def test_native_messages_fall_back_to_a_translated_instance(
    scripted: StartScripted, daemon: DaemonFactory
):
    backup = await scripted(["m"])
    config = {
        "providers": [
            openai_compatible("claude", f"http://127.0.0.1:{unused_port()}/v1", messages="native"),
            openai_compatible("backup", backup.url),
        ],
        "models": {"fallbacks": {"claude/sonnet": ["backup/m"]}},
    }
    client = await daemon(config)
    async with messages_sdk(client) as claude:
        raw = await claude.messages.with_raw_response.create(
            model="claude/sonnet", max_tokens=20, messages=HI
        )
    assert raw.headers["x-localrouter-model"] == "backup/m"
    message = await raw.parse()
    assert isinstance(message, anthropic.types.Message)
    assert message.content[0].text == "this is m"  # type: ignore[union-attr]


def test_a_pool_from_variables_leaves_out_the_unset_ones_and_shows_no_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    text = (
        "providers:\n"
        "  - {name: a, type: openai, api_keys: ['${KEY_A}', '${KEY_B}', '${KEY_C}']}\n"
        "  - {name: b, type: openai, api_keys: ['${KEY_D}']}\n"
    )
    settings = parse_settings(text, "test.yaml", {"KEY_A": KEYS[0], "KEY_C": KEYS[2]})
    first, second = settings.providers
    assert first.keys == (KEYS[0], KEYS[2])
    assert not second.enabled  # every key of a required-key provider unset: off, as api_key
    assert any("runs with 2 of its 3 keys: KEY_B not set" in note for note in settings.notes)
    assert set(KEYS[::2]) <= set(settings.secret_values)

    path = tmp_path / "config.yaml"
    path.write_text(text)
    monkeypatch.setenv("KEY_A", KEYS[0])
    monkeypatch.setenv("KEY_B", KEYS[1])
    monkeypatch.setenv("KEY_C", KEYS[2])
    monkeypatch.setenv("KEY_D", KEYS[1])
    assert main(["check", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "3 keys (a pool)" in out
    for key in KEYS:
        assert key not in out

    path.write_text(
        f"providers:\n  - {{name: a, type: openai, api_keys: ['${{KEY_A}}', {KEYS[1]}]}}\n"
    )
    path.chmod(0o644)
    assert literal_secrets_exposed(path) == ["providers[0].api_keys[1]"]


@pytest.mark.parametrize(
    ("provider", "expected"),
    [
        ({"api_key": KEYS[0], "api_keys": [KEYS[1]]}, "has both api_key and api_keys"),
        ({"api_keys": []}, "api_keys is empty"),
    ],
)
def test_a_bad_pool_is_refused_without_showing_a_key(provider: dict[str, Any], expected: str):
    config = {"providers": [{"name": "a", "type": "openai", **provider}]}
    with pytest.raises(ConfigError) as raised:
        settings_from(config)
    assert expected in str(raised.value)
    for key in KEYS:
        assert key not in str(raised.value)
