"""The model list as Ollama's API shows it, for the tools that speak only Ollama (GitHub
Copilot's Ollama mode, JetBrains AI Assistant, Zed, Obsidian and Raycast plugins):
`GET /api/tags` (rendered once per data change and per client, like /v1/models), `POST
/api/show` (capabilities and context length, which Copilot needs to offer a model), `GET
/api/ps` and `GET /api/version`.

Names: Ollama names are `[namespace/]model:tag`; an id whose last part has no tag is listed
with `:latest`, and a name sent back with `:latest` finds the id without it."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import hdrs, web

from localrouter import PRODUCT
from localrouter.base.errors import BadRequest
from localrouter.http.bodies import JSON, Body, request_json
from localrouter.http.guard import CLIENT
from localrouter.lists.entries import capabilities_of
from localrouter.lists.resolve import Resolver, ollama_name

if TYPE_CHECKING:
    from localrouter.views.merged import MergedModels, ModelsView

# What /api/version reports: recent enough for the clients that check (Copilot asks for a
# version that knows tools and /api/show capabilities).
OLLAMA_VERSION = "0.12.0"
# Our capabilities in Ollama's words (Copilot offers only models with "tools").
_CAPABILITIES = {
    "chat": "completion",
    "tools": "tools",
    "vision": "vision",
    "embedding": "embedding",
    "reasoning": "thinking",
}
_FAMILY = re.compile(r"[a-z]+")


def ollama_tags(merged: MergedModels) -> Body:
    return Body.of({"models": [tag_entry(entry) for entry in merged.by_id.values()]})


def tag_entry(entry: dict[str, Any]) -> dict[str, Any]:
    name = ollama_name(entry["id"])
    return {
        "name": name,
        "model": name,
        "modified_at": _when(entry),
        "size": 0,  # unknown: served elsewhere
        "digest": hashlib.sha256(entry["id"].encode()).hexdigest(),
        "details": details(entry),
    }


def details(entry: dict[str, Any]) -> dict[str, Any]:
    family = family_of(entry)
    return {
        "parent_model": "",
        "format": "",
        "family": family,
        "families": [family],
        "parameter_size": "",
        "quantization_level": "",
    }


def family_of(entry: dict[str, Any]) -> str:
    """A family name from the upstream id (`llama-3.3-70b` -> llama), as Ollama names them."""
    upstream = str(entry.get("upstream_id") or entry["id"]).rpartition("/")[2].lower()
    found = _FAMILY.match(upstream)
    return found.group(0) if found else "unknown"


def capabilities(entry: dict[str, Any]) -> list[str]:
    """What Ollama clients look for, in Ollama's words (lists/entries.capabilities_of)."""
    return [_CAPABILITIES[name] for name in capabilities_of(entry) if name in _CAPABILITIES]


def show(entry: dict[str, Any], name: str) -> dict[str, Any]:
    family = family_of(entry)
    info: dict[str, Any] = {"general.architecture": family, "general.basename": name}
    if context := entry.get("context_length"):
        info[f"{family}.context_length"] = context
    return {
        "license": "",
        "modelfile": f"# served by localrouter as {entry['id']}\nFROM {entry['id']}\n",
        "parameters": "",
        "template": "{{ .Prompt }}",
        "details": details(entry),
        "model_info": info,
        "capabilities": capabilities(entry),
        "modified_at": _when(entry),
    }


def _when(entry: dict[str, Any]) -> str:
    created = datetime.fromtimestamp(entry.get("created") or 0, UTC)
    return created.strftime("%Y-%m-%dT%H:%M:%SZ")


async def version(_: web.Request) -> web.Response:
    return web.Response(
        body=orjson.dumps({"version": OLLAMA_VERSION}),
        content_type=JSON,
        headers={hdrs.SERVER: PRODUCT},  # another daemon's discovery skips this one
    )


async def running(_: web.Request) -> web.Response:
    """GET /api/ps: nothing is loaded here; the models run where they are served."""
    return web.Response(body=b'{"models":[]}', content_type=JSON)


class OllamaShow:
    """POST /api/show: one model, as Ollama describes it (found by the name rule of
    lists/resolve.py, as the caller may see it)."""

    def __init__(self, models: ModelsView, resolver: Resolver) -> None:
        self._models, self._resolver = models, resolver

    async def __call__(self, request: web.Request) -> web.Response:
        name = await shown_name(request)
        our_id = await self._resolver.our_id(name)
        entry = await self._models.entry(our_id, request[CLIENT])
        return web.Response(body=orjson.dumps(show(entry, name)), content_type=JSON)


async def shown_name(request: web.Request) -> str:
    """The model a POST /api/show names (`model`, or the older `name`)."""
    body = await request_json(request)
    name = body.get("model") or body.get("name") if isinstance(body, dict) else None
    if not isinstance(name, str) or not name:
        raise BadRequest("'model' is required: a name from GET /api/tags.", param="model")
    return name
