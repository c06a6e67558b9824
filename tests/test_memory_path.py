"""A cached list route answers from memory (`now`) when the caller's list and its rendering are
there, and is awaited otherwise. The two paths must give the same bytes: these tests ask each
list route twice on a fresh daemon, the first request necessarily awaited (nothing is rendered
yet for that route and caller), the second from memory, and compare status, body and headers."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import DaemonFactory, Upstream, UpstreamFactory, openai_compatible

LIST_PATHS = (
    "/v1/models",
    "/api/tags",
    "/api/v0/models",
    "/v1/model/info",
    "/model/info",
    "/model_group/info",
    "/api/v1/models",
)
TOKEN = "memory-path-token-1a2b3c"
# Per request: a header that varies per answer and says nothing of the route's work.
VARYING = frozenset({"Date"})


def config(upstream: Upstream, *, with_client: bool) -> dict[str, Any]:
    made: dict[str, Any] = {
        "providers": [openai_compatible("lab", upstream.url)],
        "models": {"aliases": {"coder": "lab/qwen3-coder"}, "hide": ["lab/secret-*"]},
    }
    if with_client:
        made["clients"] = [{"name": "tool", "token": TOKEN, "allow": ["lab/qwen*", "coder"]}]
    return made


def seen(response: Any, body: bytes) -> tuple[int, bytes, dict[str, str]]:
    headers = {name: value for name, value in response.headers.items() if name not in VARYING}
    return response.status, body, headers


@pytest.mark.parametrize("with_client", [False, True], ids=["anyone", "client"])
@pytest.mark.parametrize("gzip", [False, True], ids=["identity", "gzip"])
async def test_memory_path_answers_byte_for_byte_as_the_awaited_path(
    upstream: UpstreamFactory, daemon: DaemonFactory, with_client: bool, gzip: bool
) -> None:
    """Every cached list route gives the same status, body and headers whether it was
    awaited (first request) or answered from memory (the next), for anyone and for a client
    with an allowlist, with and without gzip."""
    fake = await upstream()
    fake.serve_models(["qwen3-coder", "qwen3-small", "secret-model", "llama-3"])
    client = await daemon(config(fake, with_client=with_client))
    headers = {"Accept-Encoding": "gzip" if gzip else "identity"}
    if with_client:
        headers["Authorization"] = f"Bearer {TOKEN}"
    for path in LIST_PATHS:
        answers = []
        for _ in range(2):
            response = await client.get(path, headers=headers, auto_decompress=False)
            answers.append(seen(response, await response.read()))
        awaited, from_memory = answers
        assert awaited[0] == 200, path
        assert from_memory == awaited, path


async def test_memory_path_answers_304_as_the_awaited_path(
    upstream: UpstreamFactory, daemon: DaemonFactory
) -> None:
    """A conditional request is answered 304 with the same headers on both paths: the ETag
    comes from one daemon, then a fresh daemon with the same config is asked twice."""
    fake = await upstream()
    fake.serve_models(["qwen3-coder", "llama-3"])
    first = await daemon(config(fake, with_client=False))
    etags = {path: (await first.get(path)).headers["ETag"] for path in LIST_PATHS}
    fresh = await daemon(config(fake, with_client=False))
    for path, etag in etags.items():
        answers = []
        for _ in range(2):
            response = await fresh.get(path, headers={"If-None-Match": etag})
            answers.append(seen(response, await response.read()))
        awaited, from_memory = answers
        assert awaited[0] == 304, path
        assert from_memory == awaited, path
