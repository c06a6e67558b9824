"""A fleet of daemons on one Redis: upstream calls, and what sharing costs a cached list.

1. Upstream calls. N daemons (real processes) start cold in front of the same instances (an
   upstream that takes --upstream-delay to answer, as a cloud API does), then M requests for
   /v1/models are spread over them at once. Run twice: each daemon alone, then all sharing a
   redis-server this script starts. Prints the upstream calls per instance in each case.
2. Cached /v1/models with `fleet` on, against the same daemon with it off, in the same run
   (paired rounds, alternating which goes first; the median of the per-round ratios). The hot
   path never touches Redis, so the target is a ratio >= 0.9.

    python bench/fleet.py [--daemons 3] [--requests 30] [--instances 2] [--models 2000]
                          [--rounds 7] [--seconds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).parent))
from models import free_port, measure, process, wait_for
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
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        child.terminate()
        child.wait()


def write_config(path: Path, ports: list[int], redis_url: str | None, prefix: str) -> None:
    lines = ["server: {models_deadline_seconds: 60}", "providers:"]
    for index, port in enumerate(ports):
        url = f"http://127.0.0.1:{port}/v1"
        lines.append(f"  - {{name: lab{index}, type: openai_compatible, base_url: '{url}'}}")
    lines.append("model_cache: {default_ttl_seconds: 86400, persist: false}")
    if redis_url is not None:
        lines.append(f"fleet: {{redis_url: '{redis_url}', key_prefix: '{prefix}'}}")
    path.write_text("\n".join(lines) + "\n")


def start_daemons(stack: ExitStack, workdir: Path, config: Path, count: int) -> list[str]:
    urls = []
    for index in range(count):
        port = free_port()
        home = workdir / f"home-{config.stem}-{index}"
        command = (sys.executable, "-m", "localrouter", "serve", "--config", str(config))
        command += ("--port", str(port), "--log-level", "warning")
        stack.enter_context(process("env", f"HOME={home}", f"XDG_CACHE_HOME={home}", *command))
        urls.append(f"http://127.0.0.1:{port}")
    return urls


async def count_calls(
    args: argparse.Namespace, workdir: Path, redis_url: str | None, case: str
) -> list[int]:
    upstreams = [CountingUpstream(args.models, args.upstream_delay) for _ in range(args.instances)]
    runners = [await upstream.start() for upstream in upstreams]
    config = workdir / f"{case}.yaml"
    write_config(config, [u.port for u in upstreams], redis_url, f"bench-{case}:")
    with ExitStack() as stack:
        urls = start_daemons(stack, workdir, config, args.daemons)
        await asyncio.gather(*(wait_for(f"{url}/health") for url in urls))
        async with aiohttp.ClientSession() as session:

            async def listed(url: str) -> int:
                async with session.get(f"{url}/v1/models") as reply:
                    return len((await reply.json())["data"])

            counts = await asyncio.gather(
                *(listed(urls[i % len(urls)]) for i in range(args.requests))
            )
        expected = args.models * args.instances
        if any(count != expected for count in counts):
            raise SystemExit(f"{case}: some answers lacked models: {sorted(set(counts))}")
    for runner in runners:
        await runner.cleanup()
    return [upstream.calls for upstream in upstreams]


def throughput(args: argparse.Namespace, workdir: Path, redis_url: str) -> None:
    upstream_port = free_port()
    with ExitStack() as stack:
        upstream = (sys.executable, str(Path(__file__).with_name("servers.py")), "upstream")
        stack.enter_context(process(*upstream, str(upstream_port), str(args.models)))
        urls = {}
        for shared in (False, True):
            config = workdir / f"throughput-{'on' if shared else 'off'}.yaml"
            write_config(config, [upstream_port], redis_url if shared else None, "bench-hot:")
            [url] = start_daemons(stack, workdir, config, 1)
            urls[shared] = f"{url}/v1/models"
            asyncio.run(wait_for(urls[shared], expected_models=args.models))
        for gzip in (False, True):
            ratios, on_rates, off_rates = [], [], []
            for round_number in range(args.rounds):
                order = (True, False) if round_number % 2 else (False, True)
                rates = {shared: measure(urls[shared], gzip, args, {}) for shared in order}
                on_rates.append(rates[True])
                off_rates.append(rates[False])
                ratios.append(rates[True] / rates[False])
            ratio = statistics.median(ratios)
            print(
                f"cached /v1/models ({args.models} models, gzip={'on ' if gzip else 'off'}): "
                f"fleet on {statistics.median(on_rates):9.1f} req/s, off "
                f"{statistics.median(off_rates):9.1f} req/s, ratio {ratio:.2f} "
                f"(target >= {TARGET}: {'met' if ratio >= TARGET else 'NOT met'})",
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
    args = parser.parse_args()
    args.tool = args.tool or ("wrk" if shutil.which("wrk") else "aiohttp")
    with tempfile.TemporaryDirectory() as workdir, redis_server(Path(workdir)) as redis_url:
        work = Path(workdir)
        alone = asyncio.run(count_calls(args, work, None, "alone"))
        shared = asyncio.run(count_calls(args, work, redis_url, "fleet"))
        print(
            f"{args.daemons} daemons x {args.requests} cold requests, {args.instances} "
            f"instances: upstream calls per instance without redis {alone}, with redis "
            f"{shared}",
            flush=True,
        )
        throughput(args, work, redis_url)


if __name__ == "__main__":
    main()
