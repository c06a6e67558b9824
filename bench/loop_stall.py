"""How long the daemon's event loop stalls while it does heavy work for one request.

Three phases, each with a fresh daemon (a separate process, pinned to one core) and an upstream
(another process), while this script sends `GET /health` back to back and records how long each
answer takes:
1. refresh: the first `GET /v1/models` of a 100,000-model list (fetch, parse, enrich, persist,
   render), then a cache clear and the refresh it causes;
2. unknown models: `POST /v1/chat/completions` with ids no instance lists, against a 20,000-model
   list (each answer carries "did you mean" suggestions);
3. tool arguments: a streamed `POST /v1/responses` translated to Chat Completions, whose answer
   is one tool call with 48 MiB of arguments (then 3 MiB: under the Responses output cap, so
   kept whole and repeated in the closing events), in deltas of 64 KiB;
4. discovery: 10 ports probed every second (3 OpenAI-shaped servers among them, the other 7
   closed), for --discovery-seconds; target 20 ms (issue 38).
`/health` needs nothing of that work, so its latency is the loop's stall. Prints p50, p99 and the
worst per phase against the target (50 ms). --loops uvloop,asyncio runs every phase on each
event loop (the daemon's and the upstream's; bench/harness.py).

    python bench/loop_stall.py [--models 100000] [--unknown-against 20000]
                               [--tool-mib 48,3] [--tool-piece-kib 64]
                               [--phases refresh,unknown,tools] [--loops uvloop,asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web

sys.path.insert(0, str(Path(__file__).parent))
import ledger_stall
from harness import (
    LOAD_CORE,
    add_loops_argument,
    daemon_command,
    default_loop,
    free_port,
    helper_command,
    loop_factory,
    loops_of,
    start,
)

TARGET_MS = 50.0
PHASES = ("refresh", "unknown", "tools", "discovery", "ledger")
DISCOVERY_TARGET_MS = 20.0
DISCOVERY_SERVERS = 3  # of the 10 ports probed, these answer (OpenAI's list); the rest are closed
# The ledger's phase runs in this process (bench/ledger_stall.py): 10,000 records pending a
# flush, the loop's worst stall meanwhile, target < LEDGER_TARGET_MS.
LEDGER_RECORDS = 10_000
TOOL_UPSTREAM = "tool-upstream"  # this script as the tool-arguments phase's upstream


async def probe_health(url: str, stop: asyncio.Event, seen: list[float]) -> None:
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            started = time.perf_counter()
            async with session.get(url) as response:
                await response.read()
            seen.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.002)


async def drain(response: aiohttp.ClientResponse) -> int:
    """Read an answer without holding it: this process also runs the probe, and joining or
    decoding a 40 MB list here would stall the probe, not the daemon."""
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
    return size


async def refresh_phase(base: str) -> tuple[list[float], float]:
    stop, seen = asyncio.Event(), list[float]()
    prober = asyncio.create_task(probe_health(base + "/health", stop, seen))
    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        async with session.get(base + "/v1/models") as response:
            first = await drain(response)
        first_ms = (time.perf_counter() - started) * 1000
        print(f"  first /v1/models: {first} bytes in {first_ms:.0f} ms", flush=True)
        async with session.post(base + "/api/cache/clear", json={}) as response:
            await response.read()
        async with session.get(base + "/v1/models") as response:
            await drain(response)  # stale, and starts the refresh
        for _ in range(600):  # until the refreshed list is in and rendered
            async with session.get(base + "/api/cache/stats") as response:
                stats = await response.json()
            if stats["upstream_calls"] >= 2 and not stats["instances"]["big"]["refreshing"]:
                break
            await asyncio.sleep(0.05)
        async with session.get(base + "/v1/models") as response:
            await drain(response)
    stop.set()
    await prober
    return seen, first_ms


async def unknown_phase(base: str, requests: int) -> tuple[list[float], list[float]]:
    stop, seen = asyncio.Event(), list[float]()
    prober = asyncio.create_task(probe_health(base + "/health", stop, seen))
    answers = []
    async with aiohttp.ClientSession() as session:
        async with session.get(base + "/v1/models") as response:
            await drain(response)
        for index in range(requests):
            body = {"model": f"acme/model-{index:05d}-instrukt", "messages": []}
            started = time.perf_counter()
            async with session.post(base + "/v1/chat/completions", json=body) as response:
                assert response.status == 404, await response.text()
                await response.read()
            answers.append((time.perf_counter() - started) * 1000)
    stop.set()
    await prober
    return seen, answers


async def tools_phase(base: str, mib: int) -> tuple[list[float], int]:
    stop, seen = asyncio.Event(), list[float]()
    prober = asyncio.create_task(probe_health(base + "/health", stop, seen))
    tool = {"type": "function", "name": "write_file", "parameters": {"type": "object"}}
    body = {"model": "tools/m", "input": f"{mib}", "stream": True, "tools": [tool]}
    async with (
        aiohttp.ClientSession() as session,
        session.post(base + "/v1/responses", json=body) as response,
    ):
        assert response.status == 200, await response.text()
        sent = await drain(response)
    stop.set()
    await prober
    return seen, sent


def serve_tool_upstream(port: int, piece: int) -> None:
    """A Chat Completions upstream whose streamed answer is one tool call, its arguments (as
    many MiB as the request's `input` says) in deltas of `piece` bytes: code in a JSON string,
    quotes and newlines escaped twice over once translated."""
    line = 'print("a line of code", end="\\n")\n'
    text = (line * (piece // len(line) + 1))[:piece]

    def event(delta: dict[str, object], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        chunk = {"id": "c", "object": "chat.completion.chunk", "choices": [choice]}
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    opening = event(
        {"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "write_file"}}]}
    )
    piece_event = event({"tool_calls": [{"index": 0, "function": {"arguments": text}}]})
    batch = max(1, 256 * 1024 // len(piece_event))

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        pieces = int(body["messages"][-1]["content"]) * 1024 * 1024 // piece
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(opening)
        for start_at in range(0, pieces, batch):
            await response.write(piece_event * min(batch, pieces - start_at))
        await response.write(event({}, "tool_calls") + b"data: [DONE]\n\n")
        return response

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    loop = loop_factory(default_loop())()
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, loop=loop)


async def discovery_phase(base: str, seconds: float) -> list[float]:
    """/health while the daemon probes its ports every second; the found instances listed."""
    stop, seen = asyncio.Event(), list[float]()
    prober = asyncio.create_task(probe_health(base + "/health", stop, seen))
    await asyncio.sleep(seconds)
    async with aiohttp.ClientSession() as session, session.get(base + "/api/discovery") as answer:
        shown = await answer.json()
    stop.set()
    await prober
    serving = sum(row["state"] == "serving" for row in shown["servers"])
    print(f"  {shown['rounds']} rounds of {len(shown['servers'])} ports, {serving} serving")
    return seen


def report(
    what: str, values: list[float], *, judged: bool = True, target: float = TARGET_MS
) -> float:
    worst = max(values)
    p50 = statistics.median(values)
    p99 = statistics.quantiles(values, n=100, method="inclusive")[98] if len(values) >= 2 else worst
    verdict = ("ok" if worst < target else "OVER") if judged else "not a stall: the first"
    verdict += "" if judged else " builds the suggestion index"
    print(
        f"  {what:<34} n={len(values):<5} p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  "
        f"worst {worst:7.2f} ms  ({verdict}" + (f", target < {target:g} ms)" if judged else ")"),
        flush=True,
    )
    return worst


def run_daemon_with(
    models: int, workdir: Path, phase: str, loop: str, args: argparse.Namespace
) -> float:
    upstream_port, daemon_port = free_port(), free_port()
    config = workdir / f"{phase}-{loop}.yaml"
    if phase == "discovery":
        return run_discovery(workdir, config, daemon_port, loop, args.discovery_seconds)
    name = "tools" if phase == "tools" else "big"
    config.write_text(
        "providers:\n"
        f"  - {{name: {name}, type: openai_compatible, "
        f"base_url: 'http://127.0.0.1:{upstream_port}/v1', max_response_bytes: 268435456}}\n"
    )
    cache = {"XDG_CACHE_HOME": str(workdir / f"cache-{phase}-{loop}")}
    # The upstream stands in for a remote server: at the lowest priority, its sending of a 40 MB
    # list takes only the idle time of the cores the daemon and the probe run on.
    if phase == "tools":
        piece = args.tool_piece_kib * 1024
        upstream = [sys.executable, __file__, TOOL_UPSTREAM, str(upstream_port), str(piece)]
    else:
        upstream = helper_command("upstream", upstream_port, models)
    with (
        start(upstream, port=upstream_port, loop=loop, core=None, nice=19),
        start(
            daemon_command(config, daemon_port), port=daemon_port, loop=loop, env=cache
        ) as daemon,
    ):
        base = daemon.base
        if phase == "tools":
            worst = 0.0
            for mib in map(int, args.tool_mib.split(",")):
                print(f"tool-call arguments of {mib} MiB through /v1/responses, {loop}:")
                seen, sent = asyncio.run(tools_phase(base, mib))
                print(f"  sent out: {sent / 2**20:.1f} MiB", flush=True)
                worst = max(worst, report("/health while streaming", seen))
            return worst
        if phase == "refresh":
            print(f"refresh of a {models}-model list, {loop}:", flush=True)
            seen, _ = asyncio.run(refresh_phase(base))
            return report("/health while refreshing", seen)
        print(f"unknown models against a {models}-model list, {loop}:", flush=True)
        seen, answers = asyncio.run(unknown_phase(base, args.unknown_requests))
        report("POST /v1/chat/completions (404)", answers, judged=False)
        return report("/health meanwhile", seen)


def run_discovery(
    workdir: Path, config: Path, daemon_port: int, loop: str, seconds: float
) -> float:
    ports = [free_port() for _ in range(10)]
    config.write_text(
        f"providers: []\ndiscovery: {{enabled: true, interval_seconds: 1, ports: {ports}}}\n"
    )
    cache = {"XDG_CACHE_HOME": str(workdir / f"cache-discovery-{loop}")}
    with contextlib.ExitStack() as servers:
        for port in ports[:DISCOVERY_SERVERS]:
            servers.enter_context(
                start(helper_command("upstream", port, 200), port=port, loop=loop, core=None)
            )
        daemon = servers.enter_context(
            start(daemon_command(config, daemon_port), port=daemon_port, loop=loop, env=cache)
        )
        print(f"discovery of 10 ports every second, {loop}:", flush=True)
        seen = asyncio.run(discovery_phase(daemon.base, seconds))
        return report("/health while probing", seen, target=DISCOVERY_TARGET_MS)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--models", type=int, default=100_000)
    parser.add_argument("--unknown-against", type=int, default=20_000)
    parser.add_argument("--unknown-requests", type=int, default=50)
    parser.add_argument(
        "--tool-mib", default="48,3", help="MiB of tool-call arguments, one stream per size"
    )
    parser.add_argument("--tool-piece-kib", type=int, default=64)
    parser.add_argument("--discovery-seconds", type=float, default=10.0)
    parser.add_argument("--phases", default=",".join(PHASES), help=",".join(PHASES))
    add_loops_argument(parser)
    args = parser.parse_args()
    phases = args.phases.split(",")
    if unknown := [phase for phase in phases if phase not in PHASES]:
        raise SystemExit(f"--phases: unknown {unknown}; use {','.join(PHASES)}")
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {LOAD_CORE})  # the probe on its own core; the daemon on the other
    with tempfile.TemporaryDirectory() as workdir:
        for loop in loops_of(args):
            sizes = {
                "refresh": args.models,
                "unknown": args.unknown_against,
                "tools": 0,
                "discovery": 0,
            }
            daemon_phases = [phase for phase in phases if phase != "ledger"]
            if daemon_phases:
                worst = max(
                    run_daemon_with(sizes[phase], Path(workdir), phase, loop, args)
                    for phase in daemon_phases
                )
                print(
                    f"worst stall, {loop}: {worst:.1f} ms (target < {TARGET_MS:g} ms)", flush=True
                )
            if "ledger" in phases:
                with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
                    stall, idle = runner.run(ledger_stall.run(LEDGER_RECORDS, 3, Path(workdir)))
                verdict = "ok" if stall < ledger_stall.TARGET_MS else "OVER"
                print(
                    f"usage ledger, {LEDGER_RECORDS} records pending, {loop}: worst stall "
                    f"{stall:.2f} ms, idle floor {idle:.2f} ms ({verdict}, target < "
                    f"{ledger_stall.TARGET_MS:g} ms)",
                    flush=True,
                )


if __name__ == "__main__":
    if sys.argv[1:2] == [TOOL_UPSTREAM]:
        serve_tool_upstream(int(sys.argv[2]), int(sys.argv[3]))
    else:
        main()
