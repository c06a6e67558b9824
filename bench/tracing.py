"""What a collector that is down or slow adds to each answer's latency (issue 37: nothing
beyond noise), in the same run.

Five daemons in front of the same chat upstream (bench/servers.py chat), each with the usage
ledger on, differing only in `telemetry:`:
- "healthy" and "healthy again": spans exported to a collector (bench/servers.py collector)
  that answers at once; the second is the run's noise, two identical daemons;
- "down": spans exported to a closed loopback port;
- "slow": spans exported to a collector that answers each export later than the exporter's
  timeout (telemetry.timeout_seconds), so that every export fails only after holding the
  exporter's thread that long;
- "off": no tracing, for what the spans themselves cost (printed, not judged).
Requests go one at a time, in blocks of --block, each block to the next daemon in turn (the
order turning each round), whole answers (time to the whole answer) and streamed ones (time
to the first event). For "down" and "slow", the added p50 over "healthy" must stay within
the noise (the added p50 of "healthy again", either way) plus SLACK_MS; p99 is printed beside
it. After the run, the daemons must have done what they were set to: "down" logged its failed
exports, and both collectors received exports.

    python bench/tracing.py [--requests 2000] [--block 50] [--loops uvloop,asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from harness import (
    LOAD_CORE,
    Server,
    add_loops_argument,
    chat_instance,
    daemon_command,
    free_port,
    helper_command,
    loops_of,
    start,
)
from proxy import one

TIMEOUT_SECONDS = 1.0  # the exporter's
COLLECTOR_DELAY_SECONDS = 3.0  # the slow collector's answer: past the exporter's timeout
SLACK_MS = 0.05
NOT_EXPORTED = "telemetry.export_failed"  # the daemon's warning (telemetry/otel.py)


def config(upstream: int, database: Path, endpoint: str | None) -> str:
    telemetry = (
        f"telemetry: {{otlp_endpoint: '{endpoint}', timeout_seconds: {TIMEOUT_SECONDS}}}\n"
        if endpoint
        else ""
    )
    return (
        chat_instance(upstream)
        + f"usage: {{path: '{database}'}}\n"
        + "discovery: {enabled: false}\n"
        + telemetry
    )


async def measure(
    daemons: dict[str, Server], requests: int, block: int
) -> dict[bool, dict[str, list[float]]]:
    urls = {kind: server.url("/v1/chat/completions") for kind, server in daemons.items()}
    times: dict[bool, dict[str, list[float]]] = {}
    async with aiohttp.ClientSession() as session:
        for url in urls.values():
            for _ in range(50):  # warm every path (connections, caches, the exporter)
                await one(session, url, False)
        for stream in (False, True):
            times[stream] = {kind: [] for kind in urls}
            order = list(urls)
            for turn in range(requests // block):
                for kind in order[turn % len(order) :] + order[: turn % len(order)]:
                    for _ in range(block):
                        times[stream][kind].append(await one(session, urls[kind], stream))
    return times


def p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] * 1000.0


def verdicts(times: dict[str, list[float]], what: str, loop: str) -> tuple[str, bool]:
    base50, base99 = p(times["healthy"], 50), p(times["healthy"], 99)
    noise = abs(p(times["healthy again"], 50) - base50)
    lines = [
        f"{what}, {loop}: a healthy collector p50 {base50:.3f} ms, p99 {base99:.3f} ms; "
        f"noise p50 {noise:.3f} ms"
    ]
    held = True
    for kind in ("healthy again", "down", "slow", "off"):
        added50, added99 = p(times[kind], 50) - base50, p(times[kind], 99) - base99
        judged = kind in ("down", "slow")
        ok = not judged or added50 <= noise + SLACK_MS
        held &= ok
        verdict = f" ({'ok' if ok else 'OVER'}, within {noise + SLACK_MS:.3f})" if judged else ""
        lines.append(f"  {kind:13}: added p50 {added50:+.3f} ms{verdict}, p99 {added99:+.3f} ms")
    return "\n".join(lines), held


def said(server: Server) -> str:
    server.stderr.seek(0)
    return server.stderr.read().decode(errors="replace")


async def received(collector: Server) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(collector.url("/received")) as response,
    ):
        return int((await response.json())["received"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="per daemon and kind of answer")
    parser.add_argument("--block", type=int, default=50)
    add_loops_argument(parser)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {LOAD_CORE})  # the client on its own core; servers on the other
    held = True
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        for loop in loops_of(args):
            with ExitStack() as stack:
                upstream, closed = free_port(), free_port()
                stack.enter_context(
                    start(
                        helper_command("chat", upstream), port=upstream, loop=loop, core=LOAD_CORE
                    )
                )
                collectors = {}
                for name, delay in (("healthy", 0.0), ("slow", COLLECTOR_DELAY_SECONDS)):
                    port = free_port()
                    collectors[name] = stack.enter_context(
                        start(
                            helper_command("collector", port, delay),
                            port=port,
                            loop=loop,
                            core=LOAD_CORE,
                        )
                    )
                endpoints = {
                    "healthy": collectors["healthy"].base,
                    "healthy again": collectors["healthy"].base,
                    "down": f"http://127.0.0.1:{closed}",
                    "slow": collectors["slow"].base,
                    "off": None,
                }
                daemons = {}
                for kind, endpoint in endpoints.items():
                    path = workdir / f"{loop}-{kind.replace(' ', '-')}.yaml"
                    database = workdir / f"{loop}-{kind.replace(' ', '-')}.sqlite3"
                    path.write_text(config(upstream, database, endpoint))
                    port = free_port()
                    daemons[kind] = stack.enter_context(
                        start(daemon_command(path, port), port=port, loop=loop)
                    )
                times = asyncio.run(measure(daemons, args.requests, args.block))
                for stream, what in ((False, "whole answer"), (True, "first streamed event")):
                    text, ok = verdicts(times[stream], what, loop)
                    held &= ok
                    print(text, flush=True)
                asyncio.run(asyncio.sleep(TIMEOUT_SECONDS * 2 + 5))  # a batch is due
                if NOT_EXPORTED not in said(daemons["down"]):
                    raise SystemExit("the daemon tracing to a closed port never said it failed")
                got = {name: asyncio.run(received(server)) for name, server in collectors.items()}
                if not all(got.values()):
                    raise SystemExit(f"a collector received no export: {got}")
                print(f"  checked: 'down' said {NOT_EXPORTED}; exports received: {got}")
    raise SystemExit(0 if held else 1)


if __name__ == "__main__":
    main()
