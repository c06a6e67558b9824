"""What a cached list view costs per request, counted in CPU instructions instead of timed.

The 2-core machines these benches run on swing by tens of percent from one second to the
next, which buries a few percent of difference in `bench/models.py`'s req/s. Instructions do
not swing: this runs the daemon and a ceiling (a minimal aiohttp server returning the very
response the daemon returned, body and headers: bench/servers.py) under valgrind's callgrind,
sends each the same requests one at a time, and prints instructions per request for both and
their ratio (ceiling / localrouter: 1.0 = no overhead). Needs valgrind (apt-get install
valgrind); slow (valgrind runs Python some 50 times slower), so keep --requests modest.

    python bench/instructions.py [--models 2000] [--requests 1000] [--gzip] [--client]
                                 [--fleet REDIS_URL] [--keep DIR] [PATH ...]
                                 # default: /v1/models

--fleet runs the daemon as one of a fleet sharing that Redis: what it does in the background
(events, counter reports) while the requests run is counted too.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from models import HERE, free_port, save_answer

TOKEN = "bench-client-token-5d1e"


def under_callgrind(out: Path, command: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p", *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def wait_for(url: str, headers: dict[str, str]) -> None:
    deadline = time.monotonic() + 180  # Python under valgrind starts slowly
    async with aiohttp.ClientSession(headers=headers) as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)
    raise SystemExit(f"{url} did not answer")


async def load(url: str, pid: int, name: str, count: int, headers: dict[str, str]) -> None:
    """Warm, mark the start (a dump), send `count` requests, dump them as part `name`."""
    async with aiohttp.ClientSession(auto_decompress=False, headers=headers) as session:
        for _ in range(200):
            async with session.get(url) as response:
                await response.read()
        await dump(pid, "warm")
        for _ in range(count):
            async with session.get(url) as response:
                assert response.status == 200
                await response.read()
        await dump(pid, name)


async def dump(pid: int, name: str) -> None:
    """Write what callgrind counted since the last dump, as a part named `name`."""
    control = await asyncio.create_subprocess_exec(
        "callgrind_control",
        "-d",
        name,
        str(pid),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    await control.wait()


def per_request(prefix: Path, pid: int, name: str, count: int) -> float:
    for part in prefix.parent.glob(f"{prefix.name}.{pid}.*"):
        text = part.read_text()
        if f"Trigger: dump {name}\n" in text:
            summary = next(line for line in text.splitlines() if line.startswith("summary:"))
            return int(summary.split()[1]) / count
    raise SystemExit(f"no callgrind dump named {name} for {pid}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("paths", nargs="*", default=["/v1/models"])
    parser.add_argument("--models", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--gzip", action="store_true")
    parser.add_argument("--client", action="store_true", help="as a client with an allowlist")
    parser.add_argument("--fleet", metavar="REDIS_URL", help="with fleet.redis_url set to this")
    parser.add_argument(
        "--keep",
        metavar="DIR",
        type=Path,
        help="copy the callgrind files here (callgrind_annotate)",
    )
    args = parser.parse_args()
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind is not installed: apt-get install valgrind")
    headers = {"Accept-Encoding": "gzip" if args.gzip else "identity"}
    if args.client:
        headers["Authorization"] = f"Bearer {TOKEN}"
    upstream_port, daemon_port, ceiling_port = free_port(), free_port(), free_port()
    python = sys.executable
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        config = workdir / "config.yaml"
        shaping = (
            f"clients: [{{name: editor, token: {TOKEN}, allow: ['bench/*[13579]-instruct']}}]\n"
        )
        config.write_text(
            "providers:\n  - {name: bench, type: openai_compatible, base_url: "
            f"'http://127.0.0.1:{upstream_port}/v1'}}\n"
            "model_cache: {provider_ttl_overrides: {bench: 86400}, persist: false}\n"
            + (shaping if args.client else "")
            + (f"fleet: {{redis_url: '{args.fleet}'}}\n" if args.fleet else "")
        )
        upstream = subprocess.Popen(
            [python, str(HERE / "servers.py"), "upstream", str(upstream_port), str(args.models)]
        )
        daemon_out = workdir / "daemon"
        serve = ["serve", "--config", str(config), "--port", str(daemon_port)]
        daemon = under_callgrind(
            daemon_out, [python, "-m", "localrouter", *serve, "--log-level", "warning"]
        )
        try:
            base = f"http://127.0.0.1:{daemon_port}"
            asyncio.run(wait_for(f"{base}/v1/models", headers))
            print(
                f"{args.models} models, {args.requests} requests each, gzip "
                f"{'on' if args.gzip else 'off'}, {'a client' if args.client else 'anyone'}"
                + (", fleet on" if args.fleet else "")
            )
            for number, path in enumerate(args.paths):
                body = workdir / f"body-{number}.json"
                save_answer(base + path, headers, body)
                ceiling_out = workdir / f"ceiling-{number}"
                command = [python, str(HERE / "servers.py"), "ceiling", str(ceiling_port)]
                ceiling = under_callgrind(ceiling_out, [*command, str(body)])
                ceiling_url = f"http://127.0.0.1:{ceiling_port}/v1/models"
                asyncio.run(wait_for(ceiling_url, headers))
                name = f"path{number}"
                asyncio.run(load(base + path, daemon.pid, name, args.requests, headers))
                asyncio.run(load(ceiling_url, ceiling.pid, name, args.requests, headers))
                ceiling.terminate()
                ceiling.wait()
                ours = per_request(daemon_out, daemon.pid, name, args.requests)
                best = per_request(ceiling_out, ceiling.pid, name, args.requests)
                print(
                    f"{path:<18} localrouter {ours / 1000:7.1f}k instructions/request, "
                    f"ceiling {best / 1000:7.1f}k, ratio {best / ours:.3f}",
                    flush=True,
                )
        finally:
            daemon.terminate()
            daemon.wait()
            upstream.terminate()
            upstream.wait()
            if args.keep is not None:
                args.keep.mkdir(parents=True, exist_ok=True)
                for part in workdir.iterdir():
                    if part.name.startswith(("daemon.", "ceiling-")):
                        shutil.copy(part, args.keep / part.name)


if __name__ == "__main__":
    main()
