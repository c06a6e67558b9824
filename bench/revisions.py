"""The proxy at other git revisions, in the same rounds as this checkout's and the minimal proxy:
where along the history did CPU per request move?

Each REV is checked out into a temporary git worktree and its daemon started from there with
this checkout's interpreter and packages, in front of the same chat upstream, as bench/proxy.py
starts the plain daemon (ledger off where the revision has one). wrk loads every daemon and the
minimal proxy (bench/servers.py minimal_proxy) in the same rounds, their order turning; each
prints its CPU per request, its ratio to the minimal proxy (minimal / daemon, as
bench/proxy.py's verdict), and its CPU per request over this checkout's (above 1: this
checkout costs less).

Every revision runs with what this checkout's serve sets around it: the collector's thresholds
(base/offload.py, which the bench servers use too; a revision cannot change them), and uvloop's
policy when the loop is uvloop (revisions before uvloop support otherwise run on the standard
loop). What a revision's own serve did or did not do stays as it was: revisions before 7c32883
do not freeze their start-up objects (gc.freeze, a fifth of a proxied call's CPU then), nor
those before 2b99343 set the switch interval, so compare revisions from there on for the call
path alone.

    python bench/revisions.py [--rounds 12] [--seconds 2] [--loops uvloop,asyncio] REV [REV ...]

Keep the revisions few, and --rounds at least the number of servers: they all share one core,
each round grows with each, and the order turns by one a round.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from harness import (
    LOAD_CORE,
    Rounds,
    Server,
    Target,
    add_loops_argument,
    chat_instance,
    free_port,
    helper_command,
    listed,
    loops_of,
    start,
)
from proxy import CALL_PATH, post_load

from localrouter.base.offload import (
    YOUNG_COLLECTIONS_PER_MIDDLE,
    YOUNG_GENERATION_THRESHOLD,
)

HERE = Path(__file__).parent
CHECKOUT = HERE.parent
THIS = "this checkout"
# Run in the revision's daemon process: its tree first on the path, then what this checkout's
# serve would set around it, then its own command line.
LAUNCHER = """
import gc, os, sys
tree, young, middle = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
del sys.argv[1:4]
sys.path.insert(0, tree)
if os.environ.get("LOCALROUTER_EVENT_LOOP") == "uvloop":
    import asyncio, uvloop
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
if young:
    gc.set_threshold(young, middle, gc.get_threshold()[2])
gc.set_threshold = lambda *thresholds: None  # the revision's serve keeps ours
import localrouter
assert localrouter.__file__.startswith(tree), localrouter.__file__
from localrouter.cli import main
sys.exit(main())
"""


def serve_command(tree: Path, config: Path, port: int) -> list[str]:
    launcher = [sys.executable, "-c", LAUNCHER, str(tree)]
    # As collect_young_less_often: CPython's own thresholds (0: left alone) from 3.14 on.
    young, middle = (
        (YOUNG_GENERATION_THRESHOLD, YOUNG_COLLECTIONS_PER_MIDDLE)
        if sys.version_info < (3, 14)
        else (0, 0)
    )
    thresholds = [str(young), str(middle)]
    serve = ["serve", "--config", str(config), "--port", str(port), "--log-level", "warning"]
    return [*launcher, *thresholds, *serve]


def config_for(tree: Path, upstream_port: int) -> str:
    """bench/proxy.py's plain daemon's config, in the keys the revision knows."""
    ledger = (tree / "localrouter" / "config" / "usage.py").exists()
    return chat_instance(upstream_port) + ("usage: {enabled: false}\n" if ledger else "")


def start_daemon(
    stack: ExitStack, tree: Path, config: Path, upstream_port: int, loop: str
) -> Server:
    """The daemon of `tree` (a revision's worktree, or this checkout) on `loop`, its config
    written to `config`, answering; stopped when `stack` closes."""
    config.write_text(config_for(tree, upstream_port))
    port = free_port()
    server = stack.enter_context(
        start(serve_command(tree, config, port), port=port, ready=None, loop=loop)
    )
    server.wait_until_answering("/v1/models")
    return server


GIT = ("git", "-C", str(CHECKOUT))


def commit_of(revision: str) -> str:
    """The short hash `revision` names now (a name like HEAD~3 moves on), or exit."""
    found = subprocess.run(
        [*GIT, "rev-parse", "--short", "--verify", "--quiet", f"{revision}^{{commit}}"],
        capture_output=True,
        text=True,
    )
    if found.returncode:
        raise SystemExit(f"{revision!r} names no commit in {CHECKOUT}")
    return found.stdout.strip()


@contextmanager
def worktree(commit: str, folder: Path) -> Iterator[Path]:
    """`commit` checked out under `folder`, removed again on the way out."""
    tree = folder / f"tree-{commit}"
    subprocess.run([*GIT, "worktree", "add", "--detach", "-q", str(tree), commit], check=True)
    try:
        yield tree
    finally:
        removed = subprocess.run([*GIT, "worktree", "remove", "--force", str(tree)], check=False)
        if removed.returncode:
            subprocess.run([*GIT, "worktree", "prune"], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("revisions", nargs="+", metavar="REV")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=2.0)
    add_loops_argument(parser)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk")
    loops = loops_of(args)
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {LOAD_CORE})
    upstream_port = free_port()
    with tempfile.TemporaryDirectory() as folder, ExitStack() as stack:
        workdir = Path(folder)
        commits: dict[str, str] = {}  # label: commit
        for rev in args.revisions:
            commit = commit_of(rev)
            commits[f"{rev} ({commit})"] = commit
        if len(set(commits.values())) < len(args.revisions):
            raise SystemExit("two of the revisions name the same commit: give each once")
        trees = {name: stack.enter_context(worktree(c, workdir)) for name, c in commits.items()}
        stack.enter_context(
            start(
                helper_command("chat", upstream_port),
                port=upstream_port,
                loop=loops[0],
                core=LOAD_CORE,
            )
        )
        direct = f"http://127.0.0.1:{upstream_port}{CALL_PATH}"
        targets: list[Target] = []
        for loop in loops:
            daemons = {THIS: CHECKOUT, **trees}
            for number, (name, tree) in enumerate(daemons.items()):
                file = f"daemon-{number}-{loop}"  # names and labels may hold any character
                server = start_daemon(stack, tree, workdir / f"{file}.yaml", upstream_port, loop)
                load = post_load(workdir, file, server.url(CALL_PATH), "bench/bench-model")
                targets.append(Target(f"{name} {loop}", server.pid, load))
            port = free_port()
            minimal = stack.enter_context(
                start(helper_command("minimal_proxy", port, direct), port=port, loop=loop)
            )
            label = f"minimal {loop}"
            load = post_load(workdir, label, minimal.url(CALL_PATH), "bench/bench-model")
            targets.append(Target(label, minimal.pid, load))
        for target in targets:
            target.measure(1)  # warm
        rounds = Rounds()
        rounds.run(targets, args.rounds, args.seconds)
        for loop in loops:
            ceiling, this = f"minimal {loop}", f"{THIS} {loop}"
            print(f"{loop}: minimal proxy {rounds.cpu_us(ceiling):6.1f} us a call", flush=True)
            for name in (THIS, *trees):
                label = f"{name} {loop}"
                against = rounds.cpu_ratios(ceiling, label)
                line = (
                    f"  {name:>20}: {rounds.cpu_us(label):6.1f} us, minimal / it "
                    f"{rounds.cpu_ratio(ceiling, label):.3f} (rounds {min(against):.3f}-"
                    f"{max(against):.3f})"
                )
                if name != THIS:
                    line += f", it / {THIS} {rounds.cpu_ratio(label, this):.3f}"
                print(line, flush=True)
            if args.rounds <= 16:
                print(f"  rounds, minimal / {THIS}: {listed(rounds.cpu_ratios(ceiling, this))}")


if __name__ == "__main__":
    main()
