"""What a server tells of itself once fingerprint.py has told which one it is: its version,
how many models it lists, its context window, and whether its list wants a key."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from localrouter.discovery.asking import Answer, Asker, Finding, ServerKind, ServerState
from localrouter.discovery.signs import lmstudio_models, object_of, openai_items
from localrouter.providers.parsing import positive_int, text


async def finish_openai(
    asker: Asker,
    kind: ServerKind,
    items: list[dict[str, Any]] | None,
    listing: Answer | None = None,
) -> Finding:
    """A server identified from (or, `items` None, without) its OpenAI list: its version and
    context window."""
    if kind is ServerKind.LLAMACPP:
        return await llamacpp(asker)
    if kind is ServerKind.LLAMAFILE:
        return await llamafile(asker, listing.server if listing else "")
    if kind is ServerKind.KOBOLDCPP:
        return await koboldcpp(asker)
    if kind is ServerKind.LOCALAI:
        return await localai(asker, await asker.get("/.well-known/localai.json"))
    models = len(items) if items is not None else None
    context = positive_int(items[0].get("max_model_len")) if items and len(items) == 1 else None
    version = None
    if kind is ServerKind.VLLM:
        version = await version_of(asker, "/version", "version")
    elif kind is ServerKind.SGLANG:
        version = await version_of(asker, "/get_server_info", "version")
    elif kind is ServerKind.TGI:
        info = object_of(await asker.maybe("/info"))
        version = text(info.get("version"))
        context = positive_int(info.get("max_total_tokens")) or context
        if models is None and text(info.get("model_id")):
            models = 1  # TGI serves the one model it was started with
    return asker.finding(
        kind, ServerState.SERVING, version=version, models=models, context_length=context
    )


async def llamacpp(asker: Asker) -> Finding:
    props = await asker.maybe("/props")
    info = object_of(props) if props is not None and props.status == 200 else {}
    settings = info.get("default_generation_settings")
    settings = settings if isinstance(settings, dict) else {}
    context = positive_int(settings.get("n_ctx")) or positive_int(info.get("n_ctx"))
    return await from_v1_models(
        asker, ServerKind.LLAMACPP, version=text(info.get("build_info")), context=context
    )


async def llamafile(asker: Asker, server: str) -> Finding:
    version = server.partition("/")[2] or None
    return await from_v1_models(asker, ServerKind.LLAMAFILE, version=version)


async def koboldcpp(asker: Asker) -> Finding:
    extra = await asker.maybe("/api/extra/version")
    capabilities = object_of(extra) if extra is not None and extra.status == 200 else {}
    protected = capabilities.get("protected") is True
    ctx = await asker.maybe("/api/extra/true_max_context_length")
    context = positive_int(object_of(ctx).get("value")) if ctx is not None else None
    found = await from_v1_models(
        asker,
        ServerKind.KOBOLDCPP,
        version=text(capabilities.get("version")),
        context=context,
    )
    if protected:  # its generation endpoints want the password
        return replace(found, state=ServerState.AUTH_REQUIRED)
    return found


async def localai(asker: Asker, described: Answer) -> Finding:
    asker.note(described, "LocalAI's discovery document")
    version = text(object_of(described).get("version"))
    return await from_v1_models(asker, ServerKind.LOCALAI, version=version)


async def from_v1_models(
    asker: Asker, kind: ServerKind, *, version: str | None = None, context: int | None = None
) -> Finding:
    """A finding whose model count comes from `/v1/models` (refused there: auth_required)."""
    listing = await asker.maybe("/v1/models")
    if listing is not None and listing.refused:
        return asker.finding(kind, ServerState.AUTH_REQUIRED, version=version)
    items = openai_items(listing) if listing is not None else None
    models = len(items) if items is not None else None
    return asker.finding(
        kind, ServerState.SERVING, version=version, models=models, context_length=context
    )


async def lmstudio_from_catch_all(asker: Asker) -> Finding:
    for path in ("/api/v1/models", "/api/v0/models"):
        answer = await asker.maybe(path)
        if answer is None:
            break
        if (listed := lmstudio_models(answer)) is not None:
            return lmstudio(asker, listed)
        if answer.refused:
            return asker.finding(ServerKind.LMSTUDIO, ServerState.AUTH_REQUIRED)
    # Before 0.3.6 LM Studio had only the OpenAI endpoints.
    listing = await asker.maybe("/v1/models")
    items = openai_items(listing) if listing is not None else None
    return asker.finding(
        ServerKind.LMSTUDIO, ServerState.SERVING, models=len(items) if items is not None else None
    )


def lmstudio(asker: Asker, listed: list[dict[str, Any]]) -> Finding:
    context = None
    if len(listed) == 1:
        model = listed[0]
        loaded = model.get("loaded_instances")
        if isinstance(loaded, list) and loaded and isinstance(loaded[0], dict):
            config = loaded[0].get("config")
            context = (
                positive_int(config.get("context_length")) if isinstance(config, dict) else None
            )
        context = context or positive_int(model.get("loaded_context_length"))
        context = context or positive_int(model.get("max_context_length"))
    return asker.finding(
        ServerKind.LMSTUDIO, ServerState.SERVING, models=len(listed), context_length=context
    )


async def version_of(asker: Asker, path: str, key: str) -> str | None:
    answer = await asker.maybe(path)
    if answer is None or answer.status != 200:
        return None
    return text(object_of(answer).get(key))
