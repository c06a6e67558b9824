"""Last-known-good lists on disk: written when they change, served after a restart while the
upstream is down, ignored (never fatal) when damaged or foreign, never from a caller's key."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from localrouter.lists.cache import ModelList, Source
from localrouter.lists.persist import ListStore
from localrouter.providers.base import CatalogRef, ModelInfo
from tests.conftest import DaemonFactory, UpstreamFactory, eventually, openai_compatible


async def until_file(path: Path) -> dict[str, Any]:
    async def written() -> dict[str, Any] | None:
        return orjson.loads(path.read_bytes()) if path.exists() else None  # type: ignore[no-any-return]

    return await eventually(written, f"{path} being written")


async def served(client: Any) -> list[tuple[str, str]]:
    body = await (await client.get("/v1/models")).json()
    return [(m["id"], m["source"]) for m in body["data"]]


async def test_restart_with_the_upstream_down_serves_the_persisted_list(
    tmp_path: Path, upstream: UpstreamFactory, daemon: DaemonFactory
):
    up = await upstream()
    up.serve_models(["m1", "m2"])
    config = {"providers": [openai_compatible("local", up.url)]}
    first = await daemon(config, cache_dir=tmp_path)
    assert await served(first) == [("local/m1", "live"), ("local/m2", "live")]
    written = await until_file(tmp_path / "lists" / "local.json")
    assert [m["id"] for m in written["models"]] == ["m1", "m2"]
    assert sorted(os.listdir(tmp_path / "lists")) == ["local.json"]  # no temporary file left
    await first.close()

    up.status = 500  # the upstream is down when the daemon comes back
    second = await daemon(config, cache_dir=tmp_path)
    assert await served(second) == [("local/m1", "persisted"), ("local/m2", "persisted")]

    up.status = 200  # and replaced as soon as the upstream answers
    up.serve_models(["m3"])
    body = await (await second.get("/api/models?refresh=true")).json()
    assert [m["id"] for m in body["models"]] == ["local/m3"]
    assert await served(second) == [("local/m3", "live")]


@pytest.mark.parametrize(
    "content",
    [
        b"\x00\x01garbage",
        b'{"format": 1, "instance": "local", "type": "openai_compatible", "models": [{"id": "m',
        b'{"format": 1, "instance": "local", "type": "openai_compatible", "base_url": "BASE",'
        b' "fetched_at": 1, "models": [{"id": "m1", "context_length": "big"}]}',
        b'{"format": 1, "instance": "local", "type": "openai_compatible", "base_url":'
        b' "http://elsewhere.test/v1", "fetched_at": 1, "models": [{"id": "foreign"}]}',
        b'{"format": 99}',
        b"[]",
    ],
    ids=["garbage", "truncated", "wrong-type", "foreign", "future-format", "not-an-object"],
)
async def test_a_damaged_or_foreign_file_is_ignored_with_a_warning(
    tmp_path: Path,
    upstream: UpstreamFactory,
    daemon: DaemonFactory,
    capsys: pytest.CaptureFixture[str],
    content: bytes,
):
    up = await upstream(status=500)
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "local.json").write_bytes(content.replace(b"BASE", up.url.encode()))
    client = await daemon({"providers": [openai_compatible("local", up.url)]}, cache_dir=tmp_path)
    assert await served(client) == []
    health = await client.get("/health")
    assert health.status == 200
    assert "persist.file_ignored" in capsys.readouterr().out


async def test_lists_from_a_callers_key_are_never_written(
    tmp_path: Path, upstream: UpstreamFactory, daemon: DaemonFactory
):
    up = await upstream()
    up.serve_models(["shared"])
    config = {
        "providers": [{"name": "oa", "type": "openai", "base_url": up.url, "api_key": "sk-a"}]
    }
    client = await daemon(config, cache_dir=tmp_path)
    await served(client)
    path = tmp_path / "lists" / "oa.json"
    await until_file(path)
    up.serve_models(["only-for-the-caller"])
    body = await (await client.get("/api/models", headers={"X-Openai-Key": "sk-caller-1"})).json()
    assert [m["id"] for m in body["models"]] == ["oa/only-for-the-caller"]
    await client.close()  # every pending write lands before the app is gone
    assert [m["id"] for m in orjson.loads(path.read_bytes())["models"]] == ["shared"]
    assert sorted(os.listdir(tmp_path / "lists")) == ["oa.json"]


async def test_persist_false_writes_nothing(
    tmp_path: Path, upstream: UpstreamFactory, daemon: DaemonFactory
):
    up = await upstream()
    up.serve_models(["m1"])
    config = {"providers": [openai_compatible("local", up.url)], "model_cache": {"persist": False}}
    client = await daemon(config, cache_dir=tmp_path)
    await served(client)
    await client.close()
    assert not (tmp_path / "lists").exists()


async def test_every_model_field_survives_a_write_and_a_read(tmp_path: Path):
    """Persistence derives from ModelInfo: a field added there round-trips with no other edit."""
    full = ModelInfo(
        id="m",
        name="M",
        description="a model",
        created=1_700_000_000,
        context_length=8192,
        max_output_tokens=1024,
        pricing={"prompt": 1e-6, "completion": 2e-6},
        input_modalities=("text", "image"),
        output_modalities=("text",),
        capabilities=("chat", "vision"),
        supported_parameters=("tools",),
        aliases=("m-latest",),
        deprecated=True,
        active=False,
        catalog=CatalogRef("vendor/m", "provider_id"),
    )
    defaults = ModelInfo(id="another")
    unset = [
        f.name
        for f in dataclasses.fields(ModelInfo)
        if getattr(full, f.name) == getattr(defaults, f.name)
    ]
    assert unset == [], f"give these fields a value in this test: {unset}"
    store = ListStore(tmp_path, "inst", "openai_compatible", "http://127.0.0.1:9/v1")
    store.save_soon(ModelList((full,), Source.LIVE, 1_800_000_000.0, 1_800_003_600.0))
    await store.flush()
    loaded = await ListStore(tmp_path, "inst", "openai_compatible", "http://127.0.0.1:9/v1").load()
    assert loaded is not None
    assert loaded.models == (full,)
