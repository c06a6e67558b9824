"""Issue 36: dollar budgets over real sockets, with each protocol's official client (openai,
anthropic, ollama): reached by a mix of whole and streamed calls and refused in the client's
own shape; kept across a restart (rebuilt from the usage ledger); per model glob
(model_limits); a fallback skipped for a limit; unpriced models; the status a user picks;
and what /api/v1/key, /api/limits, `localrouter limits` and `check` say."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anthropic
import ollama
import openai
import pytest
from aiohttp.test_utils import TestClient, TestServer

from localrouter.app import COMPONENTS
from localrouter.base.errors import ConfigError
from localrouter.cli import main
from localrouter.config.describe import describe
from localrouter.config.loading import LoadedConfig
from tests.conftest import DaemonFactory, FakeClock, served_on_a_port, settings_from
from tests.usage_wires import (
    ANTHROPIC,
    CHAT,
    HELLO,
    OLLAMA,
    TEXT,
    Wires,
    anthropic_sdk,
    ledger_config,
    ollama_sdk,
    openai_sdk,
    start_wires,
)

AGENT = "agent-budget-token-31c7"
ADMIN = "admin-budget-token-8d2e"

Client = TestClient[Any, Any]


@pytest.fixture
async def wires(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Wires:
    return await start_wires(aiohttp_server)


def budgeted(
    tmp_path: Path, wires: Wires, limits: dict[str, Any] | None = None, **client: Any
) -> dict[str, Any]:
    """The usage wires' instances (priced), with the admin token and client `agent`."""
    agent = {"name": "agent", "token": AGENT, **({"limits": limits} if limits else {}), **client}
    return ledger_config(tmp_path, wires.instances(), server={"auth_token": ADMIN}, clients=[agent])


async def settle(client: Client) -> None:
    await client.app[COMPONENTS].recorder.flush()


async def ask_openai(client: Client, stream: bool, model: str = "oa/gpt-4o-mini") -> str:
    async with openai_sdk(client, AGENT) as api:
        if stream:
            parts = await api.chat.completions.create(
                model=model, messages=HELLO, max_tokens=16, stream=True
            )
            return "".join([part.choices[0].delta.content or "" async for part in parts])
        answer = await api.chat.completions.create(model=model, messages=HELLO, max_tokens=16)
        return answer.choices[0].message.content or ""


async def ask_anthropic(client: Client, stream: bool) -> str:
    model = "claude/claude-sonnet-4-5"
    async with anthropic_sdk(client, AGENT) as api:
        if stream:
            async with api.messages.stream(model=model, max_tokens=16, messages=HELLO) as said:
                return "".join([text async for text in said.text_stream])
        message = await api.messages.create(model=model, max_tokens=16, messages=HELLO)
    block = message.content[0]
    assert block.type == "text"
    return block.text


async def ask_ollama(client: Client, stream: bool) -> str:
    options = {"num_predict": 16}
    async with ollama_sdk(client, [], AGENT) as api:
        if stream:
            parts = await api.chat(
                model="home/qwen3:8b", messages=HELLO, stream=True, options=options
            )
            return "".join([part.message.content or "" async for part in parts])
        answer = await api.chat(model="home/qwen3:8b", messages=HELLO, options=options)
        return answer.message.content or ""


def openai_refusal(error: BaseException) -> None:
    assert isinstance(error, openai.RateLimitError)
    assert (error.type, error.code) == ("insufficient_quota", "budget_exceeded")
    assert "retry-after" not in error.response.headers


def anthropic_refusal(error: BaseException) -> None:
    assert isinstance(error, anthropic.RateLimitError)
    body: Any = error.body
    assert body["error"]["type"] == "rate_limit_error"
    assert body["error"]["details"]["error_code"] == "enforced_spend_limit_reached"
    assert "retry-after" not in error.response.headers


def ollama_refusal(error: BaseException) -> None:
    assert isinstance(error, ollama.ResponseError)
    assert error.status_code == 429
    assert error.error.startswith("Budget exceeded for client 'agent'")


Ask = Callable[[Client, bool], Awaitable[str]]
Refusal = Callable[[BaseException], None]


@pytest.mark.parametrize(
    ("ask", "cost", "refusal", "refused_as"),
    [
        (ask_openai, CHAT.cost, openai_refusal, openai.RateLimitError),
        (ask_anthropic, ANTHROPIC.cost, anthropic_refusal, anthropic.RateLimitError),
        (ask_ollama, OLLAMA.cost, ollama_refusal, ollama.ResponseError),
    ],
    ids=["openai", "anthropic", "ollama"],
)
async def test_a_budget_reached_by_whole_and_streamed_calls_refuses_in_the_clients_shape(
    daemon: DaemonFactory,
    tmp_path: Path,
    wires: Wires,
    ask: Ask,
    cost: float,
    refusal: Refusal,
    refused_as: type[Exception],
) -> None:
    """A budget of two calls' real cost, plus less than a third call's reservation (16
    output tokens at $15/M are $0.00024): a whole call and a streamed one are answered, the
    third is refused as the client's own library reports a spent budget."""
    budget = 2 * cost + 0.0002
    client = await daemon(budgeted(tmp_path, wires, {"usd_per_day": budget}))
    assert await ask(client, False) == TEXT
    await settle(client)
    assert await ask(client, True) == TEXT
    await settle(client)
    for stream in (False, True):
        with pytest.raises(refused_as) as refused:
            await ask(client, stream)
        refusal(refused.value)
    answer = await client.get("/api/limits", headers={"Authorization": f"Bearer {ADMIN}"})
    (row,) = (await answer.json())["data"]
    assert row["used"] == pytest.approx(2 * cost)
    assert row["reserved"] == 0


async def test_a_budget_survives_a_restart(
    daemon: DaemonFactory, tmp_path: Path, wires: Wires
) -> None:
    """Today's spend is rebuilt from the usage ledger when the daemon starts: a budget spent
    before a restart is still spent after it."""
    config = budgeted(tmp_path, wires, {"usd_per_day": CHAT.cost + 0.0002})
    first = await daemon(config)
    assert await ask_openai(first, False) == TEXT
    await settle(first)
    with pytest.raises(openai.RateLimitError):
        await ask_openai(first, False)
    await first.close()
    second = await daemon(config)
    with pytest.raises(openai.RateLimitError) as refused:
        await ask_openai(second, False)
    openai_refusal(refused.value)
    assert f"${CHAT.cost:.4f} is spent" in refused.value.message


async def test_model_limits_hold_a_glob_of_models_and_leave_the_others(
    daemon: DaemonFactory, tmp_path: Path, wires: Wires
) -> None:
    """model_limits "oa/*": one call spends its budget; the next oa call is refused with the
    glob named, while lab/ models (no limit of their own) answer."""
    config = budgeted(tmp_path, wires, model_limits={"oa/*": {"usd_per_day": CHAT.cost + 0.0002}})
    client = await daemon(config)
    assert await ask_openai(client, False) == TEXT
    await settle(client)
    with pytest.raises(openai.RateLimitError) as refused:
        await ask_openai(client, False)
    assert "client 'agent' on oa/*" in refused.value.message
    assert "clients[0].model_limits.oa/*.usd_per_day" in refused.value.message
    assert await ask_openai(client, True, "lab/qwen3-coder") == TEXT


async def test_a_fallback_past_its_limit_is_skipped_and_the_request_counts_once(
    daemon: DaemonFactory, tmp_path: Path, wires: Wires, clock: FakeClock
) -> None:
    """The model's glob is over its budget: its fallback answers (x-localrouter-model names
    it), and the client's requests_per_minute counts one request, not one per model tried."""
    clock.now = 1_800_000_000.0
    config = budgeted(
        tmp_path,
        wires,
        {"requests_per_minute": 10},
        model_limits={"oa/*": {"usd_per_day": CHAT.cost + 0.0002}},
    )
    config["models"] = {"fallbacks": {"oa/gpt-4o-mini": ["lab/qwen3-coder"]}}
    client = await daemon(config)
    assert await ask_openai(client, False) == TEXT  # oa's budget is spent by it
    await settle(client)
    async with openai_sdk(client, AGENT) as api:
        raw = await api.chat.completions.with_raw_response.create(
            model="oa/gpt-4o-mini", messages=HELLO, max_tokens=16
        )
    assert raw.headers["x-localrouter-model"] == "lab/qwen3-coder"
    assert raw.headers["x-ratelimit-remaining-requests"] == "8"
    assert [body["model"] for body in wires.openai.bodies] == ["gpt-4o-mini", "qwen3-coder"]


async def test_unpriced_models_are_outside_a_budget_or_refused_when_asked(
    daemon: DaemonFactory, tmp_path: Path, wires: Wires
) -> None:
    """A model with no known price does not count toward a dollar budget; with
    usd_limits_unpriced: refuse it is refused (403) for a client with a dollar budget, and
    the message says how to price it."""
    config = budgeted(tmp_path, wires, {"usd_per_day": 0.0001})
    config["providers"][0].pop("pricing")  # oa: the catalog knows no price of this model
    unpriced = "oa/zz-private-finetune-7"
    client = await daemon(config)
    for stream in (False, True, False):
        assert await ask_openai(client, stream, unpriced) == TEXT  # uncounted
    with pytest.raises(openai.RateLimitError):  # a priced one: $0.0001 is not enough
        await ask_openai(client, False, "lab/qwen3-coder")
    config["clients"][0]["limits"]["usd_limits_unpriced"] = "refuse"
    client = await daemon(config)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        await ask_openai(client, False, unpriced)
    assert refused.value.code == "unpriced_model_refused"
    assert f"'{unpriced}' has no known price" in refused.value.message
    assert "providers[].pricing" in refused.value.message


async def test_budget_status_may_be_402(
    daemon: DaemonFactory, tmp_path: Path, wires: Wires
) -> None:
    """limits.budget_status: 402 for tools that expect Payment Required."""
    config = budgeted(tmp_path, wires, {"usd_per_day": CHAT.cost + 0.0002})
    config["limits"] = {"budget_status": 402}
    client = await daemon(config)
    await ask_openai(client, False)
    await settle(client)
    with pytest.raises(openai.APIStatusError) as refused:
        await ask_openai(client, False)
    assert refused.value.status_code == 402
    assert refused.value.code == "budget_exceeded"


async def test_the_key_endpoint_shows_the_callers_budget_in_openrouters_shape(
    daemon: DaemonFactory, tmp_path: Path, wires: Wires
) -> None:
    """GET /api/v1/key for the agent's token: limit, limit_remaining and limit_reset of its
    tightest dollar budget (daily here), and that unpriced calls are outside it; the admin's
    /api/limits shows every limit, a client may not read it."""
    config = budgeted(
        tmp_path, wires, {"usd_per_day": 1.0, "usd_per_month": 20.0, "requests_per_minute": 60}
    )
    client = await daemon(config)
    await ask_openai(client, False)
    await settle(client)
    answer = await client.get("/api/v1/key", headers={"Authorization": f"Bearer {AGENT}"})
    data = (await answer.json())["data"]
    assert data["limit"] == 1.0
    assert data["limit_remaining"] == pytest.approx(1.0 - CHAT.cost)
    assert data["limit_reset"] == "daily"
    assert data["limit_counts_unpriced"] is False
    assert {row["limit"] for row in data["limits"]} == {
        "usd_per_day",
        "usd_per_month",
        "requests_per_minute",
    }
    refused = await client.get("/api/limits", headers={"Authorization": f"Bearer {AGENT}"})
    assert refused.status == 403
    answer = await client.get("/api/limits", headers={"Authorization": f"Bearer {ADMIN}"})
    shown = await answer.json()
    rows = {row["limit"]: row for row in shown["data"]}
    assert rows["requests_per_minute"]["used"] == 1
    assert rows["usd_per_month"]["used"] == pytest.approx(CHAT.cost)
    assert rows["usd_per_day"]["configured"] == "clients[0].limits.usd_per_day"
    assert shown["counted"] == "daemon"


async def test_localrouter_limits_prints_each_limit_as_it_stands(
    tmp_path: Path, wires: Wires, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """`localrouter limits` reads the running daemon's /api/limits with the admin token."""
    config = budgeted(tmp_path, wires, {"usd_per_day": 1.0, "max_parallel": 3})
    async with served_on_a_port(config, tmp_path, clock) as served:
        code = await asyncio.to_thread(main, ["limits", "--config", str(served.config)])
    assert code == 0
    said = capsys.readouterr().out.splitlines()
    table = said[next(i for i, line in enumerate(said) if line.startswith("client ")) :]
    rows = {line.split()[2]: line.split() for line in table[1:] if line.startswith("agent")}
    assert rows["usd_per_day"][3:7] == ["$1.0000", "$0.0000", "$0.0000", "$1.0000"]
    assert rows["max_parallel"][3] == "3"
    note = "calls to models with no known price are outside dollar limits"
    assert any(note in line for line in table)  # the daemon's log lines land here too


def test_check_says_each_dollar_limit_leaves_unpriced_calls_out(tmp_path: Path) -> None:
    """`check` shows each client's limits, and a note per dollar limit on unpriced calls."""
    config: dict[str, Any] = {
        "limits": {"usd_per_month": 50},
        "clients": [
            {
                "name": "agent",
                "token": AGENT,
                "limits": {"requests_per_minute": 30, "usd_per_day": 5},
                "model_limits": {"openai/*": {"usd_per_day": 2}},
            },
            {"name": "other", "token": "other-budget-token-55"},
        ],
    }
    settings = settings_from(config)
    shown = describe(LoadedConfig(settings, "test-config.yaml"))
    assert "client agent: token set, allows everything; limits requests_per_minute 30" in shown
    assert "on openai/*: usd_per_day 2" in shown
    assert "limits (clients without their own): usd_per_month 50" in shown
    for path in ("limits", "clients[0].limits", "clients[0].model_limits.openai/*"):
        assert f"note: {path}: calls to models with no known price are not counted" in shown


@pytest.mark.parametrize(
    ("ask", "refused_as"),
    [(ask_anthropic, anthropic.RateLimitError), (ask_ollama, ollama.ResponseError)],
    ids=["anthropic", "ollama"],
)
async def test_a_rate_refusal_on_messages_and_ollama_routes_says_when_to_retry(
    daemon: DaemonFactory,
    tmp_path: Path,
    wires: Wires,
    clock: FakeClock,
    ask: Ask,
    refused_as: type[Exception],
) -> None:
    """requests_per_minute 1 on Anthropic's and Ollama's routes: the second call is a 429 in
    the route's own error shape, with Retry-After (Anthropic's SDK waits it out too)."""
    clock.now = 1_800_000_000.0 + 50
    client = await daemon(budgeted(tmp_path, wires, {"requests_per_minute": 1}))
    assert await ask(client, True) == TEXT
    with pytest.raises(refused_as) as refused:
        await ask(client, False)
    error = refused.value
    if isinstance(error, anthropic.RateLimitError):
        body: Any = error.body
        assert body["error"]["type"] == "rate_limit_error"
        assert "details" not in body["error"]
        assert error.response.headers["retry-after"] == "10"
        assert error.response.headers["x-ratelimit-remaining-requests"] == "0"
    else:
        assert isinstance(error, ollama.ResponseError)
        assert error.status_code == 429
        assert error.error.startswith("Rate limit reached for client 'agent'")
        assert "Try again in 10 s" in error.error


@pytest.mark.parametrize(
    ("config", "said"),
    [
        (
            {"clients": [{"name": "a", "token": AGENT, "limits": {"requests_per_minute": 0}}]},
            "clients[0].limits.requests_per_minute: Input should be greater than 0",
        ),
        ({"limits": {"timezone": "Mars/Olympus"}}, "limits.timezone: unknown time zone"),
        (
            {"clients": [{"name": "a", "token": AGENT, "model_limits": {"x/*": {"usd": 1}}}]},
            "clients[0].model_limits.x/*.usd: unknown key",
        ),
        ({"limits": {"budget_status": 500}}, "limits.budget_status: Input should be 429"),
    ],
)
def test_check_names_the_key_path_of_a_mistake_in_limits(config: dict[str, Any], said: str) -> None:
    with pytest.raises(ConfigError) as refused:
        settings_from(config)
    assert said in str(refused.value)
