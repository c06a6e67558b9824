"""Serving a cached GET /v1/models against the same-run ceiling.

For each list size, starts (as separate processes) a fake upstream of N models, the daemon in
front of it, and a minimal aiohttp server that returns the very bytes the daemon returns. Both
get the same load (wrk when installed, else an aiohttp client loop), with and without gzip, and
the script prints req/s for each and their ratio (localrouter / ceiling; 1.0 = no overhead).

Shared machines drift by tens of percent within seconds, so each case runs several short rounds,
alternating which server goes first, and reports the median of the per-round ratios. With
`taskset` available, both servers share one core and the load generator gets the other.

Each size runs twice: as anyone sees the list (no token), and as a client of `clients:` with an
allowlist (a token on every request, and the client's own variant of the list: half the
models and an alias).

    python bench/models.py [--models 50,2000] [--seconds 2] [--connections 32] [--rounds 7]
                           [--paths /v1/models,/api/tags,...]
"""

from __future__ import annotations

import argparse
import asyncio
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


async def fetch_bodies(url: str, headers: dict[str, str]) -> tuple[bytes, bytes]:
    async with aiohttp.ClientSession(auto_decompress=False, headers=headers) as session:
        async with session.get(url, headers={"Accept-Encoding": "identity"}) as response:
            raw = await response.read()
        async with session.get(url, headers={"Accept-Encoding": "gzip"}) as response:
            assert response.headers.get("Content-Encoding") == "gzip"
            zipped = await response.read()
    return raw, zipped


def load_with_wrk(
    url: str, gzip: bool, seconds: float, connections: int, headers: dict[str, str]
) -> float:
    sent = {**headers, **({"Accept-Encoding": "gzip"} if gzip else {})}
    flags = [flag for name, value in sent.items() for flag in ("-H", f"{name}: {value}")]
    return wrk_requests_per_second(url, seconds, connections, *flags)


def wrk_requests_per_second(url: str, seconds: float, connections: int, *extra: str) -> float:
    """wrk's Requests/sec, run on the load core; exits if any answer was not 2xx."""
    return wrk_run(url, seconds, connections, *extra)[0]


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
) -> float:
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
        return done / (time.monotonic() - started)


def measure(url: str, gzip: bool, args: argparse.Namespace, headers: dict[str, str]) -> float:
    if args.tool == "wrk":
        return load_with_wrk(url, gzip, args.seconds, args.connections, headers)
    return asyncio.run(load_with_aiohttp(url, gzip, args.seconds, args.connections, headers))


def paired_rounds(
    ours_url: str,
    ceiling_url: str,
    gzip: bool,
    args: argparse.Namespace,
    headers: dict[str, str],
) -> tuple[float, float, float]:
    """Median req/s of each server and the median of the per-round ratios."""
    ours, ceilings, ratios = [], [], []
    for round_number in range(args.rounds):
        if round_number % 2:
            ceiling = measure(ceiling_url, gzip, args, headers)
            mine = measure(ours_url, gzip, args, headers)
        else:
            mine = measure(ours_url, gzip, args, headers)
            ceiling = measure(ceiling_url, gzip, args, headers)
        ours.append(mine)
        ceilings.append(ceiling)
        ratios.append(mine / ceiling)
    return statistics.median(ours), statistics.median(ceilings), statistics.median(ratios)


def bench_size(
    count: int, args: argparse.Namespace, workdir: Path, *, client: bool
) -> list[tuple[bool, float, float]]:
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
    case = "client" if client else "anyone"
    python = sys.executable
    base = f"http://127.0.0.1:{daemon_port}"
    ceiling_url = f"http://127.0.0.1:{ceiling_port}/v1/models"
    results = []
    upstream = (python, str(HERE / "servers.py"), "upstream", str(upstream_port), str(count))
    daemon = (python, "-m", "localrouter", "serve", "--config", str(config))
    daemon += ("--port", str(daemon_port), "--log-level", "warning")
    with process(*upstream), process(*daemon):
        listed = count // 2 + 1 if client else count  # odd-numbered models, and the alias
        asyncio.run(wait_for(f"{base}/v1/models", expected_models=listed, headers=headers))
        for path in args.paths.split(","):
            daemon_url = base + path
            raw, zipped = asyncio.run(fetch_bodies(daemon_url, headers))
            body = workdir / f"models-{count}.json"
            body.write_bytes(raw)
            body.with_suffix(".json.gz").write_bytes(zipped)
            ceiling = (python, str(HERE / "servers.py"), "ceiling", str(ceiling_port), str(body))
            with process(*ceiling):
                asyncio.run(wait_for(ceiling_url))
                for gzip in (False, True):
                    ours, best, ratio = paired_rounds(daemon_url, ceiling_url, gzip, args, headers)
                    results.append((gzip, ours, best))
                    print(
                        f"{count:>5} models  {path:<17} {case:<6}  gzip={'on ' if gzip else 'off'}"
                        f"  bytes={len(zipped if gzip else raw):>8}  localrouter {ours:9.1f} "
                        f"req/s  ceiling {best:9.1f} req/s  ratio {ratio:.2f} (median of "
                        "per-round ratios)",
                        flush=True,
                    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--models", default="50,2000")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--tool", choices=["wrk", "aiohttp"], default=None)
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
        f"{args.rounds} rounds of {args.seconds:g} s per server and case"
    )
    with tempfile.TemporaryDirectory() as workdir:
        for count in (int(n) for n in args.models.split(",")):
            bench_size(count, args, Path(workdir), client=False)
            bench_size(count, args, Path(workdir), client=True)


if __name__ == "__main__":
    main()
