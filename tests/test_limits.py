"""Issue 36: rate limits and calls in flight, over real sockets with the official openai client.
Each test checks what the client library sees (its exception, the status, the error's type and
code, the headers) and what the SDK's retry logic does with it: it waits out a rate refusal
(Retry-After, retry-after-ms) and does not retry a spent budget (`x-should-retry: false`).
The clock is the test's: a minute passes when the test says so. Budgets on each protocol:
tests/test_limits_budgets.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from localrouter.app import COMPONENTS
from tests.conftest import DaemonFactory, FakeClock, eventually
from tests.usage_wires import HELLO, TEXT, Wires, ledger_config, start_wires

AGENT = "agent-limits-token-4f2a"
ADMIN = "admin-limits-token-9c1e"
MINUTE_START = 1_800_000_000.0  # a whole minute (the test clock's start)
MODEL = "oa/gpt-4o-mini"

Client = TestClient[Any, Any]


@pytest.fixture
async def wires(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Wires:
    return await start_wires(aiohttp_server)


def limited(tmp_path: Path, wires: Wires, limits: dict[str, Any], **more: Any) -> dict[str, Any]:
    """The usage wires' instances, with the admin token and client `agent` held to `limits`."""
    clients = [{"name": "agent", "token": AGENT, "limits": limits}]
    return ledger_config(
        tmp_path, wires.instances(), server={"auth_token": ADMIN}, clients=clients, **more
    )


SDK = Callable[..., openai.AsyncOpenAI]


@pytest.fixture
async def sdk() -> AsyncIterator[SDK]:
    """The openai client for a daemon (`token`: AGENT's unless given), with `retries` and
    httpx options (event hooks); each closed at the end."""
    made: list[httpx.AsyncClient] = []

    def start(
        client: Client, *, retries: int = 0, token: str = AGENT, **http: Any
    ) -> openai.AsyncOpenAI:
        made.append(httpx.AsyncClient(**http))
        return openai.AsyncOpenAI(
            base_url=str(client.make_url("/v1")),
            api_key=token,
            max_retries=retries,
            http_client=made[-1],
        )

    yield start
    for http in made:
        await http.aclose()


async def chat(api: openai.AsyncOpenAI, max_tokens: int = 64) -> httpx.Headers:
    """One whole chat call; the answer's headers."""
    raw = await api.chat.completions.with_raw_response.create(
        model=MODEL, messages=HELLO, max_tokens=max_tokens
    )
    assert raw.parse().choices[0].message.content == TEXT
    return raw.headers


async def test_a_rate_limit_refuses_the_request_past_it_and_admits_it_next_minute(
    daemon: DaemonFactory, tmp_path: Path, wires: Wires, clock: FakeClock, sdk: SDK
) -> None:
    """requests_per_minute 2: the answers count down in x-ratelimit-*, with the rest of the
    minute in whole seconds rounded up; the third request is a 429 the openai client raises
    as RateLimitError, with Retry-After until the minute ends; the next minute admits it."""
    clock.now = MINUTE_START + 15
    client = await daemon(limited(tmp_path, wires, {"requests_per_minute": 2}))
    api = sdk(client)
    for left, advance in (("1", 0.75), ("0", 0.0)):
        headers = await chat(api)
        assert headers["x-ratelimit-limit-requests"] == "2"
        assert headers["x-ratelimit-remaining-requests"] == left
        assert headers["x-ratelimit-reset-requests"] == "45s"  # 45 s, then 44.25 s
        clock.advance(advance)
    with pytest.raises(openai.RateLimitError) as refused:
        await chat(api)
    error = refused.value
    assert error.status_code == 429
    assert (error.type, error.code) == ("requests", "rate_limit_exceeded")
    assert "client 'agent'" in error.message
    assert "clients[0].limits.requests_per_minute" in (error.message)
    assert error.response.headers["retry-after"] == "45"
    assert error.response.headers["retry-after-ms"] == "44250"
    assert error.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert "x-should-retry" not in error.response.headers
    assert len(wires.openai.bodies) == 2  # the refused request never went upstream
    clock.advance(44.25)
    headers = await chat(api)
    assert headers["x-ratelimit-remaining-requests"] == "1"


async def test_a_clock_stepping_back_keeps_counting_in_the_current_minute(
    daemon: DaemonFactory, tmp_path: Path, wires: Wires, clock: FakeClock, sdk: SDK
) -> None:
    """A system clock set back a few seconds across the minute's start (an NTP step) does not
    open the previous minute afresh: the counts stay, and the minute still ends when it did.
    A clock set back by more than a minute counts in the earlier time's windows, anew (kept,
    it would hold a rate limit's window open for as long as the step)."""
    clock.now = MINUTE_START + 1
    client = await daemon(limited(tmp_path, wires, {"requests_per_minute": 1}))
    api = sdk(client)
    await chat(api)
    clock.now = MINUTE_START - 2
    with pytest.raises(openai.RateLimitError) as refused:
        await chat(api)
    assert refused.value.response.headers["retry-after"] == "62"  # the minute ends as before
    clock.now = MINUTE_START + 60
    headers = await chat(api)
    assert headers["x-ratelimit-remaining-requests"] == "0"
    clock.now = MINUTE_START - 3600  # an hour back: that hour's minute, not an hour's wait
    headers = await chat(api)
    assert headers["x-ratelimit-reset-requests"] == "60s"


async def test_the_sdk_waits_out_a_rate_refusal_and_its_retry_is_admitted(
    daemon: DaemonFactory, tmp_path: Path, wires: Wires, clock: FakeClock, sdk: SDK
) -> None:
    """The openai client retries a rate refusal after the wait it was told (retry-after-ms:
    50 ms are left of the minute); by its retry the minute has passed, and the call answers."""
    clock.now = MINUTE_START + 59.95
    client = await daemon(limited(tmp_path, wires, {"requests_per_minute": 1}))
    sent: list[httpx.Request] = []

    async def on_request(request: httpx.Request) -> None:
        sent.append(request)
        if len(sent) == 3:  # the retry of the refused call: the minute is over by then
            clock.advance(1)

    api = sdk(client, retries=2, event_hooks={"request": [on_request]})
    await chat(api)
    headers = await chat(api)  # refused once, then admitted
    assert len(sent) == 3
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert len(wires.openai.bodies) == 2


async def test_the_sdk_does_not_retry_a_spent_budget(
    daemon: DaemonFactory, tmp_path: Path, wires: Wires, clock: FakeClock, sdk: SDK
) -> None:
    """A spent budget is a 429 without Retry-After and with x-should-retry: false: the openai
    client, told to retry twice, sends it once."""
    client = await daemon(limited(tmp_path, wires, {"usd_per_day": 0.005}))
    sent: list[httpx.Request] = []

    async def on_request(request: httpx.Request) -> None:
        sent.append(request)

    api = sdk(client, retries=2, event_hooks={"request": [on_request]})
    await chat(api)  # costs 0.0048 (tests/usage_wires.py: CHAT)
    await client.app[COMPONENTS].recorder.flush()
    with pytest.raises(openai.RateLimitError) as refused:
        await chat(api)
    assert len(sent) == 2
    error = refused.value
    assert (error.type, error.code) == ("insufficient_quota", "budget_exceeded")
    assert "retry-after" not in error.response.headers
    assert error.response.headers["x-should-retry"] == "false"
    assert "clients[0].limits.usd_per_day is $0.005" in error.message
    assert "$0.0048 is spent" in error.message
    assert "resets at" in error.message
    assert "not counted" in error.message


async def test_tokens_per_minute_reserve_the_expected_tokens_and_count_the_real_ones(
    daemon: DaemonFactory, tmp_path: Path, wires: Wires, clock: FakeClock, sdk: SDK
) -> None:
    """tokens_per_minute 3000: a call reserves its input estimate and max_tokens, and counts
    what the upstream reported (1700) once it ends: a second call fits, a third does not, and
    its refusal says so in OpenAI's tokens shape. The refused call is not counted in the
    requests_per_minute it passed before (counted in all of a caller's limits, or in none)."""
    clock.now = MINUTE_START
    limits = {"requests_per_minute": 10, "tokens_per_minute": 3000}
    client = await daemon(limited(tmp_path, wires, limits))
    api = sdk(client)
    headers = await chat(api)
    assert headers["x-ratelimit-limit-tokens"] == "3000"
    await client.app[COMPONENTS].recorder.flush()
    await chat(api)
    await client.app[COMPONENTS].recorder.flush()
    with pytest.raises(openai.RateLimitError) as refused:
        await chat(api)
    error = refused.value
    assert (error.type, error.code) == ("tokens", "rate_limit_exceeded")
    assert "3400 tokens are used in this minute" in error.message
    assert error.response.headers["x-ratelimit-remaining-tokens"] == "0"
    assert error.response.headers["retry-after"] == "60"
    assert error.response.headers["x-ratelimit-remaining-requests"] == "8"
    answer = await client.get("/api/limits", headers={"Authorization": f"Bearer {ADMIN}"})
    rows = {row["limit"]: row for row in (await answer.json())["data"]}
    assert rows["requests_per_minute"]["used"] == 2
    assert rows["tokens_per_minute"]["used"] == 3400


async def test_a_call_without_max_tokens_reserves_the_listed_output_limit_of_the_list_now(
    daemon: DaemonFactory, tmp_path: Path, wires: Wires, clock: FakeClock, sdk: SDK
) -> None:
    """A call that does not say how much it may answer reserves the model's output limit as
    its instance lists it, and from the list it has now: refused while the list says 5000
    (past tokens_per_minute 3000), admitted once a refreshed list says 500 (with the 1700
    tokens a call with its own max_tokens used); a call's own max_tokens wins over either.
    Limits of 10^9 show whole in the headers."""
    clock.now = MINUTE_START
    wires.openai.output_limit = 5000
    limits = {"requests_per_minute": 1_000_000_000, "tokens_per_minute": 3000}
    client = await daemon(limited(tmp_path, wires, limits))
    api = sdk(client)
    model = "lab/gpt-4o-mini"  # openai_compatible: reads max_completion_tokens
    with pytest.raises(openai.RateLimitError) as refused:
        await api.chat.completions.create(model=model, messages=HELLO)
    assert "up to 5000 output" in refused.value.message
    headers = await chat(api, max_tokens=64)  # its own cap wins: not refused
    assert headers["x-ratelimit-limit-requests"] == "1000000000"
    await client.app[COMPONENTS].recorder.flush()
    with pytest.raises(openai.RateLimitError):  # the list the call was first priced by
        await api.chat.completions.create(model=model, messages=HELLO)
    wires.openai.output_limit = 500
    admin = {"Authorization": f"Bearer {ADMIN}"}
    listed = await client.get("/api/models", params={"refresh": "true"}, headers=admin)
    assert listed.status == 200, await listed.text()
    raw = await api.chat.completions.with_raw_response.create(model=model, messages=HELLO)
    assert raw.parse().choices[0].message.content == TEXT
    await client.app[COMPONENTS].recorder.flush()
    answer = await client.get("/api/limits", headers=admin)
    rows = {row["limit"]: row for row in (await answer.json())["data"]}
    assert rows["requests_per_minute"]["used"] == 2  # the refused calls counted in none
    assert rows["tokens_per_minute"]["used"] == 3400


async def test_max_parallel_refuses_a_third_stream_while_two_are_in_flight(
    daemon: DaemonFactory, tmp_path: Path, wires: Wires, sdk: SDK
) -> None:
    """max_parallel 2, with two streams held open upstream: a third call is refused (429,
    Retry-After: 1); once the streams end, a call is admitted again."""
    wires.openai.gate = asyncio.Event()
    client = await daemon(limited(tmp_path, wires, {"max_parallel": 2}))
    api = sdk(client)

    async def stream() -> str:
        answer = await api.chat.completions.create(
            model=MODEL, messages=HELLO, max_tokens=64, stream=True
        )
        return "".join([part.choices[0].delta.content or "" async for part in answer])

    streams = [asyncio.create_task(stream()) for _ in range(2)]

    async def both_upstream() -> bool:
        return len(wires.openai.bodies) == 2

    await eventually(both_upstream, "two streams upstream")
    with pytest.raises(openai.RateLimitError) as refused:
        await chat(api)
    assert refused.value.response.headers["retry-after"] == "1"
    assert "2 in flight" in refused.value.message
    assert "clients[0].limits.max_parallel is 2" in refused.value.message
    wires.openai.gate.set()
    assert await asyncio.gather(*streams) == [TEXT, TEXT]

    async def admitted() -> bool:
        try:
            await chat(api)
        except openai.RateLimitError:
            return False  # the streams' handlers have not returned yet
        return True

    await eventually(admitted, "a call admitted after the streams ended")


async def test_ten_calls_at_once_against_a_budget_that_fits_three_admit_three(
    daemon: DaemonFactory, tmp_path: Path, wires: Wires, sdk: SDK
) -> None:
    """Each call reserves its expected cost before it is made (max_tokens 1000 at $15/M:
    about $0.015), so ten calls at once against $0.05 admit three, whatever their real cost
    will be; the other seven are refused without reaching the upstream. Settled at their real
    cost ($0.0048 each), the reservations leave room for the next call."""
    wires.openai.gate = asyncio.Event()
    client = await daemon(limited(tmp_path, wires, {"usd_per_day": 0.05}))
    api = sdk(client)

    async def call() -> str:
        try:
            await chat(api, max_tokens=1000)
        except openai.RateLimitError as refused:
            return str(refused.code)
        return "answered"

    calls = [asyncio.create_task(call()) for _ in range(10)]

    async def three_held_seven_refused() -> bool:
        refused = sum(task.done() for task in calls)
        return refused == 7 and len(wires.openai.bodies) == 3

    await eventually(three_held_seven_refused, "three calls upstream, seven refused")
    wires.openai.gate.set()
    outcomes = await asyncio.gather(*calls)
    assert sorted(outcomes) == ["answered"] * 3 + ["budget_exceeded"] * 7
    await client.app[COMPONENTS].recorder.flush()
    await chat(api, max_tokens=1000)  # 3 x 0.0048 spent, 0.015 reserved: fits


async def test_a_changed_limit_applies_to_the_next_request_and_the_counts_stay(
    daemon: DaemonFactory, tmp_path: Path, wires: Wires, clock: FakeClock, sdk: SDK
) -> None:
    """A reload that lowers requests_per_minute from 5 to 2 refuses the next request (two
    were made this minute: the count survived the reload)."""
    clock.now = MINUTE_START
    config = limited(tmp_path, wires, {"requests_per_minute": 5})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    client = await daemon(config, config_path=path)
    api = sdk(client)
    await chat(api)
    await chat(api)
    config["clients"][0]["limits"] = {"requests_per_minute": 2}
    path.write_text(yaml.safe_dump(config))
    assert await client.app[COMPONENTS].reloader.reload()
    with pytest.raises(openai.RateLimitError):
        await chat(api)


async def test_answers_warn_once_a_budget_passes_warn_at(
    daemon: DaemonFactory, tmp_path: Path, wires: Wires, sdk: SDK
) -> None:
    """warn_at 0.3 of $0.015: the first answer has no warning; once 30 % is spent or reserved,
    answers carry x-localrouter-budget-remaining-usd, and the log warns once for the day."""
    config = limited(tmp_path, wires, {"usd_per_day": 0.015})
    config["limits"] = {"warn_at": 0.3}
    client = await daemon(config)
    api = sdk(client)
    headers = await chat(api)
    assert "x-localrouter-budget-remaining-usd" not in headers
    await client.app[COMPONENTS].recorder.flush()
    with capture_logs() as logs:
        for _ in range(2):
            headers = await chat(api)
            assert "x-localrouter-budget-remaining-usd" in headers
            await client.app[COMPONENTS].recorder.flush()
    remaining = float(headers["x-localrouter-budget-remaining-usd"])
    assert 0 < remaining < 0.015 - 2 * 0.0048
    warnings = [log for log in logs if log["event"] == "limits.budget_warning"]
    assert len(warnings) == 1
    assert warnings[0]["budget"] == "clients[0].limits.usd_per_day"


async def test_a_client_without_limits_is_not_held_by_another_clients(
    daemon: DaemonFactory, tmp_path: Path, wires: Wires, clock: FakeClock, sdk: SDK
) -> None:
    """Limits are per client: `agent` at its rate limit does not stop `other`, which has no
    limits of its own and none at the top level (so its answers carry no x-ratelimit-*)."""
    clock.now = MINUTE_START
    config = limited(tmp_path, wires, {"requests_per_minute": 1})
    config["clients"].append({"name": "other", "token": "other-limits-token-77"})
    client = await daemon(config)
    await chat(sdk(client))
    with pytest.raises(openai.RateLimitError):
        await chat(sdk(client))
    headers = await chat(sdk(client, token="other-limits-token-77"))
    assert "x-ratelimit-limit-requests" not in headers


@pytest.mark.parametrize(
    "limits",
    [{"tokens_per_minute": 100_000}, {"requests_per_minute": 1000}],
    ids=["tokens-settle", "requests-only"],
)
async def test_with_the_ledger_off_no_client_gets_usage_it_did_not_ask_for(
    daemon: DaemonFactory,
    tmp_path: Path,
    wires: Wires,
    sdk: SDK,
    limits: dict[str, int],
) -> None:
    """The ledger off, a limited client's streams are asked for their usage (a tokens limit
    needs it) and that usage is taken out again, also when its limits turn out to need none
    (requests only); a client without limits is not asked at all. Neither sees a usage chunk
    it did not ask for."""
    config = limited(tmp_path, wires, limits)
    config["usage"] = {"enabled": False}
    config["clients"].append({"name": "other", "token": "other-limits-token-77"})
    client = await daemon(config)
    for token, asked in ((AGENT, True), ("other-limits-token-77", False)):
        api = sdk(client, token=token)
        answer = await api.chat.completions.create(
            model=MODEL, messages=HELLO, max_tokens=64, stream=True
        )
        parts = [part async for part in answer]
        assert all(part.usage is None for part in parts)
        assert "".join(part.choices[0].delta.content or "" for part in parts) == TEXT
        assert ("stream_options" in wires.openai.bodies[-1]) is asked
