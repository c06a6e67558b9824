"""What the usage ledger costs per proxied chat call, counted in CPU instructions, and what its
SQLite insert alone costs: the least any ledger of one SQLite row per call can cost.

Issue 34 asks CPU(ledger off) / CPU(ledger on) >= 0.95, that is, a ledger costing at most
5.3 % of the call. This measures both daemons under valgrind's callgrind (all their threads:
the ledger's writer too), chat answered whole and streamed by bench/servers.py chat, requests
one at a time after a warm-up, ledger off then on; then the ledger's own statements, schema and
pragmas (usage/ledger.py, usage/schema.py) inserting pre-made rows in transactions of
--batch, with nothing else. It prints, per kind of answer:
- instructions per call, ledger off and on, their ratio, and the ledger-on daemon's threads
  beside the event loop (its writer among them);
- the budget the floor leaves: off x (1 / 0.95 - 1);
- the SQLite insert of one row alone, and the best ratio a ledger paying only that could reach.
Needs valgrind (apt-get install valgrind); slow (Python runs some 50 times slower under it).

    python bench/ledger_cost.py [--requests 300] [--batch 50]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from harness import chat_instance, daemon_command, free_port, helper_command, start
from instructions import dump, per_request, started, under_callgrind
from proxy import BODY

FLOOR = 0.95
ROWS = 20_000
WORKER = "pythread_wrapper"  # where callgrind counts every Python thread but the main one
# The SQLite part alone, run twice under callgrind: rows made, then rows made and inserted.
SQLITE_ONLY = """
import sys, tempfile
from pathlib import Path
from localrouter.usage.ledger_file import open_file
from localrouter.usage.record import CallRecord, Tokens
from localrouter.usage.schema import ADD_TO_DAILY, INSERT_REQUEST, row_of
connection = open_file(Path(tempfile.mkdtemp()) / "usage.sqlite3")
rows = [
    row_of(CallRecord(
        id=f"gen-0123456789ab-{n:x}", started_at=1.7e9 + n / 1000, route="/v1/chat/completions",
        requested_model="bench/bench-model", stream=True, model="bench/bench-model",
        instance="bench", provider_type="openai_compatible", attempts=1, status=200,
        duration_ms=1.234, ttft_ms=0.9, tokens=Tokens(input_tokens=5, output_tokens=2),
        upstream_status=200, path="native",
    ))
    for n in range(ROWS)
]
batch = BATCH
daily = [("2026-12-07", "", "bench/bench-model", "bench", "/v1/chat/completions",
          batch, 0, 5 * batch, 2 * batch, 0, 0, 0, 0.0, batch)]
if sys.argv[1] == "insert":
    for start in range(0, len(rows), batch):
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany(INSERT_REQUEST, rows[start:start + batch])
        connection.executemany(ADD_TO_DAILY, daily)
        connection.execute("COMMIT")
"""


def config(upstream: int, ledger: Path | None) -> str:
    usage = f"usage: {{path: '{ledger}'}}\n" if ledger else "usage: {enabled: false}\n"
    return chat_instance(upstream) + "discovery: {enabled: false}\n" + usage


async def calls(url: str, pid: int, count: int) -> None:
    """Warm both kinds of answer, then `count` of each, each dumped as a part of its own."""
    async with aiohttp.ClientSession() as session:

        async def send(stream: bool) -> None:
            async with session.post(url, json={**BODY, "stream": stream}) as response:
                assert response.status == 200, await response.text()
                await response.read()

        for _ in range(100):
            await send(False)
            await send(True)
        await asyncio.sleep(2.0)  # the ledger writes what the warm-up left
        await dump(pid, "warm")
        for stream in (False, True):
            for _ in range(count):
                await send(stream)
            await asyncio.sleep(2.0)  # and what these calls left, counted with them
            await dump(pid, "stream" if stream else "whole")


def writer_part(prefix: Path, pid: int, name: str, count: int) -> float:
    """The instructions per call of the daemon's threads besides the event loop's (the
    ledger's writer among them)."""
    for part in prefix.parent.glob(f"{prefix.name}.{pid}.*"):
        if f"Trigger: dump {name}\n" in part.read_text():
            shown = subprocess.run(
                ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(part)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            found = re.search(rf"^\s*([\d,]+) .*{WORKER}", shown, re.M)
            if found is None:
                raise SystemExit(f"no {WORKER} in the callgrind dump named {name}")
            return int(found.group(1).replace(",", "")) / count
    raise SystemExit(f"no callgrind dump named {name} for {pid}")


def sqlite_row(workdir: Path, batch: int) -> float:
    """Instructions per row of the ledger's SQLite insert alone."""
    script = workdir / "sqlite_only.py"
    script.write_text(SQLITE_ONLY.replace("ROWS", str(ROWS)).replace("BATCH", str(batch)))
    totals = {}
    for mode in ("make", "insert"):
        out = workdir / f"sqlite-{mode}"
        done = subprocess.run(
            under_callgrind(out, [sys.executable, str(script), mode]),
            capture_output=True,
            text=True,
            check=True,
        )
        said = re.search(r"Collected : (\d+)", done.stderr)
        assert said, done.stderr[-2000:]
        totals[mode] = int(said.group(1))
    return (totals["insert"] - totals["make"]) / ROWS


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300, help="of each kind, per daemon")
    parser.add_argument("--batch", type=int, default=50, help="rows per transaction, alone")
    args = parser.parse_args()
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind is not installed: apt-get install valgrind")
    with tempfile.TemporaryDirectory() as folder, ExitStack() as stack:
        workdir = Path(folder)
        upstream = free_port()
        stack.enter_context(start(helper_command("chat", upstream), port=upstream, core=None))
        counted: dict[str, dict[str, float]] = {}
        for kind in ("off", "on"):
            path = workdir / f"{kind}.yaml"
            path.write_text(config(upstream, workdir / "usage.sqlite3" if kind == "on" else None))
            port, out = free_port(), workdir / f"daemon-{kind}"
            command = under_callgrind(out, daemon_command(path, port))
            with ExitStack() as one:
                daemon = started(one, command, port, "uvloop")
                asyncio.run(calls(daemon.url("/v1/chat/completions"), daemon.pid, args.requests))
                counted[kind] = {
                    name: per_request(out, daemon.pid, name, args.requests)
                    for name in ("whole", "stream")
                }
                if kind == "on":
                    counted["writer"] = {
                        name: writer_part(out, daemon.pid, name, args.requests)
                        for name in ("whole", "stream")
                    }
        row = sqlite_row(workdir, args.batch)
        print(
            f"SQLite insert alone: {row / 1000:.1f}k instructions a row (batches of {args.batch})"
        )
        for name in ("whole", "stream"):
            off, on, writer = counted["off"][name], counted["on"][name], counted["writer"][name]
            budget = off * (1 / FLOOR - 1)
            print(
                f"{name:6} ledger off {off / 1000:7.1f}k, on {on / 1000:7.1f}k: ratio "
                f"{off / on:.3f} (floor {FLOOR}); the ledger {(on - off) / 1000:.1f}k; "
                f"threads beside the loop {writer / 1000:.1f}k; "
                f"the floor's budget {budget / 1000:.1f}k; "
                f"a ledger paying only the SQLite insert: {off / (off + row):.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
