"""The processes every benchmark compares: starting, pinning, waiting, CPU, stopping; and the
paired rounds that compare them.

`start` runs one process (the daemon: `daemon_command`; a helper of bench/servers.py:
`helper_command`; or anything else, e.g. redis-server or valgrind) on the event loop asked for,
pinned to a core, waits until it answers over HTTP, and on the way out stops it: SIGTERM, a wait
of STOP_SECONDS, then SIGKILL. What it wrote to stderr is kept and shown if it dies or never
answers.

The event loop is passed in LOCALROUTER_EVENT_LOOP, which the daemon reads (localrouter serve)
and so does bench/servers.py (`loop_factory`): give the daemon and the helper it is compared
with the same `loop`, and both sides run on it. Unset, both pick uvloop where it is installed.

`Rounds` measures several `Target`s in the same rounds, turning the order each round so that a
shared machine's drift hits all alike, and keeps each one's req/s and CPU time per request (from
/proc): the ratios the scripts judge are medians of per-round ratios between two targets.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp

HERE = Path(__file__).parent
SERVER_CORE, LOAD_CORE = 0, 1
STOP_SECONDS = 10.0
# Read by the daemon (`localrouter serve`) and by bench/servers.py alike.
EVENT_LOOP_VARIABLE = "LOCALROUTER_EVENT_LOOP"
LOOPS = ("uvloop", "asyncio")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(core: int | None, command: Sequence[str]) -> list[str]:
    """Run on one core when taskset exists and the machine has a second core for the load."""
    if core is not None and shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", str(core), *command]
    return list(command)


def default_loop() -> str:
    """The loop the daemon would pick: LOCALROUTER_EVENT_LOOP, else uvloop where installed."""
    asked = os.environ.get(EVENT_LOOP_VARIABLE, "")
    if asked in LOOPS:
        return asked
    if asked:
        raise SystemExit(f"{EVENT_LOOP_VARIABLE}={asked!r}: use 'uvloop' or 'asyncio'")
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError:
        raise SystemExit("uvloop is not installed: pip install uvloop") from None
    return uvloop.new_event_loop


def add_loops_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--loops",
        default=None,
        help="comma-separated event loops to run the servers on, each side of a comparison on "
        f"the same one: {','.join(LOOPS)} (default: {EVENT_LOOP_VARIABLE}, else uvloop where "
        "installed)",
    )


def loops_of(args: argparse.Namespace) -> list[str]:
    loops = args.loops.split(",") if args.loops else [default_loop()]
    if unknown := [loop for loop in loops if loop not in LOOPS]:
        raise SystemExit(f"--loops: unknown {unknown}; use {','.join(LOOPS)}")
    for loop in loops:
        loop_factory(loop)  # fails now, not in a child, when uvloop is missing
    return list(dict.fromkeys(loops))


def environment(loop: str | None = None, **extra: str) -> dict[str, str]:
    """This process's environment, with the event loop (when given) and `extra` set."""
    env = {**os.environ, **extra}
    if loop is not None:
        env[EVENT_LOOP_VARIABLE] = loop
    return env


def daemon_command(config: Path, port: int) -> list[str]:
    return [
        *(sys.executable, "-m", "localrouter", "serve", "--config", str(config)),
        *("--port", str(port), "--log-level", "warning"),
    ]


def chat_instance(upstream_port: int) -> str:
    """The config every chat bench's daemon starts from: one instance, `bench`, in front of
    the chat upstream (bench/servers.py chat) on `upstream_port`, its list not persisted."""
    return (
        "providers:\n"
        f"  - {{name: bench, type: openai_compatible, base_url: 'http://127.0.0.1:{upstream_port}/v1'}}\n"
        "model_cache: {persist: false}\n"
    )


def helper_command(mode: str, port: int, *args: str | int | Path) -> list[str]:
    """A helper server of bench/servers.py: upstream, ceiling, chat, minimal_proxy or collector."""
    return [sys.executable, str(HERE / "servers.py"), mode, str(port), *map(str, args)]


def cpu_seconds(pid: int) -> float:
    """The user and system CPU time a process (all its threads) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@dataclass
class Server:
    """A started process, and where it answers when it serves HTTP."""

    process: subprocess.Popen[bytes]
    command: list[str]
    base: str  # http://127.0.0.1:PORT
    loop: str | None
    stderr: IO[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def url(self, path: str) -> str:
        return self.base + path

    async def answering(
        self,
        path: str = "/health",
        *,
        expected_models: int | None = None,
        headers: Mapping[str, str] | None = None,
        within: float = 30.0,
        interval: float = 0.05,
    ) -> None:
        """Until `path` answers 200 (with `expected_models` entries in "data", when given);
        exits with the process's stderr if it dies or does not answer `within` seconds."""
        deadline = time.monotonic() + within
        async with aiohttp.ClientSession(headers=headers) as session:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    self.fail(f"exited with {self.process.returncode}")
                try:
                    async with session.get(self.url(path)) as response:
                        if response.status == 200:
                            if expected_models is None:
                                return
                            body = await response.json()
                            if len(body["data"]) == expected_models:
                                return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(interval)
        self.fail(f"did not answer {path} within {within:g} s")

    def wait_until_answering(
        self,
        path: str = "/health",
        *,
        expected_models: int | None = None,
        headers: Mapping[str, str] | None = None,
        within: float = 30.0,
        interval: float = 0.05,
    ) -> None:
        """`answering`, from code that runs no event loop of its own."""
        asyncio.run(
            self.answering(
                path,
                expected_models=expected_models,
                headers=headers,
                within=within,
                interval=interval,
            )
        )

    def fail(self, what: str) -> None:
        self.stderr.seek(0)
        said = self.stderr.read().decode(errors="replace")[-3000:]
        raise SystemExit(f"{' '.join(self.command)} {what}:\n{said}")


@contextmanager
def start(
    command: Sequence[str],
    *,
    port: int | None = None,
    ready: str | None = "/health",
    loop: str | None = None,
    core: int | None = SERVER_CORE,
    nice: int | None = None,
    env: Mapping[str, str] | None = None,
    within: float = 30.0,
    interval: float = 0.05,
) -> Iterator[Server]:
    """Run `command` on `loop` (LOCALROUTER_EVENT_LOOP; None: inherited), pinned to `core`
    (None: anywhere), at `nice` (None: as this process), with `env` added to the environment;
    wait until GET `ready` answers on `port` (None: no wait); stop it on exit."""
    prefix = ["nice", "-n", str(nice)] if nice is not None and shutil.which("nice") else []
    full = pinned(core, [*prefix, *command])
    child_env = environment(loop, **(env or {}))
    with tempfile.TemporaryFile() as stderr:
        child = subprocess.Popen(full, stdout=subprocess.DEVNULL, stderr=stderr, env=child_env)
        server = Server(child, full, f"http://127.0.0.1:{port}", loop, stderr)
        try:
            if ready is not None and port is not None:
                server.wait_until_answering(ready, within=within, interval=interval)
            yield server
        finally:
            stop(child)


def stop(child: subprocess.Popen[bytes]) -> None:
    """SIGTERM, up to STOP_SECONDS to exit, then SIGKILL."""
    if child.poll() is None:
        child.terminate()
    try:
        child.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def wrk_run(url: str, seconds: float, connections: int, *extra: str) -> tuple[float, int]:
    """wrk's Requests/sec and request count, run on the load core; exits if any answer was
    not 2xx. wrk takes whole seconds."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", *extra, url]
    done = subprocess.run(pinned(LOAD_CORE, command), capture_output=True, text=True)
    output = done.stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    count = re.search(r"(\d+) requests in", output)
    if done.returncode or not rate or not count or "Non-2xx" in output:
        raise SystemExit(f"{' '.join(command)} failed:\n{output}{done.stderr}")
    return float(rate.group(1)), int(count.group(1))


@dataclass
class Target:
    """One server under load: its name in the report, the process whose CPU is counted, and
    how to load it for some seconds (returning req/s and the requests answered)."""

    name: str
    pid: int
    load: Callable[[float], tuple[float, int]]

    def measure(self, seconds: float) -> tuple[float, float]:
        """req/s, and CPU seconds per request."""
        before = cpu_seconds(self.pid)
        rate, count = self.load(seconds)
        return rate, (cpu_seconds(self.pid) - before) / count


@dataclass
class Rounds:
    """Targets measured in the same rounds, pooled over batches (e.g. fresh processes): each
    one's req/s and CPU per request, round by round."""

    rates: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)
    batches: list[slice] = field(default_factory=list)
    count: int = 0

    def run(self, targets: Sequence[Target], rounds: int, seconds: float) -> None:
        """`rounds` rounds of every target, each round starting one further along."""
        for number in range(rounds):
            turn = number % len(targets)
            for target in [*targets[turn:], *targets[:turn]]:
                rate, cpu = target.measure(seconds)
                self.rates.setdefault(target.name, []).append(rate)
                self.cpu.setdefault(target.name, []).append(cpu)
        self.batches.append(slice(self.count, self.count + rounds))
        self.count += rounds

    def cpu_ratios(self, reference: str, name: str) -> list[float]:
        """Per round: reference's CPU per request / name's (above 1: name costs less)."""
        return [r / n for r, n in zip(self.cpu[reference], self.cpu[name], strict=True)]

    def cpu_ratio(self, reference: str, name: str) -> float:
        return statistics.median(self.cpu_ratios(reference, name))

    def per_batch(self, reference: str, name: str) -> list[float]:
        """Each batch's median CPU ratio."""
        ratios = self.cpu_ratios(reference, name)
        return [statistics.median(ratios[batch]) for batch in self.batches]

    def rate_ratios(self, name: str, reference: str) -> list[float]:
        """Per round: name's req/s / reference's."""
        return [n / r for n, r in zip(self.rates[name], self.rates[reference], strict=True)]

    def rate(self, name: str) -> float:
        return statistics.median(self.rates[name])

    def cpu_us(self, name: str) -> float:
        return statistics.median(self.cpu[name]) * 1e6

    def loop_gain(self, names: Mapping[str, str], what: str) -> str:
        """The uvloop gain for `what`: its CPU per request on asyncio / on uvloop (above 1:
        uvloop costs less), `names` giving each loop's target."""
        asyncio_name, uvloop_name = names["asyncio"], names["uvloop"]
        ratios = self.cpu_ratios(asyncio_name, uvloop_name)
        batches = self.per_batch(asyncio_name, uvloop_name)
        each = f"; {len(batches)} batches: {listed(batches)}" if len(batches) > 1 else ""
        return (
            f"uvloop gain, {what}: CPU per request on asyncio {self.cpu_us(asyncio_name):6.1f} "
            f"us, on uvloop {self.cpu_us(uvloop_name):6.1f} us, ratio asyncio / uvloop "
            f"{statistics.median(ratios):.3f} (rounds: {listed(ratios)}{each})"
        )


def listed(values: Sequence[float]) -> str:
    return ", ".join(f"{value:.3f}" for value in values)


async def post_in_flight(
    session: aiohttp.ClientSession, url: str, body: Any, count: int, in_flight: int
) -> None:
    """POST `body` as JSON to `url` `count` times, `in_flight` at a time, each answered 200."""
    left = [count]

    async def one_at_a_time() -> None:
        while left[0] > 0:
            left[0] -= 1
            async with session.post(url, json=body) as response:
                assert response.status == 200, await response.text()
                await response.read()

    await asyncio.gather(*(one_at_a_time() for _ in range(in_flight)))
