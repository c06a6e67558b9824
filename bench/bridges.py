"""What the protocol bridges (Anthropic Messages, OpenAI Responses) cost over plain chat
forwarding, through the same daemon and the same Chat Completions upstream, in the same run.

For each bridge, two requests: a short one, and one shaped like a real agent's (Claude Code:
78 KB, a 6 KB system prompt, 24 tools with full schemas, a tool call and its result; Codex:
instructions, developer and user messages, function tools, a built-in tool, a shell call and its
output). The chat requests are the very bodies the bridge sends upstream, so the only
difference is the translation there and back.

1. First streamed event: sequential requests in alternating blocks, POST /v1/chat/completions
   (time to its first chunk) against the bridge (time to its first event); p50 of each and the
   difference. Target: under 1 ms added at p50.
2. Non-streamed throughput: wrk at 16 connections, paired rounds alternating which goes first.
   Printed: req/s of each and the median of the per-round ratios bridge / chat, and the
   daemon's own CPU time per request (from /proc) for each. Judged: the median of the
   per-round CPU ratios (chat CPU / bridge CPU a request), which is what caps throughput on a
   busy machine. Target: at most 5% lower (>= 0.95). On a shared 2-core machine single rounds
   move by +-20%: use --rounds 12 or more. Also printed, as a floor: the translation alone
   (parse, translate and serialise both ways, less what forwarding does with the same
   request), timed in this process; in the daemon it costs about twice that (colder caches).

The upstream and the daemon run on the same event loop (bench/harness.py); --loops
uvloop,asyncio runs the whole bench once on each.

    python bench/bridges.py [--requests 1000] [--block 100] [--seconds 3] [--rounds 5]
                            [--loops uvloop,asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from harness import (
    LOAD_CORE,
    Rounds,
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

from localrouter.protocols.anthropic import to_chat as messages_to_chat
from localrouter.protocols.anthropic.from_chat import message
from localrouter.protocols.responses import to_chat as responses_to_chat
from localrouter.protocols.responses.from_chat import Echo, echoed, response

ADDED_MS_TARGET = 1.0
THROUGHPUT_TARGET = 0.95
MODEL = "bench/bench-model"


def short_request() -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 256, "messages": [{"role": "user", "content": "Hi"}]}


def claude_code_sized_request() -> dict[str, Any]:
    """Shaped like the second request of a real Claude Code turn (captured from claude
    2.1.197 through the daemon): 6 KB of system prompt, 24 tools of about 2.7 KB of schema each,
    a user turn, a system entry, a tool call and its result; 78 KB in all."""
    words = "Describes what this field means and when to set it. "

    def field(n: int) -> dict[str, Any]:
        if n % 3 == 0:
            return {"type": "array", "items": {"type": "string"}, "description": words * 4}
        if n % 3 == 1:
            return {"type": "string", "enum": ["a", "b", "c"], "description": words * 4}
        return {"type": "string", "description": words * 4}

    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {f"field_{n}": field(n) for n in range(9)},
        "required": ["field_0"],
        "additionalProperties": False,
    }
    tools = [
        {"name": f"Tool{n}", "description": "Does a thing. " * 30, "input_schema": schema}
        for n in range(24)
    ]
    call = {"type": "tool_use", "id": "toolu_1", "name": "Tool1", "input": {"field_0": ["x"]}}
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "done", "is_error": False}
    return {
        "model": MODEL,
        "max_tokens": 32000,
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.197;"},
            {"type": "text", "text": "You are a coding agent. " * 250},
        ],
        "tools": tools,
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Create done.txt. " * 20}]},
            {"role": "system", "content": "Agents you can launch: ... " * 40},
            {"role": "assistant", "content": [call]},
            {"role": "user", "content": [result]},
        ],
        "thinking": {"type": "adaptive"},
        "output_config": {"effort": "high"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "metadata": {"user_id": "bench"},
        "stream": False,
    }


def short_responses_request() -> dict[str, Any]:
    return {"model": MODEL, "input": "Hi", "max_output_tokens": 256}


def codex_sized_request() -> dict[str, Any]:
    """Shaped like a Codex request (codex 0.169.0, captured through the daemon)."""
    words = "Describes what this argument means and when to pass it. "
    parameters = {
        "type": "object",
        "properties": {f"arg_{n}": {"type": "string", "description": words * 3} for n in range(6)},
        "required": ["arg_0"],
    }
    tools: list[dict[str, Any]] = [
        {
            "type": "function",
            "name": f"tool_{n}",
            "description": words * 10,
            "parameters": parameters,
        }
        for n in range(8)
    ]
    tools += [{"type": "web_search"}, {"type": "namespace", "name": "multi_agent_v1"}]
    text = {"type": "input_text", "text": "Environment and permissions. " * 60}
    return {
        "model": MODEL,
        "instructions": "You are a coding agent running in a terminal. " * 120,
        "input": [
            {"type": "message", "role": "developer", "content": [text]},
            {"type": "message", "role": "developer", "content": [text]},
            {"type": "message", "role": "user", "content": [text]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Go."}]},
            {"type": "function_call", "call_id": "c1", "name": "tool_1", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "output " * 200},
        ],
        "tools": tools,
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "reasoning": {"summary": "auto"},
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "bench",
    }


@dataclass(frozen=True)
class Case:
    """One bridge and one request: its body, and the Chat body the bridge makes of it."""

    name: str
    path: str
    body: bytes
    chat_body: bytes
    bridged: Callable[[], None]  # the bridge's work for one request (timed)


def messages_case(name: str, request: dict[str, Any]) -> Case:
    raw = orjson.dumps(request)

    def bridged() -> None:
        orjson.dumps(messages_to_chat.chat_request(orjson.loads(raw), MODEL))
        orjson.dumps(message(orjson.loads(ANSWER), MODEL))

    chat = messages_to_chat.chat_request(request, MODEL)
    return Case(f"messages {name}", "/v1/messages", raw, orjson.dumps(chat), bridged)


def responses_case(name: str, request: dict[str, Any]) -> Case:
    raw = orjson.dumps(request)

    def bridged() -> None:
        body = orjson.loads(raw)
        orjson.dumps(responses_to_chat.chat_request(body, MODEL).body)
        answer = orjson.loads(ANSWER)
        orjson.dumps(response(answer, Echo.of(echoed(body), MODEL, answer)))

    chat = responses_to_chat.chat_request(request, MODEL).body
    return Case(f"responses {name}", "/v1/responses", raw, orjson.dumps(chat), bridged)


async def first_event(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> float:
    started = time.perf_counter()
    async with session.post(url, data=body, headers=headers) as response:
        assert response.status == 200, await response.text()
        await response.content.readline()
        elapsed = time.perf_counter() - started
        await response.read()
    return elapsed


async def latency(base: str, cases: list[Case], args: argparse.Namespace) -> list[str]:
    lines = []
    headers = {"Content-Type": "application/json", "anthropic-version": "2023-06-01"}
    async with aiohttp.ClientSession() as session:
        for case in cases:
            streamed = {
                "chat": (f"{base}/v1/chat/completions", _streamed(case.chat_body)),
                "bridge": (f"{base}{case.path}", _streamed(case.body)),
            }
            for url, body in streamed.values():  # warm both
                for _ in range(50):
                    await first_event(session, url, body, headers)
            times: dict[str, list[float]] = {"chat": [], "bridge": []}
            for block in range(args.requests // args.block):
                order = list(streamed) if block % 2 == 0 else list(reversed(streamed))
                for name in order:
                    url, body = streamed[name]
                    for _ in range(args.block):
                        times[name].append(await first_event(session, url, body, headers))
            chat_p50 = statistics.median(times["chat"]) * 1000
            bridge_p50 = statistics.median(times["bridge"]) * 1000
            added = bridge_p50 - chat_p50
            verdict = "ok" if added < ADDED_MS_TARGET else "OVER"
            lines.append(
                f"first streamed event, {case.name:<28} chat p50 {chat_p50:6.3f} ms | bridge p50 "
                f"{bridge_p50:6.3f} ms | added {added:6.3f} ms ({verdict}, target < "
                f"{ADDED_MS_TARGET:g} ms)"
            )
            print(lines[-1], flush=True)
    return lines


def _streamed(body: bytes) -> bytes:
    return orjson.dumps({**orjson.loads(body), "stream": True})


ANSWER = orjson.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }
)


def translation_seconds(case: Case) -> float:
    """What the bridge does beyond forwarding, per request: parse its body, translate,
    serialise the Chat body, then parse the answer, translate it and serialise it, less what
    forwarding does for the same request (parse the Chat body and serialise it). Collector on."""

    def forwarded() -> None:
        orjson.dumps(orjson.loads(case.chat_body))

    def per_call(work: Callable[[], None]) -> float:
        runs = 2000
        return min(timeit.repeat(work, "gc.enable()", number=runs, repeat=5)) / runs

    return max(per_call(case.bridged) - per_call(forwarded), 0.0)


def throughput(
    base: str, cases: list[Case], workdir: Path, daemon_pid: int, args: argparse.Namespace
) -> None:
    if not shutil.which("wrk"):
        print("throughput: skipped (wrk is not installed: apt-get install wrk)")
        return
    for number, case in enumerate(cases):
        targets = []
        for name, body, path in (
            ("chat", case.chat_body, "/v1/chat/completions"),
            ("bridge", case.body, case.path),
        ):
            script = workdir / f"{name}-{number}.lua"
            body_file = workdir / f"{name}-{number}.json"
            body_file.write_bytes(body)
            script.write_text(
                'wrk.method = "POST"\n'
                'wrk.headers["Content-Type"] = "application/json"\n'
                'wrk.headers["anthropic-version"] = "2023-06-01"\n'
                f'local f = io.open("{body_file}", "rb")\nwrk.body = f:read("*a")\nf:close()\n'
            )

            def load(
                seconds: float, url: str = base + path, script: Path = script
            ) -> tuple[float, int]:
                return wrk_run(url, seconds, 16, "-s", str(script))

            targets.append(Target(name, daemon_pid, load))
        for target in targets:
            target.measure(1)  # warm
        rounds = Rounds()
        rounds.run(targets, args.rounds, args.seconds)
        ratios = rounds.rate_ratios("bridge", "chat")
        cpu_ratios = rounds.cpu_ratios("chat", "bridge")
        chat_cpu = rounds.cpu_us("chat")
        added = translation_seconds(case) * 1e6
        floor = chat_cpu / (chat_cpu + added)
        ratio = statistics.median(cpu_ratios)
        verdict = "ok" if ratio >= THROUGHPUT_TARGET else "UNDER"
        print(
            f"throughput, non-streamed, {case.name:<28} chat {rounds.rate('chat'):7.1f} "
            f"req/s | bridge {rounds.rate('bridge'):7.1f} req/s | req/s ratio "
            f"{statistics.median(ratios):.3f} (rounds: {listed(ratios)})\n"
            f"  daemon CPU per request: chat {chat_cpu:6.1f} us | bridge "
            f"{rounds.cpu_us('bridge'):6.1f} us | ratio {ratio:.3f} ({verdict}, target >= "
            f"{THROUGHPUT_TARGET}; rounds: {listed(cpu_ratios)})\n"
            f"  floor: the translation alone, {added:5.1f} us a request over forwarding (timed "
            f"here), on {chat_cpu:6.1f} us of forwarding would be a ratio of {floor:.3f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--block", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    add_loops_argument(parser)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {LOAD_CORE})  # the client beside the upstream; the daemon alone
    cases = [
        messages_case("short", short_request()),
        messages_case("claude-code-sized", claude_code_sized_request()),
        responses_case("short", short_responses_request()),
        responses_case("codex-sized", codex_sized_request()),
    ]
    for loop in loops_of(args):
        print(f"event loop: {loop}", flush=True)
        run_on(loop, cases, args)


def run_on(loop: str, cases: list[Case], args: argparse.Namespace) -> None:
    """The upstream and the daemon on `loop`, and every measure through them."""
    upstream_port, daemon_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as workdir:
        config = Path(workdir) / "config.yaml"
        config.write_text(chat_instance(upstream_port))
        upstream = helper_command("chat", upstream_port)
        with (
            start(upstream, port=upstream_port, loop=loop, core=LOAD_CORE),
            start(daemon_command(config, daemon_port), port=daemon_port, loop=loop) as daemon,
        ):
            daemon.wait_until_answering("/v1/models")
            print(f"{args.requests} sequential requests per path and size, blocks of {args.block}")
            asyncio.run(latency(daemon.base, cases, args))
            throughput(daemon.base, cases, Path(workdir), daemon.pid, args)


if __name__ == "__main__":
    main()
