"""The proxy at other git revisions, in the same rounds as this checkout's and the minimal proxy:
where along the history did CPU per request move?

Each REV is checked out into a temporary git worktree and its daemon started from there with
this checkout's interpreter and packages, in front of the same chat upstream, as bench/proxy.py
starts the plain daemon (ledger off where the revision has one). wrk loads every daemon and the
minimal proxy (bench/servers.py minimal_proxy) in the same rounds, their order turning; each
prints its CPU per request, its ratio to the minimal proxy (minimal / daemon, as
bench/proxy.py's verdict), and this checkout's CPU per request over it (above 1: this checkout
costs less).

So that only the code of the call path differs, every revision runs with what this checkout's
serve sets around it: the collector's thresholds (base/offload.py; the bench servers use them
too, and revisions before them ran with CPython's), and uvloop's policy when the loop is uvloop
(revisions before uvloop support otherwise run on the standard loop).

    python bench/revisions.py [--rounds 12] [--seconds 2] [--loops uvloop,asyncio] REV [REV ...]

Keep the revisions few: every daemon shares one core, and rounds grow with each.
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
    import uvloop
    uvloop.install()
gc.set_threshold(young, middle, gc.get_threshold()[2])
import localrouter
assert localrouter.__file__.startswith(tree), localrouter.__file__
from localrouter.cli import main
sys.exit(main())
"""


def serve_command(tree: Path, config: Path, port: int) -> list[str]:
    launcher = [sys.executable, "-c", LAUNCHER, str(tree)]
    thresholds = [str(YOUNG_GENERATION_THRESHOLD), str(YOUNG_COLLECTIONS_PER_MIDDLE)]
    serve = ["serve", "--config", str(config), "--port", str(port), "--log-level", "warning"]
    return [*launcher, *thresholds, *serve]


def config_for(tree: Path, upstream_port: int) -> str:
    """bench/proxy.py's plain daemon's config, in the keys the revision knows."""
    ledger = (tree / "localrouter" / "config" / "usage.py").exists()
    return chat_instance(upstream_port) + ("usage: {enabled: false}\n" if ledger else "")


@contextmanager
def worktree(revision: str, folder: Path) -> Iterator[Path]:
    """`revision` checked out under `folder`, removed again on the way out."""
    tree = folder / revision.replace("/", "_")
    git = ["git", "-C", str(CHECKOUT)]
    subprocess.run([*git, "worktree", "add", "--detach", "-q", str(tree), revision], check=True)
    try:
        yield tree
    finally:
        subprocess.run([*git, "worktree", "remove", "--force", str(tree)], check=False)


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
        trees = {rev: stack.enter_context(worktree(rev, workdir)) for rev in args.revisions}
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
            for name, tree in daemons.items():
                config = workdir / f"{name.replace(' ', '-')}-{loop}.yaml"
                config.write_text(config_for(tree, upstream_port))
                port = free_port()
                server = stack.enter_context(
                    start(serve_command(tree, config, port), port=port, ready=None, loop=loop)
                )
                server.wait_until_answering("/v1/models")
                label = f"{name} {loop}"
                load = post_load(workdir, label, server.url(CALL_PATH), "bench/bench-model")
                targets.append(Target(label, server.pid, load))
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
                    f"  {name:>14}: {rounds.cpu_us(label):6.1f} us, minimal / it "
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
