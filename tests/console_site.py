"""What the console's browser tests (tests/test_console_browser.py) run against: one daemon
per module, over real HTTP on loopback, with the usage tests' fake upstreams (tests/
usage_wires.py), an OpenRouter-shaped upstream listing 20,000 models (and one named like an
HTML tag), an upstream that fails, clients, limits, a config file whose last edit failed to
load, and requests spread over three days of the test's clock.

Everything is started in the module's event loop: Playwright's async API drives the browser
from the same loop the daemon answers in."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from localrouter.app import COMPONENTS, create_app
from tests import local_servers
from tests.conftest import FakeClock, eventually, settings_from
from tests.usage_wires import HELLO, Wires, anthropic_sdk, ollama_sdk, openai_sdk, start_wires

ADMIN = "admin-console-token-7f3a"
ALICE = "alice-console-token-1e9b"
BOB = "bob-console-token-44c2"
XSS_NAME = "<img src=x onerror=alert(1)>"
BULK_MODELS = 20_000
DAY = 86400.0

# Where Debian's chromium is (the tests never download a browser of their own).
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
HAVE_CHROMIUM = os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)

_VENDORS = ("acme", "globex", "initech", "umbrella", "hooli", "vandelay", "stark")
_WORDS = ("coder", "chat", "vision", "mini", "large", "instruct", "base", "turbo", "lite",
          "pro", "flash", "reason", "embed")  # fmt: skip
_CONTEXTS = (4096, 8192, 32768, 131072, 200000, 1048576)
_PRICES = (0.0, 0.1, 0.25, 0.5, 1.0, 3.0, 15.0)  # USD per 1M input tokens; index 7: none


def bulk_model(number: int) -> dict[str, Any]:
    """The OpenRouter-shaped entry of model `number`: its metadata cycles, so that every
    filter keeps a known share of the list."""
    vendor, word = _VENDORS[number % 7], _WORDS[number % 13]
    entry: dict[str, Any] = {
        "id": f"{vendor}/m{number:05d}-{word}",
        "name": f"{vendor.title()} M{number:05d} {word.title()}",
        "created": 1_700_000_000 + number,
        "context_length": _CONTEXTS[number % 6],
        "architecture": {
            "input_modalities": ["text", "image"] if number % 3 == 0 else ["text"],
            "output_modalities": ["image"] if number % 50 == 0 else ["text"],
        },
        "supported_parameters": ["tools", "temperature"] if number % 2 == 0 else ["temperature"],
    }
    if number % 8 < 7:
        price = _PRICES[number % 8]
        entry["pricing"] = {
            "prompt": f"{price / 1e6:.10f}",
            "completion": f"{4 * price / 1e6:.10f}",
        }
    return entry


def bulk_body() -> bytes:
    data = [bulk_model(number) for number in range(BULK_MODELS - 1)]
    data.append({"id": XSS_NAME, "name": XSS_NAME, "description": "<script>alert(2)</script>"})
    return orjson.dumps({"data": data})


@dataclass
class Site:
    """The running daemon and what the tests need to know of it."""

    client: TestClient[web.Request, web.Application]
    clock: FakeClock
    wires: Wires
    config_path: Path
    # Request ids by client name (alice, bob, admin), and of the call a fallback answered.
    ids: dict[str, list[str]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return str(self.client.make_url("")).rstrip("/")

    async def get(self, path: str, token: str = ADMIN) -> Any:
        await self.client.app[COMPONENTS].recorder.flush()
        answer = await self.client.get(path, headers={"Authorization": f"Bearer {token}"})
        assert answer.status == 200, await answer.text()
        return await answer.json()

    async def chat(self, token: str, model: str, *, stream: bool = False) -> str:
        """A chat call through the daemon; its request id."""
        async with openai_sdk(self.client, token) as api:
            raw = await api.chat.completions.with_raw_response.create(
                model=model, messages=HELLO, stream=stream
            )
            if stream:
                async for _ in raw.parse():
                    pass
            request_id: str = raw.headers["x-localrouter-request-id"]
            return request_id


def site_config(
    wires: Wires, bulk_url: str, broken_url: str, ledger: Path, local_port: int
) -> dict[str, Any]:
    providers = [
        *wires.instances(),
        # The same OpenAI wire without prices: its unknown model's calls are unpriced.
        {"name": "raw", "type": "openai", "base_url": wires.openai_url, "api_key": "sk-raw-7c1"},
        {"name": "hub", "type": "openrouter", "base_url": f"{bulk_url}/api/v1"},
        {"name": "broken", "type": "openai_compatible", "base_url": f"{broken_url}/v1"},
    ]
    long_ttl = {provider["name"]: 10_000_000 for provider in providers}
    return {
        "server": {"auth_token": ADMIN},
        "providers": providers,
        "model_cache": {"provider_ttl_overrides": long_ttl, "persist": False},
        "models": {
            "aliases": {"fast": "oa/gpt-4o-mini"},
            "hide": ["lab/zz-*"],
            "fallbacks": {"oa/overloaded": ["lab/qwen3-coder"]},
        },
        "clients": [
            {
                "name": "alice",
                "token": ALICE,
                "allow": ["oa/*", "lab/*", "claude/*", "fast"],
                "limits": {"requests_per_minute": 60, "usd_per_day": 1},
            },
            {"name": "bob", "token": BOB, "limits": {"usd_per_month": 2}},
        ],
        "usage": {"path": str(ledger)},
        "request_log": {"bodies": "all"},
        # A llama.cpp server on loopback that the config does not name: found, and listed.
        "discovery": {"enabled": True, "hosts": ["127.0.0.1"], "ports": [local_port]},
    }


async def _serve(stack: AsyncExitStack, app: web.Application) -> TestServer:
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    stack.push_async_callback(server.close)
    return server


async def _failing(_: web.Request) -> web.Response:
    error = {"error": {"message": "upstream is down for maintenance", "type": "server_error"}}
    return web.json_response(error, status=503)


async def _traffic(site: Site) -> None:
    """Requests over three days of the test's clock: priced, failed, unpriced, several
    routes, from alice, bob and the admin."""
    client, clock, ids = site.client, site.clock, site.ids
    ids.update(alice=[], bob=[], admin=[])
    ids["alice"] += [await site.chat(ALICE, "oa/gpt-4o-mini"), await site.chat(ALICE, "fast")]
    async with anthropic_sdk(client, BOB) as api:
        raw = await api.messages.with_raw_response.create(
            model="claude/claude-sonnet-4-5", max_tokens=64, messages=HELLO
        )
        ids["bob"].append(raw.headers["x-localrouter-request-id"])
    clock.advance(DAY)
    ids["alice"].append(await site.chat(ALICE, "lab/qwen3-coder", stream=True))
    ids["fallback"] = [await site.chat(ALICE, "oa/overloaded")]  # answered by its fallback
    ids["alice"] += ids["fallback"]
    answer = await client.post(
        "/v1/chat/completions",
        json={"model": "raw/overloaded", "messages": HELLO},
        headers={"Authorization": f"Bearer {BOB}"},
    )
    assert answer.status == 503, await answer.text()
    ids["bob"].append(answer.headers["x-localrouter-request-id"])
    said: list[str] = []
    async with ollama_sdk(client, said, BOB) as api:
        await api.chat(model="home/qwen3:8b", messages=HELLO)
    ids["bob"] += said
    clock.advance(DAY)
    ids["bob"].append(await site.chat(BOB, "raw/zz-private-finetune-7"))  # unpriced
    ids["admin"].append(await site.chat(ADMIN, "oa/gpt-4o-mini", stream=True))
    ids["alice"].append(await site.chat(ALICE, "fast"))
    await client.app[COMPONENTS].recorder.flush()


async def _found(site: Site, instance: str) -> None:
    """Discovery's first round (run at start) has listed the local server as `instance`."""

    async def listed() -> bool:
        servers = (await site.get("/api/discovery"))["servers"]
        return any(server["instance"] == instance for server in servers)

    await eventually(listed, f"discovery listing {instance}")


async def _break_the_config(site: Site, config: dict[str, Any]) -> None:
    """An edit the daemon refuses: the running config stays, /health and /api/config say
    which file and key path."""
    broken = yaml.safe_load(yaml.safe_dump(config))
    broken["providers"][0]["type"] = "openia"
    site.config_path.write_text(yaml.safe_dump(broken))
    assert not await site.client.app[COMPONENTS].reloader.reload()


async def running_site(tmp: Path) -> AsyncIterator[Site]:
    """The site, started; closed when the generator is."""
    async with AsyncExitStack() as stack:

        async def serve(app: web.Application) -> TestServer:
            return await _serve(stack, app)

        wires = await start_wires(serve)
        bulk = web.Application()
        body = bulk_body()

        async def listing(_: web.Request) -> web.Response:
            return web.Response(body=body, content_type="application/json")

        bulk.router.add_get("/api/v1/models", listing)
        bulk_server = await serve(bulk)
        broken = web.Application()
        broken.router.add_route("*", "/{tail:.*}", _failing)
        broken_server = await serve(broken)
        local = local_servers.llamacpp(local_servers.Traffic())
        local_port = await local.start()
        stack.push_async_callback(local.stop)
        config = site_config(
            wires,
            str(bulk_server.make_url("")).rstrip("/"),
            str(broken_server.make_url("")).rstrip("/"),
            tmp / "usage.sqlite3",
            local_port,
        )
        path = tmp / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        clock = FakeClock()
        app = create_app(
            settings_from(config), clock=clock, config_path=path, config_origin=str(path)
        )
        client: TestClient[web.Request, web.Application] = TestClient(
            TestServer(app, host="127.0.0.1", handler_cancellation=True)
        )
        await client.start_server()
        stack.push_async_callback(client.close)
        site = Site(client, clock, wires, path)
        await _found(site, f"llamacpp-{local_port}")
        await site.get("/api/models")  # every list fetched once (the long TTLs keep them)
        await _traffic(site)
        await _break_the_config(site, config)
        yield site
