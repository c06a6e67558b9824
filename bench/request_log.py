"""What the request log costs over the usage ledger alone, CPU per request, in the same run.

Three daemons in front of the same chat upstream (bench/servers.py chat), each with the usage
ledger on (its own SQLite file in a temporary folder), differing only in `request_log:`:
- "ledger": `request_log: {enabled: false}`, the usage ledger alone (the baseline);
- "metadata": `request_log: {enabled: true, bodies: "off"}`, the request log's records (the
  ledger's, handed to the request log's observer and its live stream, which has no reader);
- "bodies": `request_log: {bodies: all}`, every call's request, headers and answer kept:
  redacted, cut at max_body_bytes, compressed and written beside its record (a stream's
  answer assembled from the upstream's events first).
wrk POSTs a short chat request at 16 connections to each in turn, round by round (the order
turns each round), whole answers and, unless --modes says otherwise, streamed ones (5 events
and [DONE]) as targets of their own: the daemons on one core, wrk and the upstream on the
other (bench/harness.py). Each daemon's own CPU time per request (from /proc: all its threads,
the ledger's writer too) is compared with the ledger's in the same round; the verdicts are the
medians of the per-round ratios, for each kind of answer (with --processes N, of the rounds of
N sets of fresh daemons in turn, pooled, each set's median printed too):
- CPU(ledger) / CPU(metadata) >= 0.97: the request log's metadata costs nothing measurable;
- CPU(ledger) / CPU(bodies) >= 0.9: keeping every body costs at most a tenth.

After the rounds, what the comparison rests on is checked, and the run ends if it does not
hold: every answer on the call route was 200 (the daemon's /metrics), as many as wrk counted or
more, each with its record in the ledger's file; bodies were kept for each of those of
"bodies" (a whole answer's as `body`, a stream's as `stream:chat`) and for none of the
others'; GET /api/requests?limit=1 answers, and GET /api/requests/{id} of the newest whole and
streamed call shows their bodies for "bodies" (the request as sent, the answer's text) and
none for the others; and a reader of the live stream (GET /api/requests/stream) is shown the
record of one more call by "metadata" and "bodies" (the request log on), not by "ledger".
The only other outcome allowed is that of the calls wrk leaves in flight when its seconds are
up (one per connection and run at most): recorded as cancelled, or a stream answered 500 (see
LEFT), each counted apart in what is printed.

    python bench/request_log.py [--seconds 2] [--rounds 6] [--processes 1]
                                [--modes whole,stream] [--loops uvloop,asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from harness import (
    LOAD_CORE,
    Rounds,
    Server,
    Target,
    add_loops_argument,
    chat_instance,
    daemon_command,
    free_port,
    helper_command,
    listed,
    loops_of,
    start,
    wrk_run,
)

CALL_PATH = "/v1/chat/completions"
MODEL = "bench/bench-model"
# Each daemon's `request_log:`; all have the usage ledger on.
REQUEST_LOGS = {
    "ledger": "request_log: {enabled: false}\n",
    "metadata": "request_log: {enabled: true, bodies: 'off'}\n",
    "bodies": "request_log: {bodies: all}\n",
}
SHOWN = {"ledger": "ledger alone", "metadata": "metadata on", "bodies": "bodies all"}
# CPU(ledger) / CPU(kind), round by round: the median must reach these.
FLOORS = {"metadata": 0.97, "bodies": 0.9}
MODES = ("whole", "stream")
POST_SCRIPT = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{{"model": "{model}", "messages": [{{"role": "user", "content": "Say hi"}}]{stream}}}'
"""
METRIC_LINE = re.compile(r"^(localrouter_\w+?)(?:_total)?\{([^}]*)\} ([0-9.e+]+)$", re.M)
# The stream the chat upstream sends (5 events of "hi"), as the request log assembles it.
STREAMED_TEXT = "hi" * 5
WRK_CONNECTIONS = 16
# wrk closes its connections when its seconds are up, at most one call in flight on each: the
# daemon records such a call as cancelled (status 0), or, a stream whose headers or end it was
# writing, answers it 500 (an unhandled ConnectionResetError, protocols/forward.py
# Forwarded._stream) and logs this.
LEFT = "aiohttp.client_exceptions.ClientConnectionResetError: Cannot write to closing transport"
WRITTEN_WITHIN = 10.0  # seconds for the last records to reach the ledger's file
LIVE_WITHIN = 2.0  # seconds for a record to reach the live stream's reader


def chat_load(
    workdir: Path, name: str, url: str, stream: bool
) -> Callable[[float], tuple[float, int]]:
    """wrk's POSTs of a short chat request (streamed or not) to `url`: req/s and requests."""
    script = workdir / f"{name.replace(' ', '-')}.lua"
    script.write_text(POST_SCRIPT.format(model=MODEL, stream=', "stream": true' if stream else ""))
    return lambda seconds: wrk_run(url, seconds, WRK_CONNECTIONS, "-s", str(script))


@dataclass
class Daemon:
    """One of the three daemons on one loop, its ledger's file, and the requests wrk made to
    it in each mode (which its own counts must cover), in how many runs."""

    kind: str
    loop: str
    server: Server
    database: Path
    sent: Counter[str] = field(default_factory=Counter)
    runs: Counter[str] = field(default_factory=Counter)

    def name(self, mode: str) -> str:
        return f"{self.kind} {mode} {self.loop}"

    def target(self, workdir: Path, mode: str) -> Target:
        load = chat_load(workdir, self.name(mode), self.server.url(CALL_PATH), mode == "stream")

        def counted(seconds: float) -> tuple[float, int]:
            rate, count = load(seconds)
            self.sent[mode] += count
            self.runs[mode] += 1
            return rate, count

        return Target(self.name(mode), self.server.pid, counted)


def verdicts(rounds: Rounds, loop: str, mode: str) -> str:
    what = "non-streamed" if mode == "whole" else "streamed"
    names = {kind: f"{kind} {mode} {loop}" for kind in REQUEST_LOGS}
    rates = ", ".join(
        f"{SHOWN[kind]} {rounds.rate(name):8.1f} req/s" for kind, name in names.items()
    )
    cpus = ", ".join(f"{SHOWN[kind]} {rounds.cpu_us(name):6.1f} us" for kind, name in names.items())
    lines = [f"request log, {what}, c=16, {loop}: {rates}", f"  CPU per request: {cpus}"]
    for kind, floor in FLOORS.items():
        ratios = rounds.cpu_ratios(names["ledger"], names[kind])
        ratio = statistics.median(ratios)
        verdict = "ok" if ratio >= floor else "UNDER"
        rate_ratios = rounds.rate_ratios(names[kind], names["ledger"])
        batches = rounds.per_batch(names["ledger"], names[kind])
        each = f"; {len(batches)} process sets: {listed(batches)}" if len(batches) > 1 else ""
        lines.append(
            f"  {SHOWN[kind]}: CPU per request, ledger alone / {kind} {ratio:.3f} ({verdict}, "
            f"target >= {floor}; rounds: {listed(ratios)}; min {min(ratios):.3f}, max "
            f"{max(ratios):.3f}{each}); req/s {kind} / ledger alone "
            f"{statistics.median(rate_ratios):.2f}"
        )
    return "\n".join(lines)


def ledger_counts(
    database: Path,
) -> tuple[Counter[tuple[bool, int, bool]], Counter[tuple[bool, str]]]:
    """The ledger file's records by (stream, status, cancelled), and the bodies of those
    answered 200 (whole: not cut off) by (stream, response_kind)."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        records = Counter(
            {
                (bool(stream), int(status), bool(cancelled)): n
                for stream, status, cancelled, n in connection.execute(
                    "SELECT stream, status, cancelled, count(*) FROM requests GROUP BY 1, 2, 3"
                )
            }
        )
        bodies = Counter(
            {
                (bool(stream), kind.partition(":")[0]): n  # stream:chat, or a stream cut short
                for stream, kind, n in connection.execute(
                    "SELECT requests.stream, bodies.response_kind, count(*) FROM bodies "
                    "JOIN requests USING (id) WHERE status = 200 AND NOT cancelled GROUP BY 1, 2"
                )
            }
        )
    return records, bodies


def newest(database: Path, stream: bool) -> str:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        row = connection.execute(
            "SELECT id FROM requests WHERE stream = ? AND status = 200 AND NOT cancelled "
            "AND output_tokens > 0 ORDER BY started_at DESC LIMIT 1",  # a whole answer's
            (int(stream),),
        ).fetchone()
    return str(row[0])


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as response:
        if response.status != 200:
            raise SystemExit(f"GET {url}: {response.status}: {await response.text()}")
        return await response.json()


def disconnects(server: Server) -> Counter[str]:
    """The daemon's unhandled errors by the exception's last line (its log, JSON lines)."""
    fd = server.stderr.fileno()
    said = os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")
    found: Counter[str] = Counter()
    for line in said.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "http.unhandled_error":
            found[str(event.get("exception", "")).rstrip().rpartition("\n")[2]] += 1
    return found


async def held(daemon: Daemon, modes: list[str]) -> str:
    """After the rounds: every answer on the call route was 200, at least as many as wrk
    counted, but for the calls wrk left when its seconds were up (see LEFT); each has its
    record in the ledger's file; bodies for every call of "bodies" answered 200 and none of
    the others', and the API shows them so. What was found."""
    where = f"request log, {daemon.kind} on {daemon.loop}"
    server = daemon.server
    async with aiohttp.ClientSession() as session, session.get(server.url("/metrics")) as got:
        assert got.status == 200, await got.text()
        metrics = await got.text()
    statuses: Counter[str] = Counter()
    for metric, labels, value in METRIC_LINE.findall(metrics):
        label = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if metric == "localrouter_http_requests" and label.get("route") == CALL_PATH:
            statuses[label["status"]] += int(float(value))
    answered, failed = statuses["200"], statuses["500"]
    errors = disconnects(server)
    if set(statuses) - {"200", "500"} or set(errors) - {LEFT} or errors[LEFT] != failed:
        server.fail(
            f"{where}: {statuses.total() - answered} answers on {CALL_PATH} were not 200 (by "
            f"status: {dict(statuses)}; unhandled errors: {dict(errors)}): the comparison is void"
        )
    if answered < daemon.sent.total():
        raise SystemExit(f"{where}: answered {answered}, fewer than wrk counted {daemon.sent}")
    deadline = time.monotonic() + WRITTEN_WITHIN
    while True:  # records are written within a second of their answer's end
        records, bodies = ledger_counts(daemon.database)
        ok = {stream: records[stream, 200, False] for stream in (False, True)}
        if sum(ok.values()) >= answered or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    # Calls wrk cut off as a round ended: a whole answer's before it began (status 0), a
    # stream's as it went (its status sent: 200).
    left = sum(n for (_, _, cancelled), n in records.items() if cancelled)
    most = WRK_CONNECTIONS * daemon.runs.total()
    if (
        sum(ok.values()) != answered
        or records[True, 500, False] != failed
        or records.total() != answered + failed + left
        or failed + left > most
    ):
        raise SystemExit(
            f"{where}: the ledger's records (stream, status, cancelled) {dict(records)} are "
            f"not the {answered} answers 200 and {failed} streams left (500) the daemon "
            f"counted, and at most {most - failed} calls left (cancelled)"
        )
    wanted: Counter[tuple[bool, str]] = Counter()
    if daemon.kind == "bodies":
        wanted = +Counter({(False, "body"): ok[False], (True, "stream"): ok[True]})
    # A stream wrk cut off just as it ended can be recorded as answered with its bodies not
    # kept (seen: 2 in 20,000); more than one such per connection is a failure.
    short = wanted - bodies
    if bodies - wanted or sum(short.values()) > most - left:
        raise SystemExit(
            f"{where}: bodies kept of the answers that were 200 (by stream, kind) "
            f"{dict(bodies)}, expected {dict(wanted)}"
        )
    if short:
        print(f"  {where}: {sum(short.values())} answers cut off as they ended kept no bodies")
    async with aiohttp.ClientSession() as session:
        page = await get_json(session, server.url("/api/requests?limit=1"))
        if len(page["data"]) != 1:
            raise SystemExit(f"{where}: GET /api/requests?limit=1 gave {page}")
        for mode in modes:
            stream = mode == "stream"
            request_id = newest(daemon.database, stream)
            row = (await get_json(session, server.url(f"/api/requests/{request_id}")))["data"]
            shown = row["bodies"]
            if daemon.kind != "bodies":
                if shown is not None:
                    raise SystemExit(f"{where}: {request_id} has bodies: {shown}")
                continue
            answer = shown["response"] if shown else None
            fine = (
                shown is not None
                and shown["request"].get("model") == MODEL
                and bool(shown["request"].get("stream")) == stream
                and isinstance(answer, dict)
                and (
                    answer.get("text") == STREAMED_TEXT
                    if stream
                    else answer["choices"][0]["message"]["content"] == "Hello!"
                )
                and shown["response_kind"] == ("stream:chat" if stream else "body")
            )
            if not fine:
                raise SystemExit(f"{where}: {request_id}'s bodies are not the call's: {row}")
    live = await published(server)
    if live != (daemon.kind != "ledger"):
        raise SystemExit(
            f"{where}: the live stream (GET /api/requests/stream) "
            f"{'showed' if daemon.kind == 'ledger' else 'did not show'} a call's record"
        )
    kept = f"{bodies.total()} with bodies" if bodies else "no bodies"
    return (
        f"{daemon.kind} {daemon.loop}: {answered} answers 200 on {CALL_PATH}, each with its "
        f"record (streamed {ok[True]}), {kept}; left by wrk at its runs' ends: {left} "
        f"(cancelled), {failed} (streams, 500); live stream {'on' if live else 'off'}"
    )


async def published(server: Server) -> bool:
    """Whether a reader of the request log's live stream is shown a call's record (within
    LIVE_WITHIN seconds of its answer): only when the request log is on."""
    url = server.url(CALL_PATH)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Say hi"}]}
    async with (
        aiohttp.ClientSession() as session,
        session.get(server.url("/api/requests/stream")) as reader,
    ):
        assert reader.status == 200, await reader.text()
        await reader.content.readline()  # its opening comment: the reader is in
        async with session.post(url, json=body) as answer:
            assert answer.status == 200, await answer.text()
            await answer.read()
        try:
            async with asyncio.timeout(LIVE_WITHIN):
                while not (await reader.content.readline()).startswith(b"data: "):
                    pass
        except TimeoutError:
            return False
        return True


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="fresh sets of daemons, one after the other, each measured for --rounds rounds; "
        "the rounds of all are pooled (a process's memory layout moves its CPU per request by "
        "several percent for its whole life)",
    )
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help="comma-separated kinds of answer, each a target of its own: whole, stream",
    )
    add_loops_argument(parser)
    args = parser.parse_args()
    modes = list(dict.fromkeys(args.modes.split(",")))
    if unknown := [mode for mode in modes if mode not in MODES]:
        parser.error(f"--modes: unknown {unknown}; use {','.join(MODES)}")
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk")
    loops = loops_of(args)
    print(f"event loops: {', '.join(loops)}; answers: {', '.join(modes)}", flush=True)
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {LOAD_CORE})  # the client on its own core; servers on the other
    upstream_port = free_port()
    with tempfile.TemporaryDirectory() as folder, ExitStack() as stack:
        workdir = Path(folder)
        chat = helper_command("chat", upstream_port)
        stack.enter_context(start(chat, port=upstream_port, loop=loops[0], core=LOAD_CORE))
        rounds = Rounds()
        found: list[str] = []
        for batch in range(args.processes):
            found += run_batch(rounds, workdir / str(batch), upstream_port, loops, modes, args)
        for loop in loops:
            for mode in modes:
                print(verdicts(rounds, loop, mode), flush=True)
        for summary in found:
            print(f"  {summary}", flush=True)


def run_batch(
    rounds: Rounds,
    workdir: Path,
    upstream_port: int,
    loops: list[str],
    modes: list[str],
    args: argparse.Namespace,
) -> list[str]:
    """Fresh daemons of each kind on each loop, their rounds added to `rounds`, and what was
    checked of each once they are done (`held`)."""
    workdir.mkdir()
    providers = chat_instance(upstream_port)
    with ExitStack() as stack:
        daemons: list[Daemon] = []
        targets: list[Target] = []
        for loop in loops:
            for kind, request_log in REQUEST_LOGS.items():
                database = workdir / f"{kind}-{loop}.sqlite3"
                config = workdir / f"{kind}-{loop}.yaml"
                config.write_text(providers + f"usage: {{path: '{database}'}}\n" + request_log)
                port = free_port()
                server = stack.enter_context(
                    start(daemon_command(config, port), port=port, loop=loop)
                )
                server.wait_until_answering("/v1/models")
                daemon = Daemon(kind, loop, server, database)
                daemons.append(daemon)
                targets += [daemon.target(workdir, mode) for mode in modes]
        for target in targets:
            target.measure(1)  # warm
        rounds.run(targets, args.rounds, args.seconds)
        return [asyncio.run(held(daemon, modes)) for daemon in daemons]


if __name__ == "__main__":
    main()
