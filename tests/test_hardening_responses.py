"""OpenAI's Responses API (`POST /v1/responses`, translated to Chat Completions) under hostile
input, over real sockets with the official openai SDK: the response store's byte cap holds for a
chunked body, a huge streamed answer stops at the output cap (marked incomplete) with the
daemon's memory flat, tool-call arguments cost no more per byte than text, and stored responses
belong to the client the guard found, however it sent its token.

The memory and CPU cases run a real `localrouter serve` process (test_hardening_memory.py's
method); the loop stall itself is measured by `python bench/loop_stall.py --phases tools`."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from aiohttp import web

from localrouter.app import COMPONENTS
from localrouter.protocols.responses.said import MAX_OUTPUT_BYTES
from localrouter.protocols.responses.store import MAX_BYTES
from tests.chat_streams import CREATED, Recorder
from tests.conftest import DaemonFactory, openai_compatible
from tests.test_hardening_memory import MEMORY_BOUND, peak_rss
from tests.test_reload import write_config
from tests.test_service import Daemon

ADMIN = "admin-token-responses-5c1e"
EDITOR = "editor-token-responses-8b2d"
AGENT = "agent-token-responses-1f9a"
MIB = 1024 * 1024
WRITE = {"type": "function", "name": "write_file", "parameters": {"type": "object"}}
on_linux = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads the daemon's peak RSS and CPU from /proc"
)


class Flood(Recorder):
    """A Chat Completions upstream. Model `short` answers "Hi." (whole or streamed); models
    `text` and `tool` stream `size` bytes of text, or of one tool call's arguments, in deltas of
    `piece` bytes (code: quotes and newlines that JSON escapes)."""

    def __init__(self) -> None:
        super().__init__()
        self.size = 0
        self.piece = 64 * 1024

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        model = body["model"]
        if model == "short" and not body.get("stream"):
            said = {"role": "assistant", "content": "Hi."}
            answer = {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": CREATED,
                "model": model,
                "choices": [{"index": 0, "message": said, "finish_reason": "stop"}],
            }
            return web.json_response(answer)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if model == "short":
            await response.write(_event({"content": "Hi."}) + _event({}, "stop"))
        elif model == "text":
            await self._flood(response, {}, lambda part: {"content": part})
        else:
            opening = {"index": 0, "id": "call_1", "function": {"name": "write_file"}}
            await self._flood(
                response,
                {"tool_calls": [opening]},
                lambda part: {"tool_calls": [{"index": 0, "function": {"arguments": part}}]},
            )
        await response.write(b"data: [DONE]\n\n")
        return response

    async def _flood(self, response: web.StreamResponse, opening: Any, delta: Any) -> None:
        code = 'print("hi")\n'
        part = (code * (self.piece // len(code) + 1))[: self.piece]
        line = _event(delta(part))
        batch = max(1, 256 * 1024 // len(line))
        pieces = self.size // self.piece
        if opening:
            await response.write(_event(opening))
        for start in range(0, pieces, batch):
            await response.write(line * min(batch, pieces - start))
        await response.write(_event({}, "stop"))

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": i} for i in ("short", "text", "tool")]})


def _event(delta: dict[str, Any], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": CREATED, "choices": [choice]}
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


@pytest.fixture
async def flood(aiohttp_server: Any) -> tuple[Flood, str]:
    upstream = Flood()
    app = web.Application(client_max_size=64 * MIB)
    app.router.add_post("/v1/chat/completions", upstream.chat)
    app.router.add_get("/v1/models", upstream.models)
    server = await aiohttp_server(app)
    return upstream, str(server.make_url("/v1"))


@pytest.fixture
async def served(tmp_path: Path, flood: tuple[Flood, str]) -> AsyncIterator[tuple[Flood, Daemon]]:
    """`localrouter serve` in its own process, in front of the flood: the daemon's memory and
    CPU are its own, and bodies over 1 MiB go upstream without the test's warnings filter
    (aiohttp warns of a large bytes body)."""
    upstream, url = flood
    daemon = Daemon(tmp_path, {"providers": [openai_compatible("lab", url)]})
    await daemon.start()
    yield upstream, daemon
    await daemon.stop()


def sdk(base: str, token: str, **options: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base + "/v1", api_key=token, max_retries=0, **options)


def base_of(client: Any) -> str:
    return str(client.make_url("")).rstrip("/")


# --- the store's byte cap, with a chunked body -------------------------------------------------


async def test_the_store_counts_a_chunked_body_by_the_bytes_read(served: tuple[Flood, Daemon]):
    """No Content-Length used to count as 0 bytes: every 6 MiB input was kept, past the cap."""
    _, daemon = served
    big = orjson.dumps({"model": "lab/short", "input": "x" * (6 * MIB)})

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: Transfer-Encoding chunked
        for start in range(0, len(big), MIB):
            yield big[start : start + MIB]

    made = []
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer any"}) as session:
        for _ in range(12):
            async with session.post(daemon.url + "/v1/responses", data=chunked()) as response:
                assert response.status == 200, await response.text()
                made.append((await response.json())["id"])
    kept = []
    async with sdk(daemon.url, "any") as openai_client:
        for response_id in made:
            with contextlib.suppress(openai.NotFoundError):
                kept.append((await openai_client.responses.retrieve(response_id)).id)
    assert len(kept) * len(big) <= MAX_BYTES, f"{len(kept)} of {len(made)} kept"
    assert kept == made[-len(kept) :]  # the oldest went first


# --- the output cap of a streamed answer --------------------------------------------------------


@pytest.mark.parametrize("model", ["text", "tool"])
async def test_a_stream_past_the_output_cap_ends_incomplete_and_is_kept_so(
    served: tuple[Flood, Daemon], model: str
):
    upstream, daemon = served
    upstream.size = MAX_OUTPUT_BYTES + 2 * MIB
    async with sdk(daemon.url, "any") as openai_client:
        streamed, kinds, last = [], [], None
        async with openai_client.responses.stream(
            model=f"lab/{model}", input="Write it all.", tools=[WRITE]
        ) as stream:
            async for event in stream:
                kinds.append(event.type)
                if event.type in (
                    "response.output_text.delta",
                    "response.function_call_arguments.delta",
                ):
                    streamed.append(event.delta)
                last = event
        assert kinds[-1] == "response.incomplete", kinds[-3:]
        assert last is not None
        assert last.type == "response.incomplete"
        final = last.response
        assert final.status == "incomplete"
        assert final.incomplete_details is not None
        assert final.incomplete_details.reason == "max_output_tokens"
        sent = "".join(streamed)
        assert 0 < len(sent.encode()) <= MAX_OUTPUT_BYTES
        item = final.output[0]
        said = item.arguments if item.type == "function_call" else item.content[0].text
        assert said == sent  # what the closing events carry is exactly what was streamed
        assert "response.output_item.done" in kinds

        kept = await openai_client.responses.retrieve(final.id)
        assert kept.model_dump() == final.model_dump()
        await openai_client.responses.create(
            model="lab/short", input="Go on.", previous_response_id=final.id
        )
    earlier = upstream.bodies[-1]["messages"][-2]
    assert earlier["role"] == "assistant"
    calls = earlier.get("tool_calls")
    assert (calls[0]["function"]["arguments"] if calls else earlier["content"]) == sent


@on_linux
async def test_a_huge_streamed_answer_leaves_the_daemons_memory_flat(
    served: tuple[Flood, Daemon],
):
    """A 256 MiB answer, as text and as tool-call arguments: the daemon used to keep all of it
    (and repeat it in the closing events), peaking far past the bound."""
    upstream, daemon = served
    upstream.size = 256 * MIB
    assert daemon.process is not None
    for model in ("text", "tool"):
        body = {"model": f"lab/{model}", "input": "All of it.", "stream": True}
        async with (
            aiohttp.ClientSession() as session,
            session.post(daemon.url + "/v1/responses", json=body) as response,
        ):
            assert response.status == 200
            ends = await terminal_events(response)
        peak = peak_rss(daemon.process.pid)
        assert peak < MEMORY_BOUND, f"{model}: peak RSS {peak / MIB:.0f} MiB"
        assert ends == [b"response.incomplete"], model


async def terminal_events(response: aiohttp.ClientResponse) -> list[bytes]:
    """The names of the events that end a Response, read as the stream passes (never held)."""
    names = (b"response.completed", b"response.incomplete", b"response.failed")
    marks = [b"event: " + name + b"\n" for name in names]
    keep = max(map(len, marks)) - 1  # a mark split between two chunks, never a whole one twice
    found: list[bytes] = []
    carry = b""
    async for chunk in response.content.iter_any():
        window = carry + chunk
        found += [
            name for name, mark in zip(names, marks, strict=True) for _ in range(window.count(mark))
        ]
        carry = window[-keep:]
    return found


# --- tool-call arguments: no work that grows with what came before ------------------------------


def cpu_seconds(pid: int) -> float:
    """A process's user and system CPU time so far (as bench/harness.py reads it)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@on_linux
async def test_tool_call_arguments_cost_the_daemon_no_more_per_byte_than_text(
    served: tuple[Flood, Daemon],
):
    """The same bytes in the same small deltas, as text and as tool-call arguments: the daemon's
    CPU time for each is alike. Each argument delta used to copy all the arguments before it
    (quadratic: seconds of CPU, stalls of the loop); the stall itself is what
    `bench/loop_stall.py --phases tools` measures."""
    upstream, daemon = served
    upstream.size, upstream.piece = 3 * MIB, 256  # 3.75 MiB as JSON: under the cap, all kept
    assert daemon.process is not None
    spent: dict[str, float] = {}
    # Read raw: the SDK parses each of the 12,000 events into a model (about 0.3 ms each).
    async with aiohttp.ClientSession() as session:
        for model in ("text", "tool", "text", "tool"):
            body = {"model": f"lab/{model}", "input": "Write it.", "stream": True, "store": False}
            before = cpu_seconds(daemon.process.pid)
            async with session.post(daemon.url + "/v1/responses", json=body) as response:
                assert await terminal_events(response) == [b"response.completed"]
            used = cpu_seconds(daemon.process.pid) - before
            spent[model] = min(spent.get(model, used), used)
    assert spent["tool"] < 2 * spent["text"] + 0.1, spent


# --- whose stored responses: the client, not the header -----------------------------------------


async def test_stored_responses_belong_to_the_client_however_it_sends_its_token(
    flood: tuple[Flood, str], daemon: DaemonFactory
):
    _, url = flood
    config = {
        "server": {"auth_token": ADMIN},
        "providers": [openai_compatible("lab", url)],
        "clients": [{"name": "editor", "token": EDITOR}, {"name": "agent", "token": AGENT}],
    }
    client = await daemon(config)
    base = base_of(client)
    by_header = {"Authorization": openai.omit}
    for token in (EDITOR, ADMIN):
        async with sdk(base, token) as bearer:
            made = await bearer.responses.create(model="lab/short", input="Hi")
            async with sdk(base, token, default_headers={"x-api-key": token}) as api_key:
                kept = await api_key.responses.retrieve(made.id, extra_headers=by_header)
            assert kept.id == made.id, token
    async with sdk(base, EDITOR) as editor, sdk(base, AGENT) as agent:
        made = await editor.responses.create(model="lab/short", input="Mine")
        with pytest.raises(openai.NotFoundError):
            await agent.responses.retrieve(made.id)
        with pytest.raises(openai.NotFoundError):
            await agent.responses.create(
                model="lab/short", input="Go on.", previous_response_id=made.id
            )
        async with sdk(base, ADMIN) as admin:
            with pytest.raises(openai.NotFoundError):
                await admin.responses.retrieve(made.id)


async def test_without_clients_anyone_is_one_caller_and_a_rotated_token_another(
    tmp_path: Path, flood: tuple[Flood, str], daemon: DaemonFactory
):
    _, url = flood
    path = tmp_path / "config.yaml"
    config: dict[str, Any] = {"providers": [openai_compatible("lab", url)]}
    write_config(path, config)
    client = await daemon(config, config_path=path)
    base = base_of(client)
    async with sdk(base, "one-key") as one, sdk(base, "another-key") as another:
        made = await one.responses.create(model="lab/short", input="Hi")
        assert (await another.responses.retrieve(made.id)).id == made.id  # no token: no one's

    write_config(path, {**config, "server": {"auth_token": ADMIN}})
    assert await client.app[COMPONENTS].reloader.reload()
    async with sdk(base, ADMIN) as admin:
        with pytest.raises(openai.NotFoundError):  # anyone's, before there was a token
            await admin.responses.retrieve(made.id)
        kept = await admin.responses.create(model="lab/short", input="Hi")
    rotated = "rotated-token-responses-3a7c"
    write_config(path, {**config, "server": {"auth_token": rotated}})
    assert await client.app[COMPONENTS].reloader.reload()
    async with sdk(base, rotated) as holder:
        with pytest.raises(openai.NotFoundError):  # the old token's holder is someone else
            await holder.responses.retrieve(kept.id)
