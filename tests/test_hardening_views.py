"""Hardening, round 2: what the detailed list tells a client, and who may make it fetch
(issue 33: the `providers` block per client, `refresh=true`, one rule for absent local
servers)."""

from __future__ import annotations

from typing import Any

from tests.conftest import DaemonFactory, UpstreamFactory, openai_compatible
from tests.test_control import ADMIN, AGENT, EDITOR, StartUpstream, chat_upstream, clients_config

__all__ = ["chat_upstream"]  # the upstream fixture, shared with test_control.py


async def detailed(client: Any, token: str, query: str = "") -> tuple[int, Any]:
    response = await client.get(f"/api/models{query}", headers={"Authorization": f"Bearer {token}"})
    return response.status, await response.json()


async def test_a_client_sees_only_the_instances_it_can_use_in_the_providers_block(
    chat_upstream: StartUpstream, daemon: DaemonFactory
) -> None:
    """The editor (allowed groq/* and an alias to it) sees groq's status and models only;
    the admin and an unrestricted client see every instance."""
    up = await chat_upstream(["llama", "qwen"])
    client = await daemon(clients_config(up.url))
    status, editor = await detailed(client, EDITOR)
    assert status == 200
    assert list(editor["providers"]) == ["groq"]
    assert {model["owned_by"] for model in editor["models"]} == {"groq"}
    for token in (ADMIN, AGENT):
        _, everything = await detailed(client, token)
        assert list(everything["providers"]) == ["lab", "groq"]


async def test_only_the_admin_may_make_every_list_be_fetched_again(
    chat_upstream: StartUpstream, daemon: DaemonFactory
) -> None:
    """refresh=true from a client is a 403 naming the admin token, and fetches nothing; the
    admin's still refreshes."""
    up = await chat_upstream(["llama"])
    client = await daemon(clients_config(up.url))
    await detailed(client, ADMIN)
    for token in (EDITOR, AGENT):
        status, refused = await detailed(client, token, "?refresh=true")
        assert status == 403
        assert "server.auth_token" in refused["error"]["message"]
    status, refreshed = await detailed(client, ADMIN, "?refresh=true")
    assert status == 200
    assert refreshed["cached"] is False


async def test_every_view_follows_one_rule_for_what_an_unknown_model_can_do(
    upstream: UpstreamFactory, daemon: DaemonFactory
) -> None:
    """A chat model the catalog does not know calls tools in Ollama's /api/show and in
    LiteLLM's model info and groups alike, and LiteLLM is told to reach it as an OpenAI
    model through localrouter (`openai/<id>`), a prefix LiteLLM knows."""
    fake = await upstream()
    fake.serve_models(["house-model-7b"])
    client = await daemon({"providers": [openai_compatible("lab", fake.url)]})
    shown = await (await client.post("/api/show", json={"model": "lab/house-model-7b"})).json()
    assert "tools" in shown["capabilities"]
    info = (await (await client.get("/v1/model/info")).json())["data"][0]
    assert info["model_info"]["supports_function_calling"] is True
    assert info["litellm_params"]["model"] == "openai/lab/house-model-7b"
    group = (await (await client.get("/model_group/info")).json())["data"][0]
    assert group["supports_function_calling"] is True


async def test_an_alias_shows_in_anthropics_list_under_its_own_name(
    upstream: UpstreamFactory, daemon: DaemonFactory
) -> None:
    """Claude Code's /model picker shows `display_name`: two aliases of one model must not
    both show the target's name."""
    fake = await upstream()
    fake.serve_models(["qwen3-coder"])
    aliases = {"claude-local-coder": "lab/qwen3-coder", "claude-fast": "lab/qwen3-coder"}
    config = {"providers": [openai_compatible("lab", fake.url)], "models": {"aliases": aliases}}
    client = await daemon(config)
    page = await (
        await client.get("/v1/models", headers={"anthropic-version": "2023-06-01"})
    ).json()
    names = {entry["id"]: entry["display_name"] for entry in page["data"]}
    assert names["claude-local-coder"] == "claude-local-coder"
    assert names["claude-fast"] == "claude-fast"
