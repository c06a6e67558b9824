"""Each server's marks in an answer (fingerprint.py asks the questions in its order and
decides): a signature only one server writes, the shapes of the model lists, and what a body
says when it is read as a JSON object."""

from __future__ import annotations

from typing import Any

from localrouter.discovery.asking import Answer, ServerKind
from localrouter.providers.parsing import text

_LMSTUDIO_UNEXPECTED = "Unexpected endpoint or method."


def signature(answer: Answer) -> ServerKind | None:
    """The server that wrote this answer, when only one server writes it so."""
    server = answer.server
    if server == "llama.cpp":
        return ServerKind.LLAMACPP
    if server.startswith("llamafile/"):
        return ServerKind.LLAMAFILE
    if server.startswith("ConcedoLlamaForKoboldServer"):
        return ServerKind.KOBOLDCPP
    error = object_of(answer).get("error")
    if answer.status == 200 and isinstance(error, str) and error.startswith(_LMSTUDIO_UNEXPECTED):
        return ServerKind.LMSTUDIO
    return None


def lmstudio_models(answer: Answer) -> list[dict[str, Any]] | None:
    """LM Studio's native model list (v1: `models` with `key`; v0: `data` with `state`)."""
    if answer.status != 200:
        return None
    body = object_of(answer)
    v1 = body.get("models")
    if isinstance(v1, list) and all(
        isinstance(item, dict) and "key" in item and "type" in item for item in v1
    ):
        return v1
    v0 = body.get("data")
    if (
        body.get("object") == "list"
        and isinstance(v0, list)
        and all(isinstance(item, dict) and "type" in item and "state" in item for item in v0)
    ):
        return v0
    return None


def openai_items(answer: Answer | None) -> list[dict[str, Any]] | None:
    """The items of an OpenAI list (`{"object": "list", "data": [{"id": ...}]}`), else None."""
    if answer is None or answer.status != 200:
        return None
    body = object_of(answer)
    data = body.get("data")
    if body.get("object") != "list" or not isinstance(data, list):
        return None
    if not all(isinstance(item, dict) and text(item.get("id")) for item in data):
        return None
    return data


def is_koboldcpp(answer: Answer) -> bool:
    return answer.status == 200 and object_of(answer).get("result") == "KoboldCpp"


def is_localai(answer: Answer) -> bool:
    body = object_of(answer)
    return answer.status == 200 and bool(text(body.get("version"))) and "endpoints" in body


def is_jan(answer: Answer) -> bool:
    info = object_of(answer).get("info")
    title = info.get("title") if isinstance(info, dict) else None
    return answer.status == 200 and isinstance(title, str) and title.startswith("Jan ")


def tgi_info(answer: Answer) -> bool:
    body = object_of(answer)
    router = body.get("router")
    return (
        answer.status == 200
        and bool(text(body.get("model_id")))
        and isinstance(router, str)
        and router.startswith("text-generation-router")
    )


def is_sglang_info(answer: Answer) -> bool:
    body = object_of(answer)
    return (
        answer.status == 200
        and bool(text(body.get("model_path")))
        and isinstance(body.get("is_generation"), bool)
    )


def object_of(answer: Answer | None) -> dict[str, Any]:
    """The answer's JSON object, or an empty one."""
    found = answer.obj() if answer is not None else None
    return found if found is not None else {}


def list_length(value: Any) -> int | None:
    """How many items a JSON list holds; None when it is not a list."""
    return len(value) if isinstance(value, list) else None
