"""The list as LM Studio's `GET /api/v0/models` gives it: `type` (llm, vlm, embeddings),
`state`, `max_context_length`, `arch`, `publisher`, `quantization`. A model served elsewhere
is always ready (`loaded`), and is no local file (`compatibility_type` `remote`, no
quantization known)."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from localrouter.http.bodies import JSON, Body
from localrouter.http.guard import CLIENT
from localrouter.lists.entries import capabilities_of
from localrouter.views.merged import MergedModels, ModelsView
from localrouter.views.ollama import family_of


def lmstudio_models(merged: MergedModels) -> Body:
    data = [lmstudio_entry(entry) for entry in merged.by_id.values()]
    return Body.of({"object": "list", "data": data})


def lmstudio_entry(entry: dict[str, Any]) -> dict[str, Any]:
    upstream = str(entry.get("upstream_id") or entry["id"])
    org, slash, _ = upstream.rpartition("/")
    made: dict[str, Any] = {
        "id": entry["id"],
        "object": "model",
        "type": lmstudio_type(entry),
        "publisher": org.rpartition("/")[2] if slash else entry["owned_by"],
        "arch": family_of(entry),
        "compatibility_type": "remote",
        "quantization": "",
        "state": "loaded",
    }
    if context := entry.get("context_length"):
        made["max_context_length"] = context
    return made


def lmstudio_type(entry: dict[str, Any]) -> str:
    capabilities = capabilities_of(entry)
    if "embedding" in capabilities:
        return "embeddings"
    return "vlm" if "vision" in capabilities else "llm"


class LMStudioModel:
    """GET /api/v0/models/{id}: one model, found as /v1/models/{id} finds it."""

    def __init__(self, models: ModelsView) -> None:
        self._models = models

    async def __call__(self, request: web.Request) -> web.Response:
        entry = await self._models.entry(request.match_info["model_id"], request[CLIENT])
        return web.Response(body=orjson.dumps(lmstudio_entry(entry)), content_type=JSON)
