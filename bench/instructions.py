"""What a cached list view costs per request, counted in CPU instructions instead of timed.

The 2-core machines these benches run on swing by tens of percent from one second to the
next, which buries a few percent of difference in `bench/models.py`'s req/s. Instructions do
not swing: this runs the daemon and a ceiling (a minimal aiohttp server returning the very
response the daemon returned, body and headers: bench/servers.py) under valgrind's callgrind,
sends each the same requests one at a time, and prints instructions per request for both and
their ratio (ceiling / localrouter: 1.0 = no overhead). Needs valgrind (apt-get install
valgrind); slow (valgrind runs Python some 50 times slower), so keep --requests modest.

    python bench/instructions.py [--models 2000] [--requests 1000] [--gzip] [--client]
                                 [--fleet REDIS_URL] [--keep DIR] [--loops uvloop,asyncio]
                                 [PATH ...]
                                 # default: /v1/models
    python bench/instructions.py --proxy [--ledger] [--requests 1000] [--loops ...]
    python bench/instructions.py --limits [--requests 600] [--loops ...]

--proxy counts a whole chat call instead (bench/proxy.py's request, 16 in flight): the daemon
(its ledger off, as bench/proxy.py's plain daemon, unless --ledger) against the minimal aiohttp
proxy (bench/servers.py minimal_proxy), in front of the same chat upstream. Each is measured in
two phases: they differ by what the cyclic collector happened to do (up to 40k a call).

--limits counts one daemon (ledger on) with bench/proxy.py's limited client (the issue's
example limits) and free one: each sends --requests whole chat calls, 16 in flight, in turn and
twice; printed, each client's instructions a call (the lower of its two phases) and free /
limited.

--fleet runs the daemon as one of a fleet sharing that Redis: what it does in the background
(events, counter reports) while the requests run is counted too. The daemon and the ceiling run
on the same event loop (bench/harness.py); --loops uvloop,asyncio counts on each in turn.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from harness import (
    Server,
    add_loops_argument,
    chat_instance,
    daemon_command,
    free_port,
    helper_command,
    loops_of,
    post_in_flight,
    start,
)
from models import save_answer
from proxy import BODY, CALL_PATH, FREE_TOKEN, LIMIT_SETS, LIMITED_TOKEN, limits_daemon_config

TOKEN = "bench-client-token-5d1e"


def under_callgrind(out: Path, command: list[str]) -> list[str]:
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p", *command]


# Python under valgrind starts slowly: wait longer, and ask less often.
STARTING_SECONDS, ASKING_EVERY = 180.0, 0.5


def started(stack: ExitStack, command: list[str], port: int, loop: str) -> Server:
    """`command` under callgrind, on no fixed core (as counted, not timed), stopped on exit."""
    server = stack.enter_context(start(command, port=port, ready=None, loop=loop, core=None))
    server.wait_until_answering(within=STARTING_SECONDS, interval=ASKING_EVERY)
    return server


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
        help="copy the callgrind files here, a folder for each loop (callgrind_annotate)",
    )
    parser.add_argument(
        "--proxy", action="store_true", help="a whole chat call, against the minimal proxy"
    )
    parser.add_argument("--ledger", action="store_true", help="with --proxy: the ledger on")
    parser.add_argument(
        "--limits", action="store_true", help="a limited client's chat call against a free one's"
    )
    add_loops_argument(parser)
    args = parser.parse_args()
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind is not installed: apt-get install valgrind")
    for loop in loops_of(args):
        (count_limits_on if args.limits else count_proxy_on if args.proxy else count_on)(loop, args)


PROXY_IN_FLIGHT = 16


async def post(url: str, pid: int, names: list[str], count: int, token: str | None = None) -> None:
    """bench/proxy.py's chat call `count` times, PROXY_IN_FLIGHT at a time, after a warm-up,
    in phases dumped as `names` (with `token` as the bearer token, when given)."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with aiohttp.ClientSession(headers=headers) as session:

        async def calls(how_many: int) -> None:
            await post_in_flight(session, url, BODY, how_many, PROXY_IN_FLIGHT)

        await calls(200)
        await asyncio.sleep(1.0)  # with --ledger: its writer catches up, counted with its calls
        await dump(pid, "warm")
        for name in names:
            await calls(count)
            await asyncio.sleep(1.0)
            await dump(pid, name)


def count_proxy_on(loop: str, args: argparse.Namespace) -> None:
    upstream_port, daemon_port, minimal_port = free_port(), free_port(), free_port()
    phases = ["proxy1", "proxy2"]
    with tempfile.TemporaryDirectory() as folder, ExitStack() as stack:
        workdir = Path(folder)
        if args.keep is not None:
            stack.callback(keep, workdir, args.keep / loop)
        config = workdir / "config.yaml"
        usage = (
            f"usage: {{path: '{workdir / 'usage.sqlite3'}'}}\n"
            if args.ledger
            else ("usage: {enabled: false}\n")
        )
        # No discovery: a probe round landing in one phase and not the other is not the proxy.
        config.write_text(chat_instance(upstream_port) + "discovery: {enabled: false}\n" + usage)
        upstream = helper_command("chat", upstream_port)
        stack.enter_context(start(upstream, port=upstream_port, loop=loop, core=None))
        print(
            f"a whole chat call, {args.requests} in each of {len(phases)} phases, "
            f"{PROXY_IN_FLIGHT} in flight, ledger {'on' if args.ledger else 'off'}, {loop}",
            flush=True,
        )
        counted: dict[str, list[float]] = {}
        for what, port, command in (
            ("localrouter", daemon_port, daemon_command(config, daemon_port)),
            (
                "minimal proxy",
                minimal_port,
                helper_command(
                    "minimal_proxy", minimal_port, f"http://127.0.0.1:{upstream_port}{CALL_PATH}"
                ),
            ),
        ):
            out = workdir / ("daemon" if port == daemon_port else "ceiling-proxy")
            with ExitStack() as one:
                server = started(one, under_callgrind(out, command), port, loop)
                asyncio.run(post(server.url(CALL_PATH), server.pid, phases, args.requests))
                pid = server.pid
                counted[what] = [per_request(out, pid, name, args.requests) for name in phases]
        ours, best = min(counted["localrouter"]), min(counted["minimal proxy"])
        shown = thousands(counted)
        print(
            f"localrouter {shown['localrouter']} instructions/call, minimal proxy "
            f"{shown['minimal proxy']}; ratio of the lower ones {best / ours:.3f}",
            flush=True,
        )


def thousands(counted: dict[str, list[float]]) -> dict[str, str]:
    """Each one's counts a call, in thousands: "667.0k, 667.4k"."""
    return {what: ", ".join(f"{x / 1000:.1f}k" for x in c) for what, c in counted.items()}


def count_limits_on(loop: str, args: argparse.Namespace) -> None:
    upstream_port, port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as folder, ExitStack() as stack:
        workdir = Path(folder)
        if args.keep is not None:
            stack.callback(keep, workdir, args.keep / loop)
        config = workdir / "config.yaml"
        usage = f"usage: {{path: '{workdir / 'usage.sqlite3'}'}}\n"
        # No discovery: a probe round landing in one phase and not the other is not the call.
        providers = chat_instance(upstream_port) + "discovery: {enabled: false}\n"
        config.write_text(limits_daemon_config(providers, usage, LIMIT_SETS["example"]))
        upstream = helper_command("chat", upstream_port)
        stack.enter_context(start(upstream, port=upstream_port, loop=loop, core=None))
        out = workdir / "daemon"
        server = started(stack, under_callgrind(out, daemon_command(config, port)), port, loop)
        print(
            f"a whole chat call, {args.requests} in each of 2 phases per client, "
            f"{PROXY_IN_FLIGHT} in flight, ledger on, the example limits, {loop}",
            flush=True,
        )
        counted: dict[str, list[float]] = {}
        for phase in (1, 2):
            for client, token in (("limited", LIMITED_TOKEN), ("free", FREE_TOKEN)):
                name = f"{client}{phase}"
                asyncio.run(post(server.url(CALL_PATH), server.pid, [name], args.requests, token))
                count = per_request(out, server.pid, name, args.requests)
                counted.setdefault(client, []).append(count)
    limited, free = min(counted["limited"]), min(counted["free"])
    shown = thousands(counted)
    print(
        f"limited client {shown['limited']} instructions/call, free client {shown['free']}; "
        f"{(limited - free) / 1000:.1f}k more; free / limited {free / limited:.3f}",
        flush=True,
    )


def count_on(loop: str, args: argparse.Namespace) -> None:
    headers = {"Accept-Encoding": "gzip" if args.gzip else "identity"}
    if args.client:
        headers["Authorization"] = f"Bearer {TOKEN}"
    upstream_port, daemon_port, ceiling_port = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory() as folder, ExitStack() as stack:
        workdir = Path(folder)
        if args.keep is not None:  # copied when all have stopped (callbacks run last first)
            stack.callback(keep, workdir, args.keep / loop)
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
        upstream = helper_command("upstream", upstream_port, args.models)
        stack.enter_context(start(upstream, port=upstream_port, loop=loop, core=None))
        daemon_out = workdir / "daemon"
        command = under_callgrind(daemon_out, daemon_command(config, daemon_port))
        daemon = started(stack, command, daemon_port, loop)
        daemon.wait_until_answering(
            "/v1/models", headers=headers, within=STARTING_SECONDS, interval=ASKING_EVERY
        )
        print(
            f"{args.models} models, {args.requests} requests each, gzip "
            f"{'on' if args.gzip else 'off'}, {'a client' if args.client else 'anyone'}"
            + (", fleet on" if args.fleet else "")
            + f", {loop}",
            flush=True,
        )
        for number, path in enumerate(args.paths):
            body = workdir / f"body-{number}.json"
            save_answer(daemon.url(path), headers, body)
            ceiling_out = workdir / f"ceiling-{number}"
            command = under_callgrind(ceiling_out, helper_command("ceiling", ceiling_port, body))
            name = f"path{number}"
            with ExitStack() as one:
                ceiling = started(one, command, ceiling_port, loop)
                ceiling_url = ceiling.url("/v1/models")
                asyncio.run(load(daemon.url(path), daemon.pid, name, args.requests, headers))
                asyncio.run(load(ceiling_url, ceiling.pid, name, args.requests, headers))
            ours = per_request(daemon_out, daemon.pid, name, args.requests)
            best = per_request(ceiling_out, ceiling.pid, name, args.requests)
            print(
                f"{path:<18} localrouter {ours / 1000:7.1f}k instructions/request, "
                f"ceiling {best / 1000:7.1f}k, ratio {best / ours:.3f}",
                flush=True,
            )


def keep(workdir: Path, into: Path) -> None:
    into.mkdir(parents=True, exist_ok=True)
    for part in workdir.iterdir():
        if part.name.startswith(("daemon.", "ceiling-")):
            shutil.copy(part, into / part.name)


if __name__ == "__main__":
    main()
