"""Where a proxied call's time goes, function by function: two servers under the same wrk load
in turn, each sampled by py-spy, and the difference per call.

    python bench/where.py proxy        # the plain daemon (ledger off) against the minimal proxy
    python bench/where.py limits       # one daemon: the limited client against the free one
                                       # (the issue's example limits, ledger on)
    python bench/where.py REV          # this checkout's daemon against the one at git REV
                                       # (both started as bench/revisions.py starts them)
    options: [--seconds 20] [--rate 997] [--top 30] [--inclusive] [--loop uvloop|asyncio]

Each side is warmed, then loaded by wrk (16 connections, bench/proxy.py's POST) for --seconds
while `py-spy record --nonblocking` samples it at --rate per second. A function's time per call
is its samples / rate / calls answered: its own time (its lines, and C code it calls that has
no Python frame), or with --inclusive everything under it. Printed: each side's total, then the
functions whose time differs most, the first side's minus the second's (a function that moved
between revisions shows as two rows).

py-spy samples a thread while it is busy, in wall time: its totals differ from the CPU time
/proc counts (bench/proxy.py's verdict) by a few microseconds a call, either way. Read the
differences between functions, not the totals. Needs py-spy (pip install py-spy; reading
another process's memory may need root or ptrace permission) and wrk.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from harness import (
    LOAD_CORE,
    LOOPS,
    Server,
    chat_instance,
    daemon_command,
    free_port,
    helper_command,
    start,
)
from proxy import (
    ADMIN_HEADERS,
    CALL_PATH,
    FREE_TOKEN,
    LIMIT_SETS,
    LIMITED_TOKEN,
    limits_daemon_config,
    post_load,
)
from revisions import CHECKOUT, commit_of, start_daemon, worktree

MODEL = "bench/bench-model"
# A frame as py-spy's raw format writes it: "function (path:line)", the line optional.
_FRAME = re.compile(r"(?P<function>.*) \((?P<path>[^():]*)(?::\d+)?\)$")
# Where each kind of server runs its event loop: time there is the loop's own (C) work.
_LOOP_RUNNERS = {"run_app (aiohttp/web.py)", "Runner.run (asyncio/runners.py)"}


@dataclass
class Side:
    """One server under load: its name, the process sampled, and how to load it."""

    name: str
    server: Server
    load: Callable[[float], tuple[float, int]]


def short(frame: str) -> str:
    """`function (file)`, the file from the package or site-packages down."""
    found = _FRAME.match(frame)
    if found is None:
        return frame
    path = found["path"].split("site-packages/")[-1].split("localrouter/")[-1]
    name = f"{found['function']} ({path})"
    return "(the event loop)" if name in _LOOP_RUNNERS else name


def per_call(raw: Path, rate: float, calls: int, inclusive: bool) -> dict[str, float]:
    """Microseconds a call in each function, from py-spy's raw (folded) output."""
    samples: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = [short(frame) for frame in stack.split(";")]
        total += int(count)
        for name in dict.fromkeys(frames) if inclusive else frames[-1:]:
            samples[name] += int(count)
    scale = 1e6 / rate / calls
    times = {name: count * scale for name, count in samples.items()}
    times["(all)"] = total * scale
    return times


def sampled(side: Side, seconds: float, rate: float, workdir: Path) -> tuple[Path, int]:
    """py-spy's samples of `side` while wrk loads it for `seconds`, and the calls answered."""
    side.load(2.0)  # warm
    raw = workdir / f"{side.name.replace(' ', '-').replace('/', '_')}.txt"
    record = ["py-spy", "record", "--nonblocking", "--rate", f"{rate:g}", "--format", "raw"]
    what = ["--duration", f"{seconds:g}", "--output", str(raw), "--pid", str(side.server.pid)]
    spy = subprocess.Popen(
        [*record, *what], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    _, calls = side.load(seconds)
    _, said = spy.communicate()
    if spy.returncode or not raw.exists():
        raise SystemExit(f"py-spy failed (try as root): {said.strip()}")
    return raw, calls


def sides(what: str, loop: str, workdir: Path, stack: ExitStack) -> Iterator[Side]:
    """The two servers to compare, started on `loop` in front of one chat upstream."""
    upstream_port = free_port()
    chat = helper_command("chat", upstream_port)
    stack.enter_context(start(chat, port=upstream_port, loop=loop, core=LOAD_CORE))
    direct = f"http://127.0.0.1:{upstream_port}{CALL_PATH}"
    if what == "limits":
        ledger = f"usage: {{path: '{workdir / 'usage.sqlite3'}'}}\n"
        config = workdir / "limits.yaml"
        providers = chat_instance(upstream_port)
        config.write_text(limits_daemon_config(providers, ledger, LIMIT_SETS["example"]))
        port = free_port()
        daemon = stack.enter_context(start(daemon_command(config, port), port=port, loop=loop))
        daemon.wait_until_answering("/v1/models", headers=ADMIN_HEADERS)
        for client, token in (("limited", LIMITED_TOKEN), ("free", FREE_TOKEN)):
            load = post_load(workdir, client, daemon.url(CALL_PATH), MODEL, token)
            yield Side(f"{client} client", daemon, load)
        return
    ours = start_daemon(stack, CHECKOUT, workdir / "plain.yaml", upstream_port, loop)
    yield Side("localrouter", ours, post_load(workdir, "ours", ours.url(CALL_PATH), MODEL))
    if what == "proxy":
        port = free_port()
        minimal = helper_command("minimal_proxy", port, direct)
        other = stack.enter_context(start(minimal, port=port, loop=loop))
        yield Side(
            "minimal proxy", other, post_load(workdir, "minimal", other.url(CALL_PATH), MODEL)
        )
        return
    commit = commit_of(what)
    tree = stack.enter_context(worktree(commit, workdir))
    server = start_daemon(stack, tree, workdir / "revision.yaml", upstream_port, loop)
    name = f"{what} ({commit})"
    yield Side(name, server, post_load(workdir, "revision", server.url(CALL_PATH), MODEL))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", help="proxy, limits, or a git revision")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=997.0, help="py-spy's samples a second")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--inclusive", action="store_true", help="time under each function")
    parser.add_argument("--loop", choices=LOOPS, default=LOOPS[0])
    args = parser.parse_args()
    for tool, how in (("py-spy", "pip install py-spy"), ("wrk", "apt-get install wrk")):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not installed: {how}")
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {LOAD_CORE})
    with tempfile.TemporaryDirectory() as folder, ExitStack() as stack:
        workdir = Path(folder)
        compared = list(sides(args.what, args.loop, workdir, stack))
        times = []
        for side in compared:
            raw, calls = sampled(side, args.seconds, args.rate, workdir)
            times.append(per_call(raw, args.rate, calls, args.inclusive))
    (first, a), (second, b) = zip((side.name for side in compared), times, strict=True)
    kind = "inclusive" if args.inclusive else "own"
    print(f"{args.loop}, py-spy at {args.rate:g}/s for {args.seconds:g} s each, {kind} time a call")
    print(f"  {first}: {a['(all)']:.1f} us; {second}: {b['(all)']:.1f} us")
    names = (set(a) | set(b)) - {"(all)"}
    ranked = sorted(names, key=lambda name: abs(a.get(name, 0.0) - b.get(name, 0.0)), reverse=True)
    print(f"  {'difference':>10} {first[:16]:>16} {second[:16]:>16}  function")
    for name in ranked[: args.top]:
        mine, theirs = a.get(name, 0.0), b.get(name, 0.0)
        print(f"  {mine - theirs:+10.2f} {mine:16.2f} {theirs:16.2f}  {name}")


if __name__ == "__main__":
    main()
