"""What a limited call runs that a free one does not, counted in Python bytecodes, function by
function: deterministic where CPU time and py-spy's samples swing (bench/where.py limits samples
the same pair). One daemon with bench/proxy.py's limited and free clients (the issue's example
limits, ledger on), traced by sys.settrace with opcode events from a sitecustomize handed to it:
each client sends --calls calls, 16 at a time, after a warm-up; the counts per function are
written on SIGUSR1 after each phase. Printed: bytecodes a call for each client, then the
functions whose count differs, limited minus free.

    python bench/bytecodes.py [--calls 300] [--limited-by example|every] [--top 30]

A bytecode is no unit of time (a call or a dict lookup costs more than a local's load), but
fewer of them, and fewer calls, cost less: bench/limits_floor.py and bench/proxy.py judge.
Tracing makes the daemon some 50 times slower; nothing here is timed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))

from harness import (
    chat_instance,
    daemon_command,
    free_port,
    helper_command,
    post_in_flight,
    start,
)
from proxy import (
    ADMIN_HEADERS,
    BODY,
    CALL_PATH,
    FREE_TOKEN,
    LIMIT_SETS,
    LIMITED_TOKEN,
    limits_daemon_config,
)

IN_FLIGHT = 16
# Counts every bytecode each code object runs (and the frames it enters: its calls, and a
# coroutine's resumptions) from start; on SIGUSR1 writes
# them, by "path:line:name", to the next numbered file, and starts again from zero.
SITECUSTOMIZE = """
import collections, json, os, signal, sys

_ops, _calls, _dumps = collections.Counter(), collections.Counter(), [0]

def _each(frame, event, arg):
    if event == "opcode":
        _ops[frame.f_code] += 1
    return _each

def _called(frame, event, arg):
    frame.f_trace_opcodes = True
    _calls[frame.f_code] += 1
    return _each

def _dump(signum, frame):
    rows = {}  # code objects made alike (dataclasses' methods, namedtuples') share a name
    for code in set(_ops) | set(_calls):
        where = f"{code.co_filename}:{code.co_firstlineno}:{code.co_qualname}"
        row = rows.setdefault(where, [0, 0])
        row[0] += _ops[code]
        row[1] += _calls[code]
    with open(f"{os.environ['BYTECODES_OUT']}.{_dumps[0]}", "w") as out:
        json.dump(rows, out)
    _dumps[0] += 1
    _ops.clear()
    _calls.clear()

signal.signal(signal.SIGUSR1, _dump)
sys.settrace(_called)
"""


async def calls(url: str, token: str, count: int) -> None:
    """`count` calls with `token`, IN_FLIGHT at a time, then until the limited client's calls
    are settled (off their requests' path, and slowly under the tracer)."""
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        await post_in_flight(session, url, BODY, count, IN_FLIGHT)
    limits = url.replace(CALL_PATH, "/api/limits")
    async with aiohttp.ClientSession(headers=ADMIN_HEADERS) as session:
        for _ in range(300):
            async with session.get(limits) as response:
                rows = (await response.json())["data"]
            if all(row["reserved"] == 0 for row in rows if row["client"] == "limited"):
                break
            await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # and the ledger's batch written


async def phases(url: str, pid: int, count: int) -> None:
    """A warm-up (dump 0), then the limited client's calls (dump 1) and the free one's (2)."""
    for token in (LIMITED_TOKEN, FREE_TOKEN):
        await calls(url, token, 100)
    os.kill(pid, signal.SIGUSR1)
    for token in (LIMITED_TOKEN, FREE_TOKEN):
        await asyncio.sleep(1.0)
        await calls(url, token, count)
        os.kill(pid, signal.SIGUSR1)
    await asyncio.sleep(1.0)


def short(where: str) -> str:
    path, line, name = where.rsplit(":", 2)
    path = path.split("site-packages/")[-1].split("localrouter/")[-1]
    return f"{name} ({path}:{line})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--limited-by", choices=sorted(LIMIT_SETS), default="example")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    upstream_port, port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as folder, ExitStack() as stack:
        workdir = Path(folder)
        (workdir / "sitecustomize.py").write_text(SITECUSTOMIZE)
        out = workdir / "bytecodes"
        config = workdir / "limits.yaml"
        usage = f"usage: {{path: '{workdir / 'usage.sqlite3'}'}}\n"
        # No discovery: a probe round landing in one phase and not the other is not the call.
        providers = chat_instance(upstream_port) + "discovery: {enabled: false}\n"
        config.write_text(limits_daemon_config(providers, usage, LIMIT_SETS[args.limited_by]))
        upstream = helper_command("chat", upstream_port)
        stack.enter_context(start(upstream, port=upstream_port, core=None))
        env = {"PYTHONPATH": str(workdir), "BYTECODES_OUT": str(out)}
        command = daemon_command(config, port)
        daemon = stack.enter_context(start(command, port=port, core=None, env=env, within=120))
        daemon.wait_until_answering("/v1/models", headers=ADMIN_HEADERS, within=120)
        asyncio.run(phases(daemon.url(CALL_PATH), daemon.pid, args.calls))
        limited, free = (json.loads(Path(f"{out}.{part}").read_text()) for part in (1, 2))
    n = args.calls
    totals = [sum(ops for ops, _ in counts.values()) / n for counts in (limited, free)]
    print(
        f"{n} calls each, {IN_FLIGHT} in flight, limited by {args.limited_by}: bytecodes a call, "
        f"limited client {totals[0]:.0f}, free client {totals[1]:.0f}, "
        f"difference {totals[0] - totals[1]:.0f}"
    )
    print(f"{'difference':>10} {'frames':>6} {'limited':>8} {'free':>8}  function")

    def difference(where: str) -> float:
        return (limited.get(where, [0, 0])[0] - free.get(where, [0, 0])[0]) / n

    for where in sorted(set(limited) | set(free), key=lambda w: -abs(difference(w)))[: args.top]:
        if abs(difference(where)) < 1:
            break
        (ops, made), (other_ops, other_made) = limited.get(where, [0, 0]), free.get(where, [0, 0])
        print(
            f"{difference(where):+10.1f} {(made - other_made) / n:+6.2f} {ops / n:8.1f} "
            f"{other_ops / n:8.1f}  {short(where)}"
        )


if __name__ == "__main__":
    main()
