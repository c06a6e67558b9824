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

    python bench/models.py [--models 50,2000] [--seconds 2] [--connections 32] [--rounds 7]
                           [--processes 3] [--paths /v1/models,/api/tags,...]
                           [--who anyone,client] [--gzip off,on]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp

HERE = Path(__file__).parent
SERVER_CORE, LOAD_CORE = 0, 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(core: int, command: list[str]) -> list[str]:
    """Run on one core when taskset exists and the machine has a second core for the load."""
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", str(core), *command]
    return command


@contextmanager
def process(*command: str) -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen(
        pinned(SERVER_CORE, list(command)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield child
    finally:
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()


async def wait_for(
    url: str, expected_models: int | None = None, headers: dict[str, str] | None = None
) -> None:
    deadline = time.monotonic() + 30.0
    async with aiohttp.ClientSession(headers=headers) as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        body = await response.json()
                        if expected_models is None or len(body["data"]) == expected_models:
                            return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise SystemExit(f"{url} did not become ready")


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


def wrk_run(url: str, seconds: float, connections: int, *extra: str) -> tuple[float, int]:
    """wrk's Requests/sec and request count, run on the load core; exits if any answer was
    not 2xx."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", *extra, url]
    output = subprocess.run(
        pinned(LOAD_CORE, command), capture_output=True, text=True, check=True
    ).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    count = re.search(r"(\d+) requests in", output)
    if not rate or not count or "Non-2xx" in output:
        raise SystemExit(f"wrk failed:\n{output}")
    return float(rate.group(1)), int(count.group(1))


def cpu_seconds(pid: int) -> float:
    """The user and system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


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


class Target:
    """A server under load: where to send, its process (for its CPU time), what to send."""

    def __init__(self, url: str, pid: int, headers: dict[str, str]) -> None:
        self.url, self.pid, self.headers = url, pid, headers

    def measure(self, gzip: bool, args: argparse.Namespace) -> tuple[float, float]:
        """req/s, and CPU seconds per request."""
        before = cpu_seconds(self.pid)
        if args.tool == "wrk":
            sent = {**self.headers, **({"Accept-Encoding": "gzip"} if gzip else {})}
            flags = [flag for name, value in sent.items() for flag in ("-H", f"{name}: {value}")]
            rate, count = wrk_run(self.url, args.seconds, args.connections, *flags)
        else:
            rate, count = asyncio.run(
                load_with_aiohttp(self.url, gzip, args.seconds, args.connections, self.headers)
            )
        return rate, (cpu_seconds(self.pid) - before) / count


class Paired:
    """Paired rounds, pooled over fresh process pairs: each server's median req/s and CPU per
    request, and the medians of the per-round ratios (req/s ours / ceiling; CPU ceiling /
    ours), overall and per process pair."""

    def __init__(self) -> None:
        self.rates: tuple[list[float], list[float]] = ([], [])
        self.cpu: tuple[list[float], list[float]] = ([], [])
        self.per_process: list[float] = []  # each pair's median CPU ratio

    def add_rounds(
        self, ours: Target, ceiling: Target, gzip: bool, args: argparse.Namespace
    ) -> None:
        first = len(self.cpu[0])
        for round_number in range(args.rounds):
            order = (1, 0) if round_number % 2 else (0, 1)
            for index in order:
                rate, seconds = (ours, ceiling)[index].measure(gzip, args)
                self.rates[index].append(rate)
                self.cpu[index].append(seconds)
        self.per_process.append(statistics.median(self.cpu_ratios[first:]))

    @property
    def cpu_ratios(self) -> list[float]:
        return [b / m for m, b in zip(*self.cpu, strict=True)]

    @property
    def cpu_ratio(self) -> float:
        return statistics.median(self.cpu_ratios)

    @property
    def rate_ratio(self) -> float:
        return statistics.median(m / b for m, b in zip(*self.rates, strict=True))

    def report(self, label: str, size: int, target: float) -> str:
        rates = [statistics.median(each) for each in self.rates]
        cpu = [statistics.median(each) * 1e6 for each in self.cpu]
        verdict = "ok" if self.cpu_ratio >= target else "UNDER"
        pairs = ", ".join(f"{ratio:.3f}" for ratio in self.per_process)
        return (
            f"{label}  bytes={size:>8}  localrouter {rates[0]:9.1f} req/s  ceiling "
            f"{rates[1]:9.1f} req/s  ratio {self.rate_ratio:.2f}\n"
            f"{'':>14}CPU per request: localrouter {cpu[0]:6.1f} us, ceiling {cpu[1]:6.1f} us, "
            f"ratio {self.cpu_ratio:.3f} ({verdict}, target >= {target}; "
            f"{len(self.per_process)} process pairs: {pairs})"
        )


def bench_size(count: int, args: argparse.Namespace, workdir: Path, *, client: bool) -> None:
    """Each process pair is fresh: a process's own memory layout moves its CPU per
    request by several percent for the whole of its life, the ceiling's too, so one pair can
    land either side of the target; pooling the rounds of several pairs measures the code."""
    paths = args.paths.split(",")
    codings = [coding == "on" for coding in args.gzip.split(",")]
    results = {(path, gzip): Paired() for path in paths for gzip in codings}
    sizes: dict[tuple[str, bool], int] = {}
    for _ in range(args.processes):
        sizes.update(run_pair(count, args, workdir, client, results))
    case = "client" if client else "anyone"
    for (path, gzip), paired in results.items():
        label = f"{count:>5} models  {path:<17} {case:<6}  gzip={'on ' if gzip else 'off'}"
        print(paired.report(label, sizes[path, gzip], target_for(path)), flush=True)


def run_pair(
    count: int,
    args: argparse.Namespace,
    workdir: Path,
    client: bool,
    results: dict[tuple[str, bool], Paired],
) -> dict[tuple[str, bool], int]:
    """Start the upstream, the daemon and, per path, its ceiling; add their rounds to
    `results`. Returns each case's body size."""
    upstream_port, daemon_port, ceiling_port = free_port(), free_port(), free_port()
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
    python = sys.executable
    base = f"http://127.0.0.1:{daemon_port}"
    ceiling_url = f"http://127.0.0.1:{ceiling_port}/v1/models"
    upstream = (python, str(HERE / "servers.py"), "upstream", str(upstream_port), str(count))
    daemon: tuple[str, ...] = (python, "-m", "localrouter", "serve", "--config", str(config))
    daemon += ("--port", str(daemon_port), "--log-level", "warning")
    sizes = {}
    with process(*upstream), process(*daemon) as daemon_process:
        listed = count // 2 + 1 if client else count  # odd-numbered models, and the alias
        asyncio.run(wait_for(f"{base}/v1/models", expected_models=listed, headers=headers))
        for path in dict.fromkeys(path for path, _ in results):  # in the order asked
            daemon_url = base + path
            body = workdir / f"models-{count}.json"
            zipped_size = save_answer(daemon_url, headers, body)
            ceiling = (python, str(HERE / "servers.py"), "ceiling", str(ceiling_port), str(body))
            with process(*ceiling) as ceiling_process:
                asyncio.run(wait_for(ceiling_url))
                ours = Target(daemon_url, daemon_process.pid, headers)
                best = Target(ceiling_url, ceiling_process.pid, headers)
                for (case_path, gzip), paired in results.items():
                    if case_path == path:
                        paired.add_rounds(ours, best, gzip, args)
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
    args = parser.parse_args()
    args.tool = args.tool or ("wrk" if shutil.which("wrk") else "aiohttp")
    print(
        f"load: {args.tool}, {args.connections} connections, "
        f"{args.processes} process pairs of {args.rounds} rounds of {args.seconds:g} s per "
        "server and case"
    )
    with tempfile.TemporaryDirectory() as workdir:
        for count in (int(n) for n in args.models.split(",")):
            for who in args.who.split(","):
                bench_size(count, args, Path(workdir), client=who == "client")


if __name__ == "__main__":
    main()
