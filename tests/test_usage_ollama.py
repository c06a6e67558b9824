"""Issue 34's capture for Ollama's call routes (/api/chat, /api/generate, /api/embed) over
real sockets with the official ollama client: native (an `ollama` instance: the counts of its
last `done: true` line, or of its whole answer) and translated (an openai_compatible instance:
Chat Completions' counts, /v1/embeddings' for embed), whole and streamed. Upstreams:
tests/usage_wires.py."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import ollama
import pytest
from aiohttp.test_utils import TestServer

from tests.conftest import DaemonFactory
from tests.usage_wires import (
    CHAT,
    EMBEDDING,
    HELLO,
    OLLAMA,
    OLLAMA_EMBED,
    TEXT,
    Expected,
    Wires,
    check,
    ledger_config,
    ollama_sdk,
    recorded,
    start_wires,
)

NATIVE = ("home/qwen3:8b", "ollama", OLLAMA)
TRANSLATED = ("lab/qwen3-coder", "openai_compatible", CHAT)


@pytest.fixture
async def wires(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Wires:
    return await start_wires(aiohttp_server)


async def said(api: ollama.AsyncClient, route: str, model: str, stream: bool) -> str:
    """What /api/chat or /api/generate answered, whole or streamed, as the client reads it."""
    if route == "chat":
        if not stream:
            return (await api.chat(model, messages=HELLO, stream=False)).message.content or ""
        parts = await api.chat(model, messages=HELLO, stream=True)
        return "".join([part.message.content or "" async for part in parts])
    if not stream:
        return (await api.generate(model, prompt="Say hello.", stream=False)).response
    pieces = await api.generate(model, prompt="Say hello.", stream=True)
    return "".join([piece.response async for piece in pieces])


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("route", ["chat", "generate"])
@pytest.mark.parametrize(
    ("model", "provider", "expected"), [NATIVE, TRANSLATED], ids=["native", "translated"]
)
async def test_a_chat_or_generate_records_the_upstreams_counts_at_the_models_price(
    wires: Wires,
    daemon: DaemonFactory,
    tmp_path: Path,
    model: str,
    provider: str,
    expected: Expected,
    route: str,
    stream: bool,
):
    """/api/chat and /api/generate, native and translated, whole and streamed: the record
    holds the upstream's counts (Ollama's prompt_eval_count and eval_count, or the Chat
    Completions usage a translated stream asked for), reported, the instance/model that
    answered, its type, the route, one attempt, and the cost at the configured prices."""
    client = await daemon(ledger_config(tmp_path, wires.instances()))
    ids: list[str] = []
    async with ollama_sdk(client, ids) as api:
        assert await said(api, route, model, stream) == TEXT
    check(
        await recorded(client, ids[-1]),
        expected,
        model=model,
        instance=model.partition("/")[0],
        provider_name=provider,
        origin=f"/api/{route}",
        streamed=stream,
    )


@pytest.mark.parametrize(
    ("model", "provider", "expected"),
    [
        ("home/all-minilm", "ollama", OLLAMA_EMBED),  # its prompt_eval_count
        ("lab/text-embedding-3-small", "openai_compatible", EMBEDDING),  # /v1/embeddings' usage
    ],
    ids=["native", "translated"],
)
async def test_an_embed_records_the_upstreams_counts_at_the_models_price(
    wires: Wires,
    daemon: DaemonFactory,
    tmp_path: Path,
    model: str,
    provider: str,
    expected: Expected,
):
    """/api/embed, native and translated: the record holds the input the upstream counted,
    no output, at the configured input price."""
    client = await daemon(ledger_config(tmp_path, wires.instances()))
    ids: list[str] = []
    async with ollama_sdk(client, ids) as api:
        embedded = await api.embed(model, input="hello")
    assert len(embedded.embeddings) == 1
    check(
        await recorded(client, ids[-1]),
        expected,
        model=model,
        instance=model.partition("/")[0],
        provider_name=provider,
        origin="/api/embed",
        streamed=False,
    )


async def test_a_translated_ollama_answer_from_a_fallback_names_the_fallback(
    wires: Wires, daemon: DaemonFactory, tmp_path: Path
) -> None:
    """`lab/overloaded` answers 503 and its fallback `lab/qwen3-coder` answers: the Ollama
    answer names the fallback (in Ollama's form), and the record names it too."""
    fallbacks = {"lab/overloaded": ["lab/qwen3-coder"]}
    client = await daemon(
        ledger_config(tmp_path, wires.instances(), models={"fallbacks": fallbacks})
    )
    ids: list[str] = []
    async with ollama_sdk(client, ids) as api:
        answer = await api.chat("lab/overloaded", messages=HELLO, stream=False)
    assert answer.message.content == TEXT
    assert answer.model == "lab/qwen3-coder:latest"
    record = await recorded(client, ids[-1])
    assert (record["model"], record["attempts"]) == ("lab/qwen3-coder", 2)
