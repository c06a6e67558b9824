"""The latency localrouter's proxy adds over calling the upstream directly.

Starts (as separate processes) a chat upstream that answers at once and the daemon in front of
it, then sends the same requests, one at a time, to both: alternating blocks so that drift hits
both alike. Prints p50 and p99 of each and the difference, non-streamed (whole answer) and
streamed (time to the first chunk).

    python bench/proxy.py [--requests 2000] [--block 100]
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
from models import HERE, free_port, process, wait_for

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
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {1})  # the client on its own core; servers on the other
    upstream_port, daemon_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as workdir:
        config = Path(workdir) / "config.yaml"
        config.write_text(
            "providers:\n"
            f"  - {{name: bench, type: openai_compatible, base_url: 'http://127.0.0.1:{upstream_port}/v1'}}\n"
            "model_cache: {persist: false}\n"
        )
        upstream = (sys.executable, str(HERE / "servers.py"), "chat", str(upstream_port))
        daemon = (sys.executable, "-m", "localrouter", "serve", "--config", str(config))
        daemon += ("--port", str(daemon_port), "--log-level", "warning")
        with process(*upstream), process(*daemon):
            asyncio.run(wait_for(f"http://127.0.0.1:{daemon_port}/v1/models"))
            print(f"{args.requests} sequential requests per path and mode, blocks of {args.block}")
            asyncio.run(
                measure(
                    f"http://127.0.0.1:{upstream_port}/v1/chat/completions",
                    f"http://127.0.0.1:{daemon_port}/v1/chat/completions",
                    args,
                )
            )


if __name__ == "__main__":
    main()
