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
3. With --control, a third server in the same rounds: a daemon whose config has aliases,
   hidden models and clients with allowlists, called through an alias (itself an alias) with
   a client's token. Prints its own ratio, and its CPU per request against the plain
   daemon's, round by round: within 3 % counts as no measurable cost.

    python bench/proxy.py [--requests 2000] [--block 100] [--seconds 5] [--rounds 3] [--control]
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
from contextlib import ExitStack
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from models import (
    CLIENT_HEADERS,
    CLIENT_TOKEN,
    HERE,
    LOAD_CORE,
    cpu_seconds,
    free_port,
    pinned,
    process,
    wait_for,
    wrk_run,
)

TARGET_RATIO = 0.9
# With --control: the controlled daemon's CPU per request may differ from the plain one's by
# this much and still count as no measurable cost (the rounds of one run spread wider).
CONTROL_TOLERANCE = 0.03
POST_SCRIPT = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
{auth}wrk.body = '{{"model": "{model}", "messages": [{{"role": "user", "content": "Say hi"}}]}}'
"""
# The controlled daemon's config: an alias, hidden models and a client with an allowlist,
# called through the alias with the client's token.
CONTROL_CONFIG = f"""models:
  aliases: {{fast: bench/bench-model, coder: fast}}
  hide: ["*/tts-*", "*/whisper-*", "other/*"]
clients:
  - {{name: editor, token: {CLIENT_TOKEN}, allow: ["bench/*", "fast", "coder", "lab/*"]}}
  - {{name: other, token: other-token-0000, allow: ["lab/*"]}}
"""


class Server:
    """One proxy under load: where wrk sends its POSTs, its process, and what it sends."""

    def __init__(self, name: str, url: str, pid: int, model: str, token: str | None = None):
        self.name, self.url, self.pid = name, url, pid
        auth = f'wrk.headers["Authorization"] = "Bearer {token}"\n' if token else ""
        self.script = POST_SCRIPT.format(auth=auth, model=model)

    def run(self, workdir: Path, seconds: float) -> tuple[float, float]:
        """req/s and CPU seconds per request."""
        script = workdir / f"{self.name}.lua"
        script.write_text(self.script)
        before = cpu_seconds(self.pid)
        rate, count = wrk_run(self.url, seconds, 16, "-s", str(script))
        return rate, (cpu_seconds(self.pid) - before) / count


def against_ceiling(servers: list[Server], workdir: Path, args: argparse.Namespace) -> None:
    """Each server's req/s and CPU time per request, in rounds whose order turns (the last
    server is the ceiling)."""
    if not shutil.which("wrk"):
        print("throughput: skipped (wrk is not installed: apt-get install wrk)")
        return
    for server in servers:
        server.run(workdir, 1)  # warm
    rates: dict[str, list[float]] = {server.name: [] for server in servers}
    cpu: dict[str, list[float]] = {server.name: [] for server in servers}
    for round_number in range(args.rounds):
        turn = round_number % len(servers)
        for server in servers[turn:] + servers[:turn]:
            rate, seconds = server.run(workdir, args.seconds)
            rates[server.name].append(rate)
            cpu[server.name].append(seconds)
    ceiling = servers[-1].name

    def ratios(of: dict[str, list[float]], name: str, base: str, cpu_like: bool) -> list[float]:
        pairs = zip(of[name], of[base], strict=True)
        return [b / m if cpu_like else m / b for m, b in pairs]

    def listed(values: list[float]) -> str:
        return ", ".join(f"{v:.2f}" for v in values)

    for server in servers[:-1]:
        name = server.name
        rate_ratios = ratios(rates, name, ceiling, cpu_like=False)
        cpu_ratios = ratios(cpu, name, ceiling, cpu_like=True)
        cpu_ratio = statistics.median(cpu_ratios)
        verdict = "ok" if cpu_ratio >= TARGET_RATIO else "UNDER"
        print(
            f"throughput, non-streamed, c=16: {name} {statistics.median(rates[name]):8.1f} "
            f"req/s, minimal aiohttp proxy {statistics.median(rates[ceiling]):8.1f} req/s, "
            f"ratio {statistics.median(rate_ratios):.2f} (rounds: {listed(rate_ratios)})\n"
            f"  CPU per request: {name} {statistics.median(cpu[name]) * 1e6:6.1f} us, "
            f"minimal proxy {statistics.median(cpu[ceiling]) * 1e6:6.1f} us, ratio "
            f"{cpu_ratio:.3f} ({verdict}, target >= {TARGET_RATIO}; rounds: "
            f"{listed(cpu_ratios)})",
            flush=True,
        )
    if len(servers) == 3:
        plain, controlled = servers[0].name, servers[1].name
        same_round = ratios(cpu, controlled, plain, cpu_like=True)
        change = statistics.median(same_round)
        verdict = "ok" if change >= 1 - CONTROL_TOLERANCE else "COSTS MORE"
        print(
            f"  aliases + allowlist: CPU per request, plain / controlled {change:.3f} ({verdict}"
            f": within {CONTROL_TOLERANCE:.0%} counts as no measurable cost; rounds: "
            f"{listed(same_round)})",
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
    parser.add_argument(
        "--control",
        action="store_true",
        help="also a daemon with aliases, hidden models and client allowlists, called through "
        "an alias with a client's token; prints its CPU per request against the plain one's",
    )
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {1})  # the client on its own core; servers on the other
    upstream_port, daemon_port, ceiling_port = free_port(), free_port(), free_port()
    control_port = free_port()
    with tempfile.TemporaryDirectory() as workdir, ExitStack() as stack:
        providers = (
            "providers:\n"
            f"  - {{name: bench, type: openai_compatible, base_url: 'http://127.0.0.1:{upstream_port}/v1'}}\n"
            "model_cache: {persist: false}\n"
        )
        config = Path(workdir) / "config.yaml"
        config.write_text(providers)
        direct = f"http://127.0.0.1:{upstream_port}/v1/chat/completions"
        upstream = [sys.executable, str(HERE / "servers.py"), "chat", str(upstream_port)]
        upstream_process = subprocess.Popen(pinned(LOAD_CORE, upstream))
        stack.callback(upstream_process.wait, timeout=10)
        stack.callback(upstream_process.terminate)
        ours = stack.enter_context(process(*daemon_command(config, daemon_port)))
        ceiling = (sys.executable, str(HERE / "servers.py"), "minimal_proxy", str(ceiling_port))
        minimal = stack.enter_context(process(*ceiling, direct))
        asyncio.run(wait_for(f"http://127.0.0.1:{daemon_port}/v1/models"))
        proxied = f"http://127.0.0.1:{daemon_port}/v1/chat/completions"
        servers = [Server("localrouter", proxied, ours.pid, "bench/bench-model")]
        if args.control:
            controlled_config = Path(workdir) / "controlled.yaml"
            controlled_config.write_text(providers + CONTROL_CONFIG)
            controlled = stack.enter_context(
                process(*daemon_command(controlled_config, control_port))
            )
            asyncio.run(
                wait_for(f"http://127.0.0.1:{control_port}/v1/models", headers=CLIENT_HEADERS)
            )
            url = f"http://127.0.0.1:{control_port}/v1/chat/completions"
            servers.append(Server("controlled", url, controlled.pid, "coder", CLIENT_TOKEN))
        minimal_url = f"http://127.0.0.1:{ceiling_port}/v1/chat/completions"
        servers.append(Server("minimal", minimal_url, minimal.pid, "bench/bench-model"))
        if not args.only_throughput:
            print(f"{args.requests} sequential requests per path and mode, blocks of {args.block}")
            asyncio.run(measure(direct, proxied, args))
        against_ceiling(servers, Path(workdir), args)


def daemon_command(config: Path, port: int) -> tuple[str, ...]:
    return (
        *(sys.executable, "-m", "localrouter", "serve", "--config", str(config)),
        *("--port", str(port), "--log-level", "warning"),
    )


if __name__ == "__main__":
    main()
