"""Shaping the list and who sees it: aliases, hidden models and clients with allowlists, over
real sockets with the official clients."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from localrouter.app import COMPONENTS
from localrouter.base.errors import ConfigError
from localrouter.cli import main
from localrouter.config.loading import parse_settings
from tests.conftest import DaemonFactory, openai_compatible, settings_from
from tests.test_reload import write_config

ADMIN = "admin-token-0c9e51"
EDITOR = "editor-token-7d41aa"
AGENT = "agent-token-52be90"


@dataclass
class ChatUpstream:
    """An OpenAI-compatible server: a model list, and chat answers naming the model asked."""

    models: list[str]
    asked: list[str] = field(default_factory=list)
    url: str = ""

    async def list_models(self, _: web.Request) -> web.Response:
        data = [{"id": model, "object": "model", "owned_by": "x"} for model in self.models]
        return web.json_response({"object": "list", "data": data})

    async def chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.asked.append(body["model"])
        return named_answer(body["model"])


def named_answer(model: str) -> web.Response:
    """A whole chat completion that says which upstream model answered."""
    message = {"role": "assistant", "content": f"this is {model}"}
    return web.json_response(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1700000000,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
        }
    )


@pytest.fixture
def chat_upstream(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> Callable[..., Awaitable[ChatUpstream]]:
    async def start(models: list[str]) -> ChatUpstream:
        fake = ChatUpstream(models)
        app = web.Application()
        app.router.add_get("/v1/models", fake.list_models)
        app.router.add_post("/v1/chat/completions", fake.chat)
        server = await aiohttp_server(app)
        fake.url = str(server.make_url("/v1"))
        return fake

    return start


StartUpstream = Callable[..., Awaitable[ChatUpstream]]


async def listed(client: Any, token: str | None = None, **headers: str) -> list[str]:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    response = await client.get("/v1/models", headers=headers)
    assert response.status == 200, await response.text()
    return [model["id"] for model in (await response.json())["data"]]


def sdk(client: Any, token: str = "unused") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key=token, max_retries=0)


def messages_sdk(client: Any, token: str = "unused") -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=str(client.make_url("")), api_key=token, max_retries=0)


async def test_aliases_are_listed_with_their_target_and_routed(
    chat_upstream: StartUpstream, daemon: DaemonFactory
):
    lab = await chat_upstream(["qwen3-coder-30b", "llama-3.3-70b"])
    config = {
        "providers": [openai_compatible("lab", lab.url)],
        "models": {
            "aliases": {
                "coder": "lab/qwen3-coder-30b",
                "claude-local-coder": "coder",  # an alias of an alias
                "fast": "llama-3.3-70b",  # a bare upstream id, resolved as requests are
            }
        },
    }
    client = await daemon(config)
    body = await (await client.get("/v1/models")).json()
    by_id = {model["id"]: model for model in body["data"]}
    assert [model["id"] for model in body["data"]] == sorted(by_id)
    assert by_id["coder"]["alias_of"] == "lab/qwen3-coder-30b"
    assert by_id["claude-local-coder"]["alias_of"] == "lab/qwen3-coder-30b"
    assert by_id["fast"]["alias_of"] == "lab/llama-3.3-70b"
    assert by_id["coder"]["upstream_id"] == "qwen3-coder-30b"  # the target's metadata
    assert "alias_of" not in by_id["lab/qwen3-coder-30b"]

    async with sdk(client) as api:
        answer = await api.chat.completions.create(
            model="claude-local-coder", messages=[{"role": "user", "content": "hi"}]
        )
    assert answer.choices[0].message.content == "this is qwen3-coder-30b"
    async with messages_sdk(client) as claude:
        message = await claude.messages.create(
            model="fast", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
        )
    assert message.content[0].text == "this is llama-3.3-70b"  # type: ignore[union-attr]
    assert lab.asked == ["qwen3-coder-30b", "llama-3.3-70b"]

    one = await (await client.get("/v1/models/coder")).json()
    assert (one["id"], one["alias_of"]) == ("coder", "lab/qwen3-coder-30b")
    anthropic_page = await (
        await client.get("/v1/models", headers={"anthropic-version": "2023-06-01"})
    ).json()
    assert "claude-local-coder" in [model["id"] for model in anthropic_page["data"]]


async def test_an_alias_whose_target_is_gone_is_not_listed_and_a_call_names_the_target(
    chat_upstream: StartUpstream, daemon: DaemonFactory
):
    lab = await chat_upstream(["a"])
    config = {
        "providers": [openai_compatible("lab", lab.url)],
        "models": {"aliases": {"old": "lab/retired-model", "gone": "nowhere/x"}},
    }
    client = await daemon(config)
    assert await listed(client) == ["lab/a"]
    async with sdk(client) as api:
        with pytest.raises(openai.NotFoundError) as raised:
            await api.chat.completions.create(
                model="gone", messages=[{"role": "user", "content": "hi"}]
            )
    assert "'nowhere/x'" in str(raised.value)
    assert "models.aliases" in str(raised.value)


async def test_hidden_models_are_unlisted_but_callable(
    chat_upstream: StartUpstream, daemon: DaemonFactory
):
    lab = await chat_upstream(["chat-1", "tts-1", "whisper-large", "free:chat"])
    config = {
        "providers": [openai_compatible("lab", lab.url)],
        "models": {"hide": ["*/tts-*", "*/whisper-*", "lab/*:chat"]},
    }
    client = await daemon(config)
    assert await listed(client) == ["lab/chat-1"]
    anthropic_page = await (
        await client.get("/v1/models", headers={"anthropic-version": "2023-06-01"})
    ).json()
    assert [model["id"] for model in anthropic_page["data"]] == ["lab/chat-1"]
    async with sdk(client) as api:
        answer = await api.chat.completions.create(
            model="lab/tts-1", messages=[{"role": "user", "content": "hi"}]
        )
    assert answer.choices[0].message.content == "this is tts-1"
    retrieved = await client.get("/v1/models/lab/whisper-large")  # unlisted, not unknown
    assert retrieved.status == 200


def clients_config(url: str) -> dict[str, Any]:
    return {
        "server": {"auth_token": ADMIN},
        "providers": [openai_compatible("lab", url), openai_compatible("groq", url)],
        "models": {"aliases": {"fast": "groq/llama"}},
        "clients": [
            {"name": "editor", "token": EDITOR, "allow": ["groq/*", "fast"]},
            {"name": "agent", "token": AGENT},  # no allow: everything
        ],
    }


async def test_each_client_sees_its_allowlist_with_its_own_etag(
    chat_upstream: StartUpstream, daemon: DaemonFactory
):
    up = await chat_upstream(["llama", "qwen"])
    client = await daemon(clients_config(up.url))
    everything = ["fast", "groq/llama", "groq/qwen", "lab/llama", "lab/qwen"]
    assert await listed(client, ADMIN) == everything
    assert await listed(client, AGENT) == everything
    assert await listed(client, EDITOR) == ["fast", "groq/llama", "groq/qwen"]
    assert await listed(client, **{"x-api-key": EDITOR}) == ["fast", "groq/llama", "groq/qwen"]

    editor = await client.get("/v1/models", headers={"Authorization": f"Bearer {EDITOR}"})
    admin = await client.get("/v1/models", headers={"Authorization": f"Bearer {ADMIN}"})
    assert editor.headers["ETag"] != admin.headers["ETag"]
    again = await client.get(
        "/v1/models",
        headers={"Authorization": f"Bearer {EDITOR}", "If-None-Match": editor.headers["ETag"]},
    )
    assert again.status == 304
    crossed = await client.get(
        "/v1/models",
        headers={"Authorization": f"Bearer {ADMIN}", "If-None-Match": editor.headers["ETag"]},
    )
    assert crossed.status == 200  # another client's variant is another resource
    anthropic_page = await (
        await client.get(
            "/v1/models", headers={"x-api-key": EDITOR, "anthropic-version": "2023-06-01"}
        )
    ).json()
    assert [model["id"] for model in anthropic_page["data"]] == ["fast", "groq/llama", "groq/qwen"]
    assert (await client.get("/v1/models/lab/qwen", headers={"x-api-key": EDITOR})).status == 404


async def test_a_call_outside_the_allowlist_is_refused_in_each_protocol(
    chat_upstream: StartUpstream, daemon: DaemonFactory
):
    up = await chat_upstream(["llama", "qwen"])
    client = await daemon(clients_config(up.url))
    async with sdk(client, EDITOR) as editor:
        answer = await editor.chat.completions.create(
            model="fast", messages=[{"role": "user", "content": "hi"}]
        )
        assert answer.choices[0].message.content == "this is llama"
        with pytest.raises(openai.PermissionDeniedError) as raised:
            await editor.chat.completions.create(
                model="lab/qwen", messages=[{"role": "user", "content": "hi"}]
            )
        assert "editor" in str(raised.value)
        assert "clients[].allow" in str(raised.value)
        with pytest.raises(openai.PermissionDeniedError):
            await editor.chat.completions.create(  # a bare id resolving outside it
                model="qwen", messages=[{"role": "user", "content": "hi"}]
            )
        with pytest.raises(openai.PermissionDeniedError):
            await editor.responses.create(model="lab/llama", input="hi")
    async with messages_sdk(client, EDITOR) as claude:
        with pytest.raises(anthropic.PermissionDeniedError):
            await claude.messages.create(
                model="lab/llama", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
            )
    assert up.asked == ["llama"]  # nothing refused reached the upstream

    async with sdk(client, "not-a-token") as stranger:
        with pytest.raises(openai.AuthenticationError):
            await stranger.models.list()
    assert (await client.get("/v1/models")).status == 401  # no token at all


async def test_the_management_api_needs_the_admin_token_once_clients_exist(
    chat_upstream: StartUpstream, daemon: DaemonFactory
):
    up = await chat_upstream(["llama"])
    client = await daemon(clients_config(up.url))
    for path in ("/api/providers", "/api/cache/stats", "/metrics"):
        refused = await client.get(path, headers={"Authorization": f"Bearer {AGENT}"})
        assert refused.status == 403, path
        assert "admin" in (await refused.json())["error"]["message"]
        assert (await client.get(path, headers={"Authorization": f"Bearer {ADMIN}"})).status == 200
    cleared = await client.post("/api/cache/clear", headers={"Authorization": f"Bearer {EDITOR}"})
    assert cleared.status == 403
    assert (await client.get("/health")).status == 200  # open, as before


async def test_client_requests_are_counted_by_name_and_tokens_are_never_shown(
    chat_upstream: StartUpstream, daemon: DaemonFactory
):
    up = await chat_upstream(["llama"])
    client = await daemon(clients_config(up.url))
    for _ in range(3):
        await listed(client, EDITOR)
    await listed(client, AGENT)
    metrics = await (
        await client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"})
    ).text()
    assert 'localrouter_client_requests_total{client="editor"} 3.0' in metrics
    assert 'localrouter_client_requests_total{client="agent"} 1.0' in metrics
    shown = metrics
    for path in ("/health", "/api/providers", "/api/cache/stats"):
        answer = await client.get(path, headers={"Authorization": f"Bearer {ADMIN}"})
        shown += await answer.text()
    assert EDITOR not in shown
    assert AGENT not in shown
    assert ADMIN not in shown


@pytest.mark.parametrize(
    ("shaping", "expected"),
    [
        (
            {"models": {"aliases": {"a": "b", "b": "a"}}},
            "models.aliases.a: the aliases loop: a -> b -> a",
        ),
        (
            {"models": {"aliases": {"a": "b", "b": "c", "c": "d", "d": "e", "e": "f"}}},
            "models.aliases.a: more than 4 aliases deep",
        ),
        (
            {"models": {"aliases": {"lab/fast": "lab/x"}}},
            "models.aliases.lab/fast: would hide instance 'lab'",
        ),
        ({"models": {"hide": [""]}}, "models.hide: an empty pattern"),
        ({"models": {"fallbacks": {"a": []}}}, "models.fallbacks: a: a list of ids"),
        ({"models": {"fallbacks": {"a": ["a"]}}}, "models.fallbacks: a: lists itself"),
        ({"models": {"fallbacks": {"a": ["b", "b"]}}}, "models.fallbacks: a: names the same"),
        (
            {"clients": [{"name": "x", "token": EDITOR}, {"name": "x", "token": AGENT}]},
            "clients[1].name: duplicate client name 'x'",
        ),
        (
            {"clients": [{"name": "x", "token": EDITOR}, {"name": "y", "token": EDITOR}]},
            "clients[1].token: the same token as clients[0]",
        ),
        ({"clients": [{"name": "x", "token": "short"}]}, "clients[0].token: a token of at least"),
        ({"clients": [{"name": "x", "token": EDITOR, "alow": []}]}, "clients[0].alow: unknown key"),
    ],
)
def test_check_names_the_key_path_of_a_bad_shaping_config(shaping: dict[str, Any], expected: str):
    config = {"providers": [openai_compatible("lab", "http://127.0.0.1:9/v1")], **shaping}
    with pytest.raises(ConfigError) as raised:
        settings_from(config)
    assert expected in str(raised.value)
    assert EDITOR not in str(raised.value)
    assert "short" not in str(raised.value)


def test_client_tokens_from_variables_are_secrets():
    text = "clients:\n  - {name: editor, token: '${LR_EDITOR_TOKEN}', allow: ['groq/*']}\n"
    settings = parse_settings(text, "test.yaml", {"LR_EDITOR_TOKEN": EDITOR})
    assert EDITOR in settings.secret_values
    assert EDITOR not in repr(settings)


def test_an_explicit_null_allow_admits_everything():
    settings = settings_from({"clients": [{"name": "agent", "token": AGENT, "allow": None}]})
    assert settings.clients[0].allow is None


async def test_aliases_hide_and_clients_reload_live(
    tmp_path: Path, chat_upstream: StartUpstream, daemon: DaemonFactory
):
    up = await chat_upstream(["llama", "qwen"])
    path = tmp_path / "config.yaml"
    config: dict[str, Any] = {"providers": [openai_compatible("lab", up.url)]}
    write_config(path, config)
    client = await daemon(config, config_path=path)
    reloader = client.app[COMPONENTS].reloader
    assert await listed(client) == ["lab/llama", "lab/qwen"]

    write_config(path, {**config, "models": {"aliases": {"fast": "lab/llama"}}})
    assert await reloader.reload()
    assert await listed(client) == ["fast", "lab/llama", "lab/qwen"]

    write_config(path, {**config, "models": {"hide": ["lab/qwen"]}})
    assert await reloader.reload()
    assert await listed(client) == ["lab/llama"]

    with_clients = {**config, "clients": [{"name": "editor", "token": EDITOR, "allow": ["*/q*"]}]}
    write_config(path, with_clients)
    assert await reloader.reload()
    assert (await client.get("/v1/models")).status == 401
    assert await listed(client, EDITOR) == ["lab/qwen"]

    write_config(path, {**with_clients, "clients": [{"name": "x", "token": "short"}]})
    assert not await reloader.reload()  # a broken edit changes nothing
    assert await listed(client, EDITOR) == ["lab/qwen"]

    # A rotated token: the old one, known a moment ago, is refused at once.
    rotated = {**config, "clients": [{"name": "editor", "token": AGENT, "allow": ["*/l*"]}]}
    write_config(path, rotated)
    assert await reloader.reload()
    old = await client.get("/v1/models", headers={"Authorization": f"Bearer {EDITOR}"})
    assert old.status == 401
    assert await listed(client, AGENT) == ["lab/llama"]


async def test_the_detailed_and_unique_views_are_shaped_too(
    chat_upstream: StartUpstream, daemon: DaemonFactory
):
    up = await chat_upstream(["llama", "qwen", "tts-1"])
    config = clients_config(up.url)
    config["models"]["hide"] = ["*/tts-*"]
    client = await daemon(config)

    async def detailed(token: str) -> list[str]:
        answer = await client.get("/api/models", headers={"Authorization": f"Bearer {token}"})
        return [model["id"] for model in (await answer.json())["models"]]

    async def offers(token: str) -> list[str]:
        answer = await client.get(
            "/api/models/unique", headers={"Authorization": f"Bearer {token}"}
        )
        rows = (await answer.json())["models"]
        return sorted(offer["id"] for row in rows for offer in row["providers"])

    assert await detailed(ADMIN) == ["fast", "groq/llama", "groq/qwen", "lab/llama", "lab/qwen"]
    assert await detailed(EDITOR) == ["fast", "groq/llama", "groq/qwen"]
    assert await offers(ADMIN) == ["groq/llama", "groq/qwen", "lab/llama", "lab/qwen"]
    assert await offers(EDITOR) == ["groq/llama", "groq/qwen"]


def test_check_summarises_the_shaping_without_tokens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("LR_EDITOR_TOKEN", EDITOR)
    path = tmp_path / "config.yaml"
    path.write_text(
        "models:\n  aliases: {fast: groq/llama}\n  hide: ['*/tts-*']\n"
        "  fallbacks: {groq/llama: [lab/llama, fast]}\n"
        "clients:\n  - {name: editor, token: '${LR_EDITOR_TOKEN}', allow: ['groq/*']}\n"
    )
    assert main(["check", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "aliases: fast -> groq/llama" in out
    assert "hidden: */tts-*" in out
    assert "fallbacks: groq/llama -> lab/llama, fast" in out
    assert "client editor: token set, allows groq/*" in out
    assert EDITOR not in out
