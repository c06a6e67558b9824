"""The list in OpenRouter's `GET /api/v1/models` schema, for clients of OpenRouter-shaped
providers: `id`, `canonical_slug`, `name`, `created`, `description`, `context_length`,
`architecture`, `pricing` (USD per token as decimal strings), `top_provider`,
`supported_parameters`; what is not known is null, as OpenRouter writes it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from localrouter.http.bodies import Body

if TYPE_CHECKING:
    from localrouter.views.merged import MergedModels


def openrouter_models(merged: MergedModels) -> Body:
    return Body.of({"data": [openrouter_entry(entry) for entry in merged.by_id.values()]})


def openrouter_entry(entry: dict[str, Any]) -> dict[str, Any]:
    architecture = entry.get("architecture") or {}
    inputs = architecture.get("input_modalities") or ["text"]
    outputs = architecture.get("output_modalities") or ["text"]
    top = entry.get("top_provider") or {}
    return {
        "id": entry["id"],
        "canonical_slug": entry["id"],
        "hugging_face_id": None,
        "name": entry.get("name") or entry["id"],
        "created": entry.get("created") or 0,
        "description": entry.get("description") or "",
        "context_length": entry.get("context_length"),
        "architecture": {
            "modality": f"{'+'.join(inputs)}->{'+'.join(outputs)}",
            "input_modalities": inputs,
            "output_modalities": outputs,
            "tokenizer": "Other",
            "instruct_type": None,
        },
        "pricing": entry.get("pricing") or {"prompt": "0", "completion": "0"},
        "top_provider": {
            "context_length": entry.get("context_length"),
            "max_completion_tokens": top.get("max_completion_tokens"),
            "is_moderated": False,
        },
        "per_request_limits": None,
        "supported_parameters": entry.get("supported_parameters") or [],
        "default_parameters": {},
        "supported_voices": None,
        "knowledge_cutoff": None,
        "expiration_date": None,
        "links": {"details": f"/api/v1/models/{entry['id']}/endpoints"},
    }
