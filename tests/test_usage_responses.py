"""Issue 34's capture for POST /v1/responses over real sockets with the official openai
client (`responses`): native (an `openai` instance, the Responses API's own counts in
response.completed) and translated (an openai_compatible instance, Chat Completions' counts),
whole and streamed. Upstreams: tests/usage_wires.py."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from tests.conftest import DaemonFactory
from tests.usage_wires import (
    CHAT,
    REQUEST_ID,
    TEXT,
    Wires,
    check,
    ledger_config,
    openai_sdk,
    recorded,
    start_wires,
)


@pytest.fixture
async def wires(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Wires:
    return await start_wires(aiohttp_server)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize(
    ("model", "provider", "upstream_path"),
    [
        ("oa/gpt-4o-mini", "openai", "responses"),  # native: input_tokens_details.cached_tokens
        ("lab/qwen3-coder", "openai_compatible", "chat"),  # translated: prompt_tokens_details
    ],
    ids=["native", "translated"],
)
async def test_a_response_records_the_upstreams_counts_at_the_models_price(
    wires: Wires,
    daemon: DaemonFactory,
    tmp_path: Path,
    model: str,
    provider: str,
    upstream_path: str,
    stream: bool,
):
    """/v1/responses, native and translated, whole and streamed: the record holds the
    upstream's counts (1500 input with 1000 cached, 200 output with 64 reasoning), reported,
    the instance/model that answered, its type, the route, one attempt, and the cost at the
    configured prices; the client sees the same counts in the Responses shape."""
    client = await daemon(ledger_config(tmp_path, wires.instances()))
    async with openai_sdk(client) as api:
        raw = await api.responses.with_raw_response.create(model=model, input="Hi", stream=stream)
        if stream:
            events = [event async for event in raw.parse()]
            said = "".join(e.delta for e in events if e.type == "response.output_text.delta")
            final = next(e.response for e in events if e.type == "response.completed")
        else:
            final = raw.parse()
            said = final.output_text
    assert said == TEXT
    assert final.usage is not None
    shown = final.usage
    assert (shown.input_tokens, shown.output_tokens) == (1500, 200)
    assert shown.input_tokens_details.cached_tokens == 1000
    sent = wires.openai.bodies[-1]
    assert ("input" in sent) == (upstream_path == "responses")
    check(
        await recorded(client, raw.headers[REQUEST_ID]),
        CHAT,
        model=model,
        requested_model=model,
        instance=model.partition("/")[0],
        provider_name=provider,
        origin="/v1/responses",
        streamed=stream,
    )
