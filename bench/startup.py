"""How long `localrouter serve` takes, with no config file and no network, to answer its first
`GET /v1/models`: the same driver as tests/test_serve.py, timed, in a network namespace whose
only interface is loopback. Prints each run and the median against the goal (1 s).

    python bench/startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

DRIVER = Path(__file__).parent.parent / "tests" / "offline_start.py"
GOAL_SECONDS = 1.0
NAMESPACE = ["unshare", "-n", "sh", "-c", 'ip link set lo up 2>/dev/null; exec "$@"', "sh"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    command = [sys.executable, "-m", "localrouter"]
    times = []
    for run in range(args.runs):
        done = subprocess.run(
            [*NAMESPACE, sys.executable, str(DRIVER), *command],
            capture_output=True,
            text=True,
            check=True,
        )
        report = json.loads(done.stdout.strip().splitlines()[-1])
        if report["status"] != 200:
            raise SystemExit(f"run {run}: no answer: {report['stderr'][-2000:]}")
        times.append(report["elapsed"])
        print(f"run {run + 1}: first /v1/models after {report['elapsed']:.3f} s", flush=True)
    median = statistics.median(times)
    verdict = "ok" if median < GOAL_SECONDS else "OVER"
    print(f"median {median:.3f} s ({verdict}, goal < {GOAL_SECONDS:g} s)")


if __name__ == "__main__":
    main()
