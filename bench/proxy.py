"""What localrouter's proxy costs, in two measures.

1. Latency added over calling the upstream directly: the same requests, one at a time, to both,
   in alternating blocks so that drift hits both alike; p50 and p99 of each and the difference,
   non-streamed (whole answer) and streamed (time to the first chunk).
2. Throughput against a ceiling: wrk at 16 connections (non-streamed POSTs) against localrouter
   and against a minimal aiohttp proxy (bench/servers.py minimal_proxy: read the body, rewrite
   `model` with orjson, POST it on a shared session, return the bytes), in paired rounds. The
   proxy under test has a core to itself; the upstream and wrk share the other. Prints the
   median of the per-round req/s ratios, and each proxy's own CPU time per request (from
   /proc) with the median of the per-round ratios (minimal CPU / localrouter CPU), which is
   what caps throughput and moves far less with the neighbours on a shared machine: the
   verdict, target >= 0.9. Use --rounds 12 or more.

    python bench/proxy.py [--requests 2000] [--block 100] [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from models import HERE, LOAD_CORE, cpu_seconds, free_port, pinned, process, wait_for, wrk_run

TARGET_RATIO = 0.9
WRK_SCRIPT = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model": "bench/bench-model", "messages": [{"role": "user", "content": "Say hi"}]}'
"""


def against_ceiling(
    ours: tuple[str, int], ceiling: tuple[str, int], workdir: Path, args: argparse.Namespace
) -> None:
    """Each server's req/s and CPU time per request, as (url, pid) pairs, in paired rounds."""
    if not shutil.which("wrk"):
        print("throughput: skipped (wrk is not installed: apt-get install wrk)")
        return
    script = workdir / "post.lua"
    script.write_text(WRK_SCRIPT)

    def run(server: tuple[str, int], seconds: float) -> tuple[float, float]:
        url, pid = server
        before = cpu_seconds(pid)
        rate, count = wrk_run(url, seconds, 16, "-s", str(script))
        return rate, (cpu_seconds(pid) - before) / count

    run(ours, 1)  # warm both
    run(ceiling, 1)
    rates: dict[str, list[float]] = {"ours": [], "ceiling": []}
    cpu: dict[str, list[float]] = {"ours": [], "ceiling": []}
    for round_number in range(args.rounds):
        pair = [("ours", ours), ("ceiling", ceiling)]
        for name, server in pair if round_number % 2 == 0 else reversed(pair):
            rate, seconds = run(server, args.seconds)
            rates[name].append(rate)
            cpu[name].append(seconds)
    ratios = [m / c for m, c in zip(rates["ours"], rates["ceiling"], strict=True)]
    cpu_ratios = [c / m for m, c in zip(cpu["ours"], cpu["ceiling"], strict=True)]
    ratio, cpu_ratio = statistics.median(ratios), statistics.median(cpu_ratios)
    verdict = "ok" if cpu_ratio >= TARGET_RATIO else "UNDER"
    print(
        f"throughput, non-streamed, c=16: localrouter {statistics.median(rates['ours']):8.1f} "
        f"req/s, minimal aiohttp proxy {statistics.median(rates['ceiling']):8.1f} req/s, ratio "
        f"{ratio:.2f} (rounds: " + ", ".join(f"{r:.2f}" for r in ratios) + ")\n"
        f"  CPU per request: localrouter {statistics.median(cpu['ours']) * 1e6:6.1f} us, "
        f"minimal proxy {statistics.median(cpu['ceiling']) * 1e6:6.1f} us, ratio "
        f"{cpu_ratio:.3f} ({verdict}, target >= {TARGET_RATIO}; rounds: "
        + ", ".join(f"{r:.2f}" for r in cpu_ratios)
        + ")",
        flush=True,
    )


BODY = {"model": "bench/bench-model", "messages": [{"role": "user", "content": "Say hi"}]}


async def one(session: aiohttp.ClientSession, url: str, stream: bool) -> float:
    body = {**BODY, "stream": True} if stream else BODY
    started = time.perf_counter()
    async with session.post(url, json=body) as response:
        assert response.status == 200, await response.text()
        if stream:
            await response.content.readline()  # the first event has arrived
            elapsed = time.perf_counter() - started
            await response.read()
            return elapsed
        await response.read()
    return time.perf_counter() - started


async def measure(direct: str, proxied: str, args: argparse.Namespace) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(50):  # warm both paths (connections, caches)
            await one(session, direct, False)
            await one(session, proxied, False)
        for stream in (False, True):
            times: dict[str, list[float]] = {"direct": [], "proxied": []}
            for block in range(args.requests // args.block):
                order = [("direct", direct), ("proxied", proxied)]
                for name, url in order if block % 2 == 0 else reversed(order):
                    for _ in range(args.block):
                        times[name].append(await one(session, url, stream))
            report("streamed, first chunk" if stream else "non-streamed", times)


def report(what: str, times: dict[str, list[float]]) -> None:
    def pct(values: list[float], q: int) -> float:
        return statistics.quantiles(values, n=100)[q - 1] * 1000

    d50, d99 = pct(times["direct"], 50), pct(times["direct"], 99)
    p50, p99 = pct(times["proxied"], 50), pct(times["proxied"], 99)
    print(
        f"{what:<22} direct p50 {d50:6.3f} ms p99 {d99:6.3f} ms | via localrouter p50 "
        f"{p50:6.3f} ms p99 {p99:6.3f} ms | added p50 {p50 - d50:6.3f} ms p99 {p99 - d99:6.3f} ms",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--block", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only-throughput", action="store_true")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {1})  # the client on its own core; servers on the other
    upstream_port, daemon_port, ceiling_port = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory() as workdir:
        config = Path(workdir) / "config.yaml"
        config.write_text(
            "providers:\n"
            f"  - {{name: bench, type: openai_compatible, base_url: 'http://127.0.0.1:{upstream_port}/v1'}}\n"
            "model_cache: {persist: false}\n"
        )
        direct = f"http://127.0.0.1:{upstream_port}/v1/chat/completions"
        upstream = [sys.executable, str(HERE / "servers.py"), "chat", str(upstream_port)]
        daemon = (sys.executable, "-m", "localrouter", "serve", "--config", str(config))
        daemon += ("--port", str(daemon_port), "--log-level", "warning")
        ceiling = (sys.executable, str(HERE / "servers.py"), "minimal_proxy", str(ceiling_port))
        ceiling += (direct,)
        upstream_process = subprocess.Popen(pinned(LOAD_CORE, upstream))
        try:
            with process(*daemon) as ours, process(*ceiling) as minimal:
                asyncio.run(wait_for(f"http://127.0.0.1:{daemon_port}/v1/models"))
                proxied = f"http://127.0.0.1:{daemon_port}/v1/chat/completions"
                if not args.only_throughput:
                    print(
                        f"{args.requests} sequential requests per path and mode, "
                        f"blocks of {args.block}"
                    )
                    asyncio.run(measure(direct, proxied, args))
                against_ceiling(
                    (proxied, ours.pid),
                    (f"http://127.0.0.1:{ceiling_port}/v1/chat/completions", minimal.pid),
                    Path(workdir),
                    args,
                )
        finally:
            upstream_process.terminate()
            upstream_process.wait(timeout=10)


if __name__ == "__main__":
    main()
