"""Issue 34's capture for POST /v1/messages over real sockets with the official anthropic
client: native (an `anthropic` instance, Anthropic's own counts) and translated (an
openai_compatible instance, OpenAI's counts), whole and streamed; cached tokens counted once
whichever side reports them; a fallback's answer; a client that leaves. Upstreams:
tests/usage_wires.py."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anthropic
import pytest
from aiohttp.test_utils import TestServer

from tests.conftest import DaemonFactory, eventually
from tests.usage_wires import (
    ANTHROPIC,
    CHAT,
    HELLO,
    REQUEST_ID,
    TEXT,
    Expected,
    Wires,
    anthropic_sdk,
    check,
    ledger_config,
    recorded,
    start_wires,
)


@pytest.fixture
async def wires(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Wires:
    return await start_wires(aiohttp_server)


async def ask(
    api: anthropic.AsyncAnthropic, model: str, stream: bool
) -> tuple[str, str, str, dict[str, Any]]:
    """One Messages call: the request id, the text, the `model` the answer names, and the
    usage the client was shown (a stream's: message_start's, updated by message_delta's)."""
    raw = await api.messages.with_raw_response.create(
        model=model, max_tokens=256, messages=HELLO, stream=stream
    )
    request_id = raw.headers[REQUEST_ID]
    if not stream:
        answer = await raw.parse()
        text = "".join(block.text for block in answer.content if block.type == "text")
        return request_id, text, answer.model, answer.usage.model_dump(exclude_none=True)
    said, named, shown = [], "", {}
    async for event in await raw.parse():
        if event.type == "message_start":
            named = event.message.model
            shown = event.message.usage.model_dump(exclude_none=True)
        elif event.type == "content_block_delta" and event.delta.type == "text_delta":
            said.append(event.delta.text)
        elif event.type == "message_delta":
            shown.update(event.usage.model_dump(exclude_none=True))
    return request_id, "".join(said), named, shown


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize(
    ("model", "provider", "expected"),
    [
        ("claude/claude-sonnet-4-5", "anthropic", ANTHROPIC),  # native: Anthropic's counts
        ("lab/qwen3-coder", "openai_compatible", CHAT),  # translated: OpenAI's counts
    ],
    ids=["native", "translated"],
)
async def test_a_message_records_the_upstreams_counts_at_the_models_price(
    wires: Wires,
    daemon: DaemonFactory,
    tmp_path: Path,
    model: str,
    provider: str,
    expected: Expected,
    stream: bool,
):
    """/v1/messages, native and translated, whole and streamed: the record holds the
    upstream's counts in the ledger's convention (reported), the instance/model that
    answered, its type, the route, one attempt, and the cost at the configured prices."""
    client = await daemon(ledger_config(tmp_path, wires.instances()))
    async with anthropic_sdk(client) as api:
        request_id, said, named, _ = await ask(api, model, stream)
    assert said == TEXT
    assert named == (model if provider == "openai_compatible" else model.partition("/")[2])
    check(
        await recorded(client, request_id),
        expected,
        model=model,
        requested_model=model,
        instance=model.partition("/")[0],
        provider_name=provider,
        origin="/v1/messages",
        streamed=stream,
    )


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_cached_tokens_are_counted_once_whichever_side_reports_them(
    wires: Wires, daemon: DaemonFactory, tmp_path: Path, stream: bool
):
    """Translated to an OpenAI-shaped upstream whose usage says prompt_tokens 1500 with 1000
    cached: the record's input is 1500 (inclusive) with 1000 cache reads, and the Messages
    client is shown Anthropic's convention (500 input apart from 1000 cache reads). Native,
    Anthropic's input_tokens 500 with 1000 cache reads and 200 cache writes: the record's
    input is 1700, the client shown the upstream's counts as they are."""
    client = await daemon(ledger_config(tmp_path, wires.instances()))
    async with anthropic_sdk(client) as api:
        translated, _, _, shown = await ask(api, "lab/qwen3-coder", stream)
        native, _, _, shown_native = await ask(api, "claude/claude-sonnet-4-5", stream)
    assert wires.openai.bodies[-1].get("stream_options") == (
        {"include_usage": True} if stream else None
    )
    assert {key: shown.get(key) for key in ("input_tokens", "cache_read_input_tokens")} == {
        "input_tokens": 500,
        "cache_read_input_tokens": 1000,
    }
    assert shown["output_tokens"] == 200
    record = await recorded(client, translated)
    assert (record["tokens_prompt"], record["native_tokens_cached"]) == (1500, 1000)
    assert record["cache_write_tokens"] == 0
    assert {
        key: shown_native.get(key)
        for key in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
    } == {"input_tokens": 500, "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 200}
    record = await recorded(client, native)
    assert (record["tokens_prompt"], record["native_tokens_cached"]) == (1700, 1000)
    assert record["cache_write_tokens"] == 200


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_translated_answer_from_a_fallback_names_the_fallback(
    wires: Wires, daemon: DaemonFactory, tmp_path: Path, stream: bool
):
    """Issue 33, item 14: `lab/overloaded` answers 503 and its fallback `lab/qwen3-coder`
    answers a translated Messages call: the answer's `model` (whole, or message_start's)
    names the fallback, and the record names it too, after two attempts."""
    fallbacks = {"lab/overloaded": ["lab/qwen3-coder"]}
    client = await daemon(
        ledger_config(tmp_path, wires.instances(), models={"fallbacks": fallbacks})
    )
    async with anthropic_sdk(client) as api:
        request_id, said, named, _ = await ask(api, "lab/overloaded", stream)
    assert said == TEXT
    assert named == "lab/qwen3-coder"
    assert [body["model"] for body in wires.openai.bodies] == ["overloaded", "qwen3-coder"]
    check(
        await recorded(client, request_id),
        CHAT,
        requested_model="lab/overloaded",
        model="lab/qwen3-coder",
        instance="lab",
        attempts=2,
        streamed=stream,
    )


async def test_a_translated_stream_the_client_leaves_is_recorded_cancelled_and_estimated(
    wires: Wires, daemon: DaemonFactory, tmp_path: Path
):
    """The client closes a translated Messages stream after its first words; the upstream
    never sent usage. The record says cancelled, its usage `estimated` (nonzero input and
    output)."""
    client = await daemon(ledger_config(tmp_path, wires.instances()))
    async with anthropic_sdk(client) as api:
        raw = await api.messages.with_raw_response.create(
            model="lab/stalls", max_tokens=64, messages=HELLO, stream=True
        )
        stream = await raw.parse()
        async for event in stream:
            if event.type == "content_block_delta":
                break
        await stream.close()

    async def upstream_left() -> bool:
        return wires.openai.left.is_set()

    await eventually(upstream_left, "the upstream call's end")
    data = await recorded(client, raw.headers[REQUEST_ID])
    assert (data["cancelled"], data["usage_source"], data["streamed"]) == (True, "estimated", True)
    assert data["tokens_prompt"] > 0
    assert data["tokens_completion"] > 0
    assert data["model"] == "lab/stalls"
