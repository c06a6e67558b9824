"""Issue 38: local servers found by themselves, in the daemon, over real sockets, with the fake
servers of tests/local_servers.py and the test's clock: a server that starts later appears
within one interval and one that stops is gone after two; a configured one is not
duplicated; what answers oddly or wants a key is shown, never an instance; no credential is
ever sent; with discovery off no port is touched; `localrouter discover` prints the rows and a
config snippet. Which server is which: tests/test_discovery_fingerprint.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import structlog.testing
import yaml

from localrouter.cli import main
from localrouter.discovery.runner import TICK_SECONDS, host_variables
from tests import local_servers as fakes
from tests.conftest import DaemonFactory, FakeClock, eventually, served_on_a_port
from tests.test_reload import watching, write_config

INTERVAL = 60.0
ADMIN = "admin-discovery-token-41d2"
UPSTREAM_KEY = "sk-discovery-upstream-9a7c"

Client = Any


@pytest.fixture
def traffic() -> Iterator[fakes.Traffic]:
    """What the fakes received; after every test, not one credential."""
    seen = fakes.Traffic()
    yield seen
    assert seen.credentials() == []


@pytest.fixture
async def run() -> AsyncIterator[Callable[..., Awaitable[int]]]:
    started: list[Any] = []

    async def start(server: Any, port: int = 0) -> int:
        started.append(server)
        return int(await server.start(port))

    yield start
    for server in started:
        await server.stop()


def discovering(ports: list[int], **more: Any) -> dict[str, Any]:
    return {
        "server": {"auth_token": ADMIN},
        "discovery": {"enabled": True, "interval_seconds": INTERVAL, "ports": ports, **more},
    }


async def rows(client: Client) -> dict[int, dict[str, Any]]:
    answer = await client.get("/api/discovery", headers={"Authorization": f"Bearer {ADMIN}"})
    assert answer.status == 200
    shown: dict[str, Any] = await answer.json()
    return {row["port"]: row for row in shown["servers"]}


async def after_round(client: Client, rounds: int) -> dict[int, dict[str, Any]]:
    """The rows once the daemon has made `rounds` rounds in all."""

    async def done() -> dict[int, dict[str, Any]] | None:
        answer = await client.get("/api/discovery", headers={"Authorization": f"Bearer {ADMIN}"})
        shown = await answer.json()
        return {row["port"]: row for row in shown["servers"]} if shown["rounds"] >= rounds else None

    return await eventually(done, f"discovery round {rounds}")


async def listed(client: Client) -> set[str]:
    answer = await client.get("/v1/models", headers={"Authorization": f"Bearer {ADMIN}"})
    return {model["id"] for model in (await answer.json())["data"]}


async def test_a_server_that_starts_appears_within_an_interval_and_goes_after_two_missed(
    daemon: DaemonFactory,
    clock: FakeClock,
    run: Callable[..., Awaitable[int]],
    traffic: fakes.Traffic,
    unused_tcp_port: int,
) -> None:
    """Nothing on the port at the first round; an Ollama starts, and the round one interval
    later makes it instance ollama-<port> with its models listed. It stops: one missed round
    keeps its models (stale), the second drops the instance."""
    port = unused_tcp_port
    client = await daemon(discovering([port]))
    assert (await after_round(client, 1))[port]["state"] == "not_running"
    ollama = fakes.ollama(traffic)
    await run(ollama, port)
    clock.advance(INTERVAL)
    row = (await after_round(client, 2))[port]
    assert (row["type"], row["state"], row["instance"]) == ("ollama", "serving", f"ollama-{port}")
    assert row["version"] == "0.12.6"
    assert row["models"] == 3
    models = await eventually(lambda: listed(client), "the found models listed")
    assert {model.split("/")[0] for model in models} == {f"ollama-{port}"}
    await ollama.stop()
    clock.advance(INTERVAL)
    row = (await after_round(client, 3))[port]
    assert (row["state"], row["instance"]) == ("not_running", f"ollama-{port}")
    assert await listed(client) == models  # stale, not gone
    clock.advance(INTERVAL)
    row = (await after_round(client, 4))[port]
    assert row["instance"] is None
    assert await listed(client) == set()


async def test_rounds_follow_the_interval_by_the_clock(
    daemon: DaemonFactory, clock: FakeClock, unused_tcp_port: int
) -> None:
    """No round before the interval has passed on the daemon's clock."""
    client = await daemon(discovering([unused_tcp_port]))
    await after_round(client, 1)
    for _ in range(4):
        await asyncio.sleep(TICK_SECONDS)
    clock.advance(INTERVAL - 1)
    for _ in range(4):
        await asyncio.sleep(TICK_SECONDS)
    answer = await client.get("/api/discovery", headers={"Authorization": f"Bearer {ADMIN}"})
    assert (await answer.json())["rounds"] == 1
    clock.advance(1)
    await after_round(client, 2)


async def test_a_configured_server_is_not_duplicated(
    daemon: DaemonFactory, run: Callable[..., Awaitable[int]], traffic: fakes.Traffic
) -> None:
    """A llama.cpp server the config already has (as `lab`) is that instance, not a second;
    one the config does not have becomes llamacpp-<port>, of the llamacpp type (its context
    from /props)."""
    configured = await run(fakes.llamacpp(traffic))
    found = await run(fakes.llamacpp(traffic))
    config = discovering([configured, found])
    config["providers"] = [
        {
            "name": "lab",
            "type": "openai_compatible",
            "base_url": f"http://localhost:{configured}/v1",
        }
    ]
    client = await daemon(config)
    shown = await after_round(client, 1)
    assert shown[configured]["instance"] == "lab"
    assert shown[found]["instance"] == f"llamacpp-{found}"
    assert shown[found]["provider_type"] == "llamacpp"
    models = await eventually(lambda: listed(client), "the models listed")
    assert {model.split("/")[0] for model in models} == {"lab", f"llamacpp-{found}"}
    answer = await client.get(
        f"/v1/models/llamacpp-{found}//models/Qwen3-8B-Q4_K_M.gguf",
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert (await answer.json())["context_length"] == 8192  # /props' n_ctx


async def test_what_answers_oddly_or_wants_a_key_is_shown_never_an_instance(
    daemon: DaemonFactory, run: Callable[..., Awaitable[int]], traffic: fakes.Traffic
) -> None:
    page = await run(fakes.plain_page(traffic))
    silent = await run(fakes.SilentServer(traffic))
    garbage = await run(fakes.GarbageServer(traffic))
    locked = await run(fakes.lmstudio(traffic, auth=True))
    client = await daemon(discovering([page, silent, garbage, locked]))
    shown = await after_round(client, 1)
    assert {port: shown[port]["state"] for port in (page, silent, garbage, locked)} == {
        page: "unknown_server",
        silent: "unknown_server",
        garbage: "unknown_server",
        locked: "auth_required",
    }
    assert shown[locked]["type"] == "lmstudio"
    assert all(row["instance"] is None for row in shown.values())
    assert await listed(client) == set()


async def test_discovery_never_sends_a_key_or_token(
    daemon: DaemonFactory, run: Callable[..., Awaitable[int]], traffic: fakes.Traffic
) -> None:
    """The daemon holds an admin token, a client token and an instance key; its probes carry
    none of them, nor any credential at all (the `traffic` fixture checks every request)."""
    port = await run(fakes.vllm(traffic))
    config = discovering([port])
    config["clients"] = [{"name": "tool", "token": "tool-discovery-token-77"}]
    config["providers"] = [
        {
            "name": "paid",
            "type": "openai_compatible",
            "base_url": "http://127.0.0.1:9/v1",
            "api_key": UPSTREAM_KEY,
        }
    ]
    client = await daemon(config)
    assert (await after_round(client, 1))[port]["type"] == "vllm"
    sent = repr(traffic.requests)
    for secret in (ADMIN, UPSTREAM_KEY, "tool-discovery-token-77"):
        assert secret not in sent


async def test_with_discovery_off_no_port_is_touched(
    daemon: DaemonFactory, clock: FakeClock, unused_tcp_port: int
) -> None:
    """Not even a TCP connect, however much time passes."""
    connections: list[int] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", unused_tcp_port)
    try:
        config = discovering([unused_tcp_port])
        config["discovery"]["enabled"] = False
        client = await daemon(config)
        for _ in range(3):
            clock.advance(INTERVAL)
            for _ in range(3):
                await asyncio.sleep(TICK_SECONDS)
        answer = await client.get("/api/discovery", headers={"Authorization": f"Bearer {ADMIN}"})
        assert (await answer.json())["rounds"] == 0
    finally:
        server.close()
        await server.wait_closed()
    assert connections == []


async def test_expose_false_finds_but_does_not_list(
    daemon: DaemonFactory, run: Callable[..., Awaitable[int]], traffic: fakes.Traffic
) -> None:
    port = await run(fakes.ollama(traffic))
    client = await daemon(discovering([port], expose=False))
    row = (await after_round(client, 1))[port]
    assert (row["state"], row["instance"]) == ("serving", f"ollama-{port}")
    assert await listed(client) == set()


def test_the_host_variables_users_set_are_probed_too() -> None:
    assert host_variables({"OLLAMA_HOST": "0.0.0.0"}) == [("127.0.0.1", 11434)]
    assert host_variables({"OLLAMA_HOST": "http://10.0.0.5:9999"}) == [("10.0.0.5", 9999)]
    assert host_variables({"LLAMA_ARG_PORT": "8090"}) == [("127.0.0.1", 8090)]
    assert host_variables({"OLLAMA_HOST": "nonsense:port"}) == []
    assert host_variables({}) == []
    assert host_variables({"LLAMA_ARG_HOST": "::"}) == [("127.0.0.1", 8080)]
    assert host_variables({"LLAMA_ARG_HOST": "[::]", "LLAMA_ARG_PORT": "8081"}) == [
        ("127.0.0.1", 8081)
    ]
    assert host_variables({"LLAMA_ARG_PORT": "99999", "OLLAMA_HOST": ":70000"}) == []


async def test_a_port_taken_out_of_the_config_takes_its_server_with_it(
    tmp_path: Path,
    daemon: DaemonFactory,
    clock: FakeClock,
    run: Callable[..., Awaitable[int]],
    traffic: fakes.Traffic,
) -> None:
    """A reload that no longer names a found server's port: its instance goes at once (it
    would never be probed again, so never missed)."""
    port = await run(fakes.llamacpp(traffic))
    path = tmp_path / "config.yaml"
    config = discovering([port])
    client = await watching(path, config, daemon)
    assert (await after_round(client, 1))[port]["instance"] == f"llamacpp-{port}"
    await eventually(lambda: listed(client), "the found models listed")
    write_config(path, {**config, "discovery": {**config["discovery"], "ports": [port + 1]}})

    async def gone() -> bool:
        return port not in await rows(client) and not await listed(client)

    await eventually(gone, "the server's instance gone with its port")


async def test_one_server_at_two_loopback_names_is_one_steady_instance(
    daemon: DaemonFactory,
    clock: FakeClock,
    run: Callable[..., Awaitable[int]],
    traffic: fakes.Traffic,
) -> None:
    """`hosts: [127.0.0.1, localhost]` probes one server twice: one instance, found once and
    kept round after round (the two findings used to replace each other every round)."""
    port = await run(fakes.llamacpp(traffic))
    with structlog.testing.capture_logs() as logs:
        client = await daemon(discovering([port], hosts=["127.0.0.1", "localhost"]))
        for rounds in (1, 2, 3):
            await after_round(client, rounds)
            clock.advance(INTERVAL)
        answer = await client.get("/api/discovery", headers={"Authorization": f"Bearer {ADMIN}"})
        servers = (await answer.json())["servers"]
    assert sorted(row["host"] for row in servers) == ["127.0.0.1", "localhost"]
    assert {row["instance"] for row in servers} == {f"llamacpp-{port}"}
    events = [entry["event"] for entry in logs if entry["event"].startswith("discovery.")]
    assert events.count("discovery.found") == 1
    assert "discovery.gone" not in events
    assert {model.split("/")[0] for model in await listed(client)} == {f"llamacpp-{port}"}


async def test_another_localrouter_is_never_listed(
    daemon: DaemonFactory, clock: FakeClock, unused_tcp_port: int
) -> None:
    """A second daemon on a probed port (it answers Ollama's and LM Studio's lists too): its
    models are its upstreams', and two daemons listing each other would call in a loop."""
    other = await daemon({"discovery": {"enabled": False}})
    other_port = other.server.port
    client = await daemon(discovering([other_port]))
    row = (await after_round(client, 1))[other_port]
    assert (row["state"], row["instance"]) == ("unknown_server", None)
    assert await listed(client) == set()


async def test_localrouter_discover_prints_the_rows_and_a_config_snippet(
    tmp_path: Path,
    clock: FakeClock,
    run: Callable[..., Awaitable[int]],
    traffic: fakes.Traffic,
    capsys: pytest.CaptureFixture[str],
) -> None:
    found = await run(fakes.llamacpp(traffic))
    async with served_on_a_port(discovering([found]), tmp_path, clock) as served:
        path = served.config

        async def probed() -> bool:
            await asyncio.to_thread(main, ["discover", "--config", str(path)])
            return f"llamacpp-{found}" in capsys.readouterr().out

        await eventually(probed, "the server in the table")
        code = await asyncio.to_thread(
            main, ["discover", "--config-snippet", "--config", str(path)]
        )
    assert code == 0
    said = capsys.readouterr().out
    snippet = yaml.safe_load(said[said.index("providers:") :])
    assert snippet["providers"] == [
        {
            "name": f"llamacpp-{found}",
            "type": "llamacpp",
            "base_url": f"http://127.0.0.1:{found}/v1",
        }
    ]
