"""OpenRouter's own SDK (`@openrouter/sdk`, npm) given the daemon's `/api/v1` as its server URL:
it lists the models (every page, as it pages them), completes a chat whole and streamed, and
reads a refusal as OpenRouter's error. A small node script drives it against the daemon on
loopback, in front of a fake upstream.

The SDK is installed with npm (pinned) on first use, or the test is skipped saying why. It
validates every answer against OpenRouter's schemas, so a field missing or of the wrong type
fails the script."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import DaemonFactory, openai_compatible
from tests.npm_tools import loopback_env, node, npm_module, run_cli
from tests.openrouter_upstream import ANSWER, ChatUpstream

OPENROUTER_SDK_VERSION = "1.3.19"
TOKEN = "lr-token-openrouter-sdk-3c4d"
MODELS = ("qwen3-coder", "llama-3-8b", "mistral-small", "nomic-embed", "phi-4")

SCRIPT = """
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const folder = process.env.SDK_FOLDER;
const main = JSON.parse(readFileSync(join(folder, "package.json"), "utf8")).main;
const { OpenRouter } = await import(pathToFileURL(join(folder, main)).href);

const client = new OpenRouter({
  apiKey: process.env.LOCALROUTER_TOKEN,
  serverURL: process.env.BASE_URL,
  retryConfig: { strategy: "none" },
});
const messages = [{ role: "user", content: "hi" }];
const out = {};

const listed = await client.models.list();
out.ids = listed.result.data.map((model) => model.id);
out.total = listed.result.totalCount;
out.pricing = Object.fromEntries(listed.result.data.map((model) => [model.id, model.pricing]));

out.paged = [];
for await (const page of await client.models.list({ limit: 2 })) {
  out.paged.push(page.result.data.map((model) => model.id));
}

const chat = await client.chat.send({ chatRequest: { model: "lab/qwen3-coder", messages } });
out.answer = chat.choices[0].message.content;

const stream = await client.chat.send({
  chatRequest: { model: "lab/qwen3-coder", messages, stream: true },
});
out.streamed = "";
for await (const chunk of stream) {
  out.streamed += chunk.choices[0]?.delta?.content ?? "";
}

try {
  await client.chat.send({ chatRequest: { model: "acme/no-such-model", messages } });
} catch (error) {
  out.refused = { name: error.name, status: error.statusCode, code: error.error?.code };
}
console.log(JSON.stringify(out));
"""


@pytest.fixture(scope="session")
def openrouter_sdk() -> Path:
    return npm_module("@openrouter/sdk", OPENROUTER_SDK_VERSION)


async def test_openrouters_sdk_lists_and_chats_through_api_v1(
    openrouter_sdk: Path, aiohttp_server: Any, daemon: DaemonFactory, tmp_path: Path
):
    upstream = ChatUpstream(models=MODELS)
    server = await aiohttp_server(upstream.app())
    client = await daemon(
        {
            "server": {"auth_token": TOKEN},
            "providers": [openai_compatible("lab", str(server.make_url("/v1")))],
        }
    )
    script = tmp_path / "openrouter.mjs"
    script.write_text(SCRIPT)
    env = loopback_env(
        tmp_path / "home",
        SDK_FOLDER=str(openrouter_sdk),
        BASE_URL=str(client.make_url("/api/v1")),
        LOCALROUTER_TOKEN=TOKEN,
    )
    out, _ = await run_cli(node(), str(script), cwd=tmp_path, env=env)
    seen = orjson.loads(out.strip().splitlines()[-1])

    ids = sorted(f"lab/{model}" for model in MODELS)
    assert seen["ids"] == ids
    assert seen["total"] == len(MODELS)
    # No price is known for these: none reads as free.
    assert all(price == {"prompt": "-1", "completion": "-1"} for price in seen["pricing"].values())
    assert seen["paged"] == [ids[0:2], ids[2:4], ids[4:5]]
    assert seen["answer"] == ANSWER
    assert seen["streamed"] == ANSWER
    assert seen["refused"] == {"name": "NotFoundResponseError", "status": 404, "code": 404}
    assert upstream.paths == ["/v1/chat/completions"] * 2
    assert all(body["model"] == "qwen3-coder" for body in upstream.bodies)
