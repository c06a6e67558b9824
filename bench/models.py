"""Serving a cached GET /v1/models against the same-run ceiling.

For each list size, starts (as separate processes) a fake upstream of N models, the daemon in
front of it, and a minimal aiohttp server that returns the very response the daemon returns:
its body and the headers it adds (ETag, Cache-Control, Vary, Content-Type, Content-Encoding;
aiohttp writes Date, Server and Content-Length for both). Both get the same load (wrk when
installed, else an aiohttp client loop), with and without gzip, and the script prints req/s
for each and their ratio (localrouter / ceiling; 1.0 = no overhead), and each server's own CPU
time per request (from /proc) with the ratio of those (ceiling / localrouter): what caps
throughput, and far steadier than req/s on a shared machine. The verdict is on the CPU ratio:
target >= 0.9 for /v1/models, as in bench/proxy.py, and >= 0.8 for the other clients' views.

Shared machines drift by tens of percent within seconds, so each case runs several short rounds,
alternating which server goes first, and reports the median of the per-round ratios. A
process's own memory layout also moves its CPU per request by several percent for
its whole life, the ceiling's as much as the daemon's, so the rounds come from several fresh
process pairs (--processes), pooled; each pair's median is printed too. With `taskset`
available, both servers share one core and the load generator gets the other.

Each size runs twice: as anyone sees the list (no token), and as a client of `clients:` with an
allowlist (a token on every request, and the client's own variant of the list: half the
models and an alias).

The daemon and its ceiling run on the same event loop (bench/harness.py). With --loops
uvloop,asyncio each process pair becomes a daemon and a ceiling on each loop, all in the same
rounds: each loop's daemon is judged against its own ceiling, and the uvloop gain is printed,
the daemon's CPU per request on asyncio / on uvloop (the ceiling's beside it, for what aiohttp
alone gains).

    python bench/models.py [--models 50,2000] [--seconds 2] [--connections 32] [--rounds 7]
                           [--processes 3] [--paths /v1/models,/api/tags,...]
                           [--who anyone,client] [--gzip off,on] [--loops uvloop,asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import aiohttp

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
    wrk_run,
)

CLIENT_TOKEN = "bench-client-token-5e2c"
CLIENT_HEADERS = {"Authorization": f"Bearer {CLIENT_TOKEN}"}


TARGET_RATIO = 0.9  # /v1/models
VIEW_TARGET_RATIO = 0.8  # the other clients' views (--paths)


def target_for(path: str) -> float:
    return TARGET_RATIO if path == "/v1/models" else VIEW_TARGET_RATIO


# What aiohttp writes on every response by itself, for the daemon and the ceiling alike.
AIOHTTP_OWN = frozenset({"date", "server", "content-length"})


Answers = dict[str, tuple[bytes, list[tuple[str, str]]]]  # by Accept-Encoding: body, headers


async def fetch_answers(url: str, headers: dict[str, str]) -> Answers:
    answers: Answers = {}
    async with aiohttp.ClientSession(auto_decompress=False, headers=headers) as session:
        for coding in ("identity", "gzip"):
            async with session.get(url, headers={"Accept-Encoding": coding}) as response:
                assert response.status == 200, response.status
                own = [(k, v) for k, v in response.headers.items() if k.lower() not in AIOHTTP_OWN]
                answers[coding] = (await response.read(), own)
    assert dict(answers["gzip"][1]).get("Content-Encoding") == "gzip"
    return answers


def save_answer(url: str, headers: dict[str, str], body: Path) -> int:
    """Write what `url` answers, for the ceiling to replay (bench/servers.py ceiling): the body
    as `body`, its gzip form beside it (.gz), and the headers of each (.headers.json). Returns
    the gzip form's size."""
    answers = asyncio.run(fetch_answers(url, headers))
    body.write_bytes(answers["identity"][0])
    body.with_suffix(body.suffix + ".gz").write_bytes(answers["gzip"][0])
    replayed = {coding: sent for coding, (_, sent) in answers.items()}
    body.with_suffix(body.suffix + ".headers.json").write_text(json.dumps(replayed))
    return len(answers["gzip"][0])


async def load_with_aiohttp(
    url: str, gzip: bool, seconds: float, connections: int, headers: dict[str, str]
) -> tuple[float, int]:
    headers = {**headers, "Accept-Encoding": "gzip" if gzip else "identity"}
    done = 0
    stop = time.monotonic() + seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal done
        while time.monotonic() < stop:
            async with session.get(url, headers=headers) as response:
                await response.read()
                assert response.status == 200
                done += 1

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        started = time.monotonic()
        await asyncio.gather(*(worker(session) for _ in range(connections)))
        return done / (time.monotonic() - started), done


def get_load(
    url: str, gzip: bool, headers: dict[str, str], args: argparse.Namespace
) -> Callable[[float], tuple[float, int]]:
    """GETs of `url` for some seconds (wrk, else an aiohttp loop): req/s and requests done."""

    def load(seconds: float) -> tuple[float, int]:
        if args.tool == "wrk":
            sent = {**headers, **({"Accept-Encoding": "gzip"} if gzip else {})}
            flags = [flag for name, value in sent.items() for flag in ("-H", f"{name}: {value}")]
            return wrk_run(url, seconds, args.connections, *flags)
        return asyncio.run(load_with_aiohttp(url, gzip, seconds, args.connections, headers))

    return load


def report(rounds: Rounds, label: str, loop: str, size: int, target: float) -> str:
    """One loop's daemon against its ceiling."""
    ours, best = f"localrouter {loop}", f"ceiling {loop}"
    rate_ratio = statistics.median(rounds.rate_ratios(ours, best))
    cpu_ratio = rounds.cpu_ratio(best, ours)
    verdict = "ok" if cpu_ratio >= target else "UNDER"
    pairs = rounds.per_batch(best, ours)
    return (
        f"{label}  {loop:<7}  bytes={size:>8}  localrouter {rounds.rate(ours):9.1f} req/s  "
        f"ceiling {rounds.rate(best):9.1f} req/s  ratio {rate_ratio:.2f}\n"
        f"{'':>14}CPU per request: localrouter {rounds.cpu_us(ours):6.1f} us, ceiling "
        f"{rounds.cpu_us(best):6.1f} us, ratio {cpu_ratio:.3f} ({verdict}, target >= {target}; "
        f"{len(pairs)} process pairs: {listed(pairs)})"
    )


def bench_size(count: int, args: argparse.Namespace, workdir: Path, *, client: bool) -> None:
    """Each process pair is fresh: a process's own memory layout moves its CPU per
    request by several percent for the whole of its life, the ceiling's too, so one pair can
    land either side of the target; pooling the rounds of several pairs measures the code."""
    paths = args.paths.split(",")
    codings = [coding == "on" for coding in args.gzip.split(",")]
    results = {(path, gzip): Rounds() for path in paths for gzip in codings}
    sizes: dict[tuple[str, bool], int] = {}
    for _ in range(args.processes):
        sizes.update(run_pair(count, args, workdir, client, results))
    case = "client" if client else "anyone"
    for (path, gzip), rounds in results.items():
        label = f"{count:>5} models  {path:<17} {case:<6}  gzip={'on ' if gzip else 'off'}"
        for loop in args.loop_list:
            print(report(rounds, label, loop, sizes[path, gzip], target_for(path)), flush=True)
        if len(args.loop_list) > 1:
            for who in ("localrouter", "ceiling"):
                names = {loop: f"{who} {loop}" for loop in args.loop_list}
                print(f"{'':>14}{rounds.loop_gain(names, who)}", flush=True)


def run_pair(
    count: int,
    args: argparse.Namespace,
    workdir: Path,
    client: bool,
    results: dict[tuple[str, bool], Rounds],
) -> dict[tuple[str, bool], int]:
    """Start the upstream, a daemon on each loop and, per path, a ceiling on each loop; add
    their rounds to `results`. Returns each case's body size."""
    upstream_port = free_port()
    config = workdir / f"config-{count}.yaml"
    upstream_url = f"http://127.0.0.1:{upstream_port}/v1"
    shaping = (
        "models: {aliases: {fast: bench/bolt/model-00001-instruct}}\n"
        f"clients: [{{name: editor, token: {CLIENT_TOKEN}, "
        "allow: ['bench/*[13579]-instruct', fast]}]\n"
    )
    config.write_text(
        f"providers:\n  - {{name: bench, type: openai_compatible, base_url: '{upstream_url}'}}\n"
        "model_cache: {provider_ttl_overrides: {bench: 86400}, persist: false}\n"
        + (shaping if client else "")
    )
    headers = CLIENT_HEADERS if client else {}
    loops: list[str] = args.loop_list
    listed_models = count // 2 + 1 if client else count  # odd-numbered models, and the alias
    sizes = {}
    with ExitStack() as stack:
        upstream = helper_command("upstream", upstream_port, count)
        stack.enter_context(start(upstream, port=upstream_port, loop=loops[0]))
        daemons: dict[str, Server] = {}
        for loop in loops:
            port = free_port()
            daemons[loop] = stack.enter_context(
                start(daemon_command(config, port), port=port, loop=loop)
            )
            daemons[loop].wait_until_answering(
                "/v1/models", expected_models=listed_models, headers=headers
            )
        for path in dict.fromkeys(path for path, _ in results):  # in the order asked
            body = workdir / f"models-{count}.json"
            zipped_size = save_answer(daemons[loops[0]].url(path), headers, body)
            with ExitStack() as ceilings:
                servers: list[tuple[str, str, Server]] = []
                for loop in loops:
                    port = free_port()
                    ceiling = ceilings.enter_context(
                        start(helper_command("ceiling", port, body), port=port, loop=loop)
                    )
                    servers.append((f"localrouter {loop}", path, daemons[loop]))
                    servers.append((f"ceiling {loop}", "/v1/models", ceiling))
                for (case_path, gzip), rounds in results.items():
                    if case_path == path:
                        targets = [
                            Target(name, server.pid, get_load(server.url(at), gzip, headers, args))
                            for name, at, server in servers
                        ]
                        rounds.run(targets, args.rounds, args.seconds)
                        sizes[path, gzip] = zipped_size if gzip else body.stat().st_size
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--models", default="50,2000")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=7, help="per process pair")
    parser.add_argument(
        "--processes", type=int, default=3, help="fresh daemon and ceiling pairs per case"
    )
    parser.add_argument("--tool", choices=["wrk", "aiohttp"], default=None)
    parser.add_argument(
        "--who", default="anyone,client", help="whose list to load: anyone's, a client's or both"
    )
    parser.add_argument("--gzip", default="off,on", help="without gzip, with it, or both")
    parser.add_argument(
        "--paths",
        default="/v1/models",
        help="comma-separated list paths to load, e.g. /v1/models,/api/tags,/api/v0/models,"
        "/v1/model/info,/model_group/info,/api/v1/models (each against its own ceiling)",
    )
    add_loops_argument(parser)
    args = parser.parse_args()
    args.tool = args.tool or ("wrk" if shutil.which("wrk") else "aiohttp")
    args.loop_list = loops_of(args)
    print(
        f"load: {args.tool}, {args.connections} connections, "
        f"{args.processes} process pairs of {args.rounds} rounds of {args.seconds:g} s per "
        f"server and case; event loops: {', '.join(args.loop_list)}"
    )
    with tempfile.TemporaryDirectory() as workdir:
        for count in (int(n) for n in args.models.split(",")):
            for who in args.who.split(","):
                bench_size(count, args, Path(workdir), client=who == "client")


if __name__ == "__main__":
    main()
