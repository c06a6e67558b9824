"""How long `localrouter serve` takes, with no config file and no network, to answer its first
`GET /v1/models`: the same driver as tests/test_serve.py, timed, in a network namespace whose
only interface is loopback. Prints each run and the median against the goal (1 s). The
driver starts and stops the daemon itself; --loops uvloop,asyncio times it on each event loop
(LOCALROUTER_EVENT_LOOP, bench/harness.py).

    python bench/startup.py [--runs 5] [--loops uvloop,asyncio]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from harness import add_loops_argument, environment, loops_of

DRIVER = Path(__file__).parent.parent / "tests" / "offline_start.py"
GOAL_SECONDS = 1.0
NAMESPACE = ["unshare", "-n", "sh", "-c", 'ip link set lo up 2>/dev/null; exec "$@"', "sh"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    add_loops_argument(parser)
    args = parser.parse_args()
    for loop in loops_of(args):
        time_start(loop, args.runs)


def time_start(loop: str, runs: int) -> None:
    command = [sys.executable, "-m", "localrouter"]
    times = []
    for run in range(runs):
        done = subprocess.run(
            [*NAMESPACE, sys.executable, str(DRIVER), *command],
            capture_output=True,
            text=True,
            check=True,
            env=environment(loop),
        )
        report = json.loads(done.stdout.strip().splitlines()[-1])
        if report["status"] != 200:
            raise SystemExit(f"run {run}, {loop}: no answer: {report['stderr'][-2000:]}")
        times.append(report["elapsed"])
        print(
            f"run {run + 1}, {loop}: first /v1/models after {report['elapsed']:.3f} s", flush=True
        )
    median = statistics.median(times)
    verdict = "ok" if median < GOAL_SECONDS else "OVER"
    print(f"median, {loop}: {median:.3f} s ({verdict}, goal < {GOAL_SECONDS:g} s)", flush=True)


if __name__ == "__main__":
    main()
