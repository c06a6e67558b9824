"""Helper servers for the benchmarks, each run as its own process.

python bench/servers.py upstream PORT N      an OpenAI-shaped upstream listing N models
python bench/servers.py ceiling PORT FILE    the least an aiohttp server can do: return FILE's
                                             bytes (FILE.gz when the client accepts gzip)
python bench/servers.py chat PORT            an OpenAI chat upstream that answers at once,
                                             whole or as 5 server-sent events
python bench/servers.py minimal_proxy PORT URL  the least an aiohttp proxy can do in front of
                                             the chat upstream at URL (the proxy's ceiling)
python bench/servers.py collector PORT SECONDS  an OTLP/HTTP collector that answers each export
                                             SECONDS late; GET /received: how many came

Each serves on the event loop LOCALROUTER_EVENT_LOOP names ("uvloop" or "asyncio"), unset:
uvloop where it is installed, as the daemon does; bench/harness.py sets it for both sides of a
comparison, and collects garbage as the daemon does (its young-generation threshold), so that a
comparison counts what our code does and not a collector setting. Each also answers GET
/health, for the harness to see it is up.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web
from harness import default_loop, loop_factory
from multidict import CIMultiDict, istr

from localrouter.base.offload import collect_young_less_often


def fake_models(count: int) -> bytes:
    """N realistic entries of about 400 bytes, shaped like OpenRouter's."""
    data = []
    for index in range(count):
        vendor = ("acme", "bolt", "cirrus", "delta")[index % 4]
        data.append(
            {
                "id": f"{vendor}/model-{index:05d}-instruct",
                "object": "model",
                "created": 1_700_000_000 + index,
                "owned_by": vendor,
                "name": f"{vendor.title()}: Model {index} Instruct",
                "description": f"A general model number {index} tuned for chat and tools.",
                "context_length": 8192 * (1 + index % 16),
                "architecture": {
                    "modality": "text+image->text",
                    "input_modalities": ["text", "image"],
                    "output_modalities": ["text"],
                },
                "pricing": {"prompt": "0.0000015", "completion": "0.000006"},
                "top_provider": {"max_completion_tokens": 4096},
                "supported_parameters": ["max_tokens", "temperature", "tools", "tool_choice"],
            }
        )
    return orjson.dumps({"object": "list", "data": data})


def upstream_app(count: int) -> web.Application:
    body = fake_models(count)

    async def models(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/v1/models", models)
    return app


JSON = "application/json"


def ceiling_app(path: Path) -> web.Application:
    """The least aiohttp can do to send a saved answer (bench/models.py save_answer): its body,
    gzipped when asked, with the headers it was sent with, prebuilt (istr names, which aiohttp
    writes without making one per response)."""
    raw = path.read_bytes()
    zipped = path.with_suffix(path.suffix + ".gz").read_bytes()
    saved = path.with_suffix(path.suffix + ".headers.json")
    sent = json.loads(saved.read_text()) if saved.exists() else {}
    plain = CIMultiDict((istr(k), v) for k, v in sent.get("identity", [("Content-Type", JSON)]))
    gzipped = CIMultiDict(
        (istr(k), v)
        for k, v in sent.get("gzip", [("Content-Type", JSON), ("Content-Encoding", "gzip")])
    )

    async def models(request: web.Request) -> web.Response:
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            return web.Response(body=zipped, headers=gzipped)
        return web.Response(body=raw, headers=plain)

    app = web.Application()
    app.router.add_get("/v1/models", models)
    return app


def chat_app() -> web.Application:
    answer = orjson.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "bench-model",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello!"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
        }
    )
    delta = {
        "id": "c",
        "object": "chat.completion.chunk",
        "choices": [{"delta": {"content": "hi"}}],
    }
    event = b"data: " + orjson.dumps(delta) + b"\n\n"

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream"):
            return web.Response(body=answer, content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for _ in range(5):
            await response.write(event)
        await response.write(b"data: [DONE]\n\n")
        return response

    listed = orjson.dumps({"object": "list", "data": [{"id": "bench-model", "object": "model"}]})

    async def models(request: web.Request) -> web.Response:
        return web.Response(body=listed, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    return app


def minimal_proxy_app(upstream: str) -> web.Application:
    """The ceiling for the proxy: read the body, rewrite `model` with orjson, POST it on one
    shared session, return the bytes. No checks, no limits, no redaction."""
    app = web.Application()

    async def session_context(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as session:
            app[SESSION] = session
            yield

    async def chat(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        body["model"] = body["model"].partition("/")[2]
        async with request.app[SESSION].post(
            upstream, data=orjson.dumps(body), headers={"Content-Type": "application/json"}
        ) as answer:
            raw = await answer.read()
            return web.Response(body=raw, status=answer.status, content_type="application/json")

    app.cleanup_ctx.append(session_context)
    app.router.add_post("/v1/chat/completions", chat)
    return app


SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("session")


def collector_app(delay: float) -> web.Application:
    received = [0]

    async def traces(request: web.Request) -> web.Response:
        await request.read()
        received[0] += 1
        await asyncio.sleep(delay)  # past the exporter's timeout: every export fails late
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def count(request: web.Request) -> web.Response:
        return web.json_response({"received": received[0]})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", traces)
    app.router.add_get("/received", count)
    return app


def main() -> None:
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "chat":
        app = chat_app()
    elif mode == "minimal_proxy":
        app = minimal_proxy_app(sys.argv[3])
    elif mode == "upstream":
        app = upstream_app(int(sys.argv[3]))
    elif mode == "collector":
        app = collector_app(float(sys.argv[3]))
    else:
        app = ceiling_app(Path(sys.argv[3]))
    app.router.add_get("/health", health)
    collect_young_less_often()
    loop = loop_factory(default_loop())()
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, loop=loop)


async def health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


if __name__ == "__main__":
    main()
