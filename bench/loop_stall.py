"""How long the daemon's event loop stalls while it does heavy work for one request.

Two phases, each with a fresh daemon (a separate process, pinned to one core) and an upstream
(another process), while this script sends `GET /health` back to back and records how long each
answer takes:
1. refresh: the first `GET /v1/models` of a 100,000-model list (fetch, parse, enrich, persist,
   render), then a cache clear and the refresh it causes;
2. unknown models: `POST /v1/chat/completions` with ids no instance lists, against a 20,000-model
   list (each answer carries "did you mean" suggestions).
`/health` needs nothing of that work, so its latency is the loop's stall. Prints p50, p99 and the
worst per phase against the target (50 ms). --loops uvloop,asyncio runs both phases on each
event loop (the daemon's and the upstream's; bench/harness.py).

    python bench/loop_stall.py [--models 100000] [--unknown-against 20000]
                               [--loops uvloop,asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from harness import (
    LOAD_CORE,
    add_loops_argument,
    daemon_command,
    free_port,
    helper_command,
    loops_of,
    start,
)

TARGET_MS = 50.0


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


def report(what: str, values: list[float], *, judged: bool = True) -> float:
    worst = max(values)
    p50 = statistics.median(values)
    p99 = statistics.quantiles(values, n=100, method="inclusive")[98] if len(values) >= 2 else worst
    verdict = ("ok" if worst < TARGET_MS else "OVER") if judged else "not a stall: the first"
    verdict += "" if judged else " builds the suggestion index"
    print(
        f"  {what:<34} n={len(values):<5} p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  "
        f"worst {worst:7.2f} ms  ({verdict}" + (f", target < {TARGET_MS:g} ms)" if judged else ")"),
        flush=True,
    )
    return worst


def run_daemon_with(
    models: int, workdir: Path, phase: str, loop: str, args: argparse.Namespace
) -> float:
    upstream_port, daemon_port = free_port(), free_port()
    config = workdir / f"{phase}-{loop}.yaml"
    config.write_text(
        "providers:\n"
        f"  - {{name: big, type: openai_compatible, "
        f"base_url: 'http://127.0.0.1:{upstream_port}/v1', max_response_bytes: 268435456}}\n"
    )
    cache = {"XDG_CACHE_HOME": str(workdir / f"cache-{phase}-{loop}")}
    # The upstream stands in for a remote server: at the lowest priority, its sending of a 40 MB
    # list takes only the idle time of the cores the daemon and the probe run on.
    upstream = helper_command("upstream", upstream_port, models)
    with (
        start(upstream, port=upstream_port, loop=loop, core=None, nice=19),
        start(
            daemon_command(config, daemon_port), port=daemon_port, loop=loop, env=cache
        ) as daemon,
    ):
        base = daemon.base
        if phase == "refresh":
            print(f"refresh of a {models}-model list, {loop}:", flush=True)
            seen, _ = asyncio.run(refresh_phase(base))
            return report("/health while refreshing", seen)
        print(f"unknown models against a {models}-model list, {loop}:", flush=True)
        seen, answers = asyncio.run(unknown_phase(base, args.unknown_requests))
        report("POST /v1/chat/completions (404)", answers, judged=False)
        return report("/health meanwhile", seen)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--models", type=int, default=100_000)
    parser.add_argument("--unknown-against", type=int, default=20_000)
    parser.add_argument("--unknown-requests", type=int, default=50)
    add_loops_argument(parser)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {LOAD_CORE})  # the probe on its own core; the daemon on the other
    with tempfile.TemporaryDirectory() as workdir:
        for loop in loops_of(args):
            worst = max(
                run_daemon_with(args.models, Path(workdir), "refresh", loop, args),
                run_daemon_with(args.unknown_against, Path(workdir), "unknown", loop, args),
            )
            print(f"worst stall, {loop}: {worst:.1f} ms (target < {TARGET_MS:g} ms)", flush=True)


if __name__ == "__main__":
    main()
