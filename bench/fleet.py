"""A fleet of daemons on one Redis: upstream calls, and what sharing costs a cached list.

1. Upstream calls. N daemons (real processes) start cold in front of the same instances (an
   upstream that takes --upstream-delay to answer, as a cloud API does), then M requests for
   /v1/models are spread over them at once. Run twice: each daemon alone, then all sharing a
   redis-server this script starts. Prints the upstream calls per instance in each case.
2. Cached /v1/models with `fleet` on, against the same daemon with it off, in the same run
   (paired rounds, alternating which goes first): req/s of each, and each daemon's CPU time per
   request (from /proc) with the median of the per-round ratios (off / on), the verdict. The
   hot path never touches Redis, so the target is a ratio >= 0.9. Both daemons and their
   upstream run on the same event loop (bench/harness.py); --loops uvloop,asyncio measures on
   each in turn.

    python bench/fleet.py [--daemons 3] [--requests 30] [--instances 2] [--models 2000]
                          [--rounds 7] [--seconds 2] [--loops uvloop,asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).parent))
from harness import (
    Rounds,
    Server,
    Target,
    add_loops_argument,
    daemon_command,
    free_port,
    helper_command,
    listed,
    loops_of,
    start,
)
from models import get_load
from servers import fake_models

TARGET = 0.9


class CountingUpstream:
    def __init__(self, models: int, delay: float) -> None:
        self.body = fake_models(models)
        self.delay = delay
        self.calls = 0
        self.port = free_port()

    async def list_models(self, request: web.Request) -> web.Response:
        self.calls += 1
        await asyncio.sleep(self.delay)
        return web.Response(body=self.body, content_type="application/json")

    async def start(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_get("/v1/models", self.list_models)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        return runner


@contextmanager
def redis_server(directory: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("needs redis-server: apt-get install redis-server")
    port = free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)]
    command += ["--save", "", "--appendonly", "no"]
    with start(command, port=port, ready=None, core=None):
        yield f"redis://127.0.0.1:{port}/0"


def write_config(path: Path, ports: list[int], redis_url: str | None, prefix: str) -> None:
    lines = ["server: {models_deadline_seconds: 60}", "providers:"]
    for index, port in enumerate(ports):
        url = f"http://127.0.0.1:{port}/v1"
        lines.append(f"  - {{name: lab{index}, type: openai_compatible, base_url: '{url}'}}")
    lines.append("model_cache: {default_ttl_seconds: 86400, persist: false}")
    if redis_url is not None:
        lines.append(f"fleet: {{redis_url: '{redis_url}', key_prefix: '{prefix}'}}")
    path.write_text("\n".join(lines) + "\n")


def start_daemons(
    stack: ExitStack, workdir: Path, config: Path, count: int, loop: str | None = None
) -> list[Server]:
    """`count` daemons of `config`, each with a home of its own; not yet waited for."""
    daemons = []
    for index in range(count):
        port = free_port()
        home = str(workdir / f"home-{config.stem}-{index}")
        env = {"HOME": home, "XDG_CACHE_HOME": home}
        command = daemon_command(config, port)
        daemons.append(
            stack.enter_context(start(command, port=port, ready=None, env=env, loop=loop))
        )
    return daemons


async def count_calls(
    args: argparse.Namespace, workdir: Path, redis_url: str | None, case: str, loop: str
) -> list[int]:
    upstreams = [CountingUpstream(args.models, args.upstream_delay) for _ in range(args.instances)]
    runners = [await upstream.start() for upstream in upstreams]
    config = workdir / f"{case}.yaml"
    write_config(config, [u.port for u in upstreams], redis_url, f"bench-{case}:")
    with ExitStack() as stack:
        daemons = start_daemons(stack, workdir, config, args.daemons, loop)
        await asyncio.gather(*(daemon.answering() for daemon in daemons))
        async with aiohttp.ClientSession() as session:

            async def listed_models(daemon: Server) -> int:
                async with session.get(daemon.url("/v1/models")) as reply:
                    return len((await reply.json())["data"])

            counts = await asyncio.gather(
                *(listed_models(daemons[i % len(daemons)]) for i in range(args.requests))
            )
        expected = args.models * args.instances
        if any(count != expected for count in counts):
            raise SystemExit(f"{case}: some answers lacked models: {sorted(set(counts))}")
    for runner in runners:
        await runner.cleanup()
    return [upstream.calls for upstream in upstreams]


def throughput(args: argparse.Namespace, workdir: Path, redis_url: str, loop: str) -> None:
    """A daemon with the fleet on and one with it off, on `loop`, in the same rounds."""
    upstream_port = free_port()
    with ExitStack() as stack:
        upstream = helper_command("upstream", upstream_port, args.models)
        stack.enter_context(start(upstream, port=upstream_port, loop=loop))
        urls = {}
        pids = {}
        for shared in (False, True):
            config = workdir / f"throughput-{'on' if shared else 'off'}-{loop}.yaml"
            write_config(config, [upstream_port], redis_url if shared else None, "bench-hot:")
            [daemon] = start_daemons(stack, workdir, config, 1, loop)
            urls[shared], pids[shared] = daemon.url("/v1/models"), daemon.pid
            daemon.wait_until_answering("/v1/models", expected_models=args.models)
        for gzip in (False, True):
            targets = [
                Target(
                    "on" if shared else "off", pids[shared], get_load(urls[shared], gzip, {}, args)
                )
                for shared in (False, True)
            ]
            rounds = Rounds()
            rounds.run(targets, args.rounds, args.seconds)
            rate_ratio = statistics.median(rounds.rate_ratios("on", "off"))
            cpu_ratios = rounds.cpu_ratios("off", "on")
            ratio = statistics.median(cpu_ratios)
            print(
                f"cached /v1/models ({args.models} models, gzip={'on ' if gzip else 'off'}, "
                f"{loop}): fleet on {rounds.rate('on'):9.1f} req/s, off {rounds.rate('off'):9.1f} "
                f"req/s, ratio {rate_ratio:.2f}\n"
                f"  CPU per request: fleet on {rounds.cpu_us('on'):6.1f} us, off "
                f"{rounds.cpu_us('off'):6.1f} us, ratio off / on {ratio:.3f} (target >= {TARGET}: "
                f"{'met' if ratio >= TARGET else 'NOT met'}; rounds: {listed(cpu_ratios)})",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--daemons", type=int, default=3)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--models", type=int, default=2000)
    parser.add_argument("--upstream-delay", type=float, default=0.3)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--tool", choices=["wrk", "aiohttp"], default=None)
    add_loops_argument(parser)
    args = parser.parse_args()
    args.tool = args.tool or ("wrk" if shutil.which("wrk") else "aiohttp")
    loops = loops_of(args)
    with tempfile.TemporaryDirectory() as workdir, redis_server(Path(workdir)) as redis_url:
        work = Path(workdir)
        alone = asyncio.run(count_calls(args, work, None, "alone", loops[0]))
        shared = asyncio.run(count_calls(args, work, redis_url, "fleet", loops[0]))
        print(
            f"{args.daemons} daemons x {args.requests} cold requests, {args.instances} "
            f"instances: upstream calls per instance without redis {alone}, with redis "
            f"{shared}",
            flush=True,
        )
        for loop in loops:
            throughput(args, work, redis_url, loop)


if __name__ == "__main__":
    main()
