"""Issue 36's floor against the least limits can cost: a client held to the issue's example
limits (requests per minute, dollars per day, calls in flight) against a free one, CPU per
request (free / limited, >= 0.95 wanted), in two daemons in the same rounds:

- "as built": the daemon as it is (bench/proxy.py --only-limits --limited-by example
  --limits-ledger);
- "hard-coded": the same daemon and config with its admission replaced by
  bench/floor_admission.py, three counters in a dict and the three rate headers, nothing a
  configurable implementation needs besides.

What the hard-coded ratio lacks of 1.0 is about the least those three limits cost in this
daemon, whatever their code; the gap between the two ratios is what the limits as built add
to it.

    python bench/limits_floor.py [--rounds 12] [--seconds 2] [--loop uvloop|asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))

from harness import (
    LOAD_CORE,
    LOOPS,
    chat_instance,
    daemon_command,
    free_port,
    helper_command,
    start,
)
from proxy import (
    ADMIN_HEADERS,
    FREE_TOKEN,
    LIMIT_SETS,
    LIMITED_TOKEN,
    LimitsDaemon,
    limits_daemon_config,
    limits_held,
    limits_rounds,
    limits_verdict,
)

HERE = Path(__file__).parent
SITECUSTOMIZE = f"""import sys
sys.path.insert(0, {str(HERE)!r})
import floor_admission
floor_admission.install()
"""


async def replaced(daemon: LimitsDaemon) -> None:
    """The hard-coded daemon's own limits counted nothing: its admission was replaced."""
    async with (
        aiohttp.ClientSession(headers=ADMIN_HEADERS) as session,
        session.get(daemon.server.url("/api/limits")) as response,
    ):
        assert response.status == 200, await response.text()
        rows = (await response.json())["data"]
    if counted := [row for row in rows if row["client"] == "limited" and row["used"]]:
        raise SystemExit(f"{daemon.loop}: the daemon's own limits counted calls: {counted}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--loop", choices=LOOPS, default=LOOPS[0])
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk")
    kinds = LIMIT_SETS["example"]
    upstream_port = free_port()
    with tempfile.TemporaryDirectory() as folder, ExitStack() as stack:
        workdir = Path(folder)
        site = workdir / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
        chat = helper_command("chat", upstream_port)
        stack.enter_context(start(chat, port=upstream_port, loop=args.loop, core=LOAD_CORE))
        daemons: list[LimitsDaemon] = []
        for label, env in (("as built", {}), ("hard-coded", {"PYTHONPATH": str(site)})):
            config = workdir / f"{label.replace(' ', '-')}.yaml"
            ledger = workdir / f"{label.replace(' ', '-')}.sqlite3"
            usage = f"usage: {{path: '{ledger}'}}\n"
            config.write_text(limits_daemon_config(chat_instance(upstream_port), usage, kinds))
            port = free_port()
            command = daemon_command(config, port)
            server = stack.enter_context(start(command, port=port, loop=args.loop, env=env))
            server.wait_until_answering("/v1/models", headers=ADMIN_HEADERS)
            daemons.append(LimitsDaemon(server, f"{args.loop}, {label}", kinds))
        targets = [
            daemon.target(workdir, client, token)
            for daemon in daemons
            for client, token in (("limited", LIMITED_TOKEN), ("free", FREE_TOKEN))
        ]
        rounds = limits_rounds(targets, daemons, args.rounds, args.seconds)
        for daemon in daemons:
            print(limits_verdict(rounds, daemon.loop), flush=True)
        print(f"  as built: {asyncio.run(limits_held(daemons[0]))}", flush=True)
        asyncio.run(replaced(daemons[1]))


if __name__ == "__main__":
    main()
