"""`localrouter usage` reads the running daemon's /api/usage and prints a table with a total,
or the rows as CSV (issue 34)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from localrouter.app import COMPONENTS
from localrouter.cli import main
from tests.conftest import FakeClock, served_on_a_port
from tests.test_proxy import FakeOpenAI, fake

__all__ = ["fake"]


@pytest.fixture
async def served(
    tmp_path: Path, fake: FakeOpenAI, clock: FakeClock
) -> AsyncIterator[tuple[Path, web.Application]]:
    """A daemon on a real port with a ledger, and a config file that points the CLI at it."""
    config: dict[str, Any] = {
        "providers": [
            {"name": "up", "type": "openai_compatible", "base_url": f"{fake.url}/v1"},
            {
                "name": "paid",
                "type": "openai_compatible",
                "base_url": f"{fake.url}/v1",
                "pricing": {"input": 1.0, "output": 2.0},
            },
        ],
        "usage": {"path": str(tmp_path / "usage.sqlite3")},
    }
    async with served_on_a_port(config, tmp_path, clock) as on:
        yield on.config, on.app


async def test_usage_prints_a_table_by_model_with_a_total(
    served: tuple[Path, web.Application], capsys: pytest.CaptureFixture[str]
) -> None:
    """One row per model and a total (the local instance is free, the other priced in the
    config); with --csv, the same rows as CSV."""
    path, app = served
    port = yaml.safe_load(path.read_text())["server"]["port"]

    async with aiohttp.ClientSession() as session:
        for model in ("up/gpt-4o-mini", "paid/gpt-4o-mini", "paid/gpt-4o-mini"):
            body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            async with session.post(url, json=body) as answer:
                assert answer.status == 200
    await app[COMPONENTS].recorder.flush()
    code = await asyncio.to_thread(main, ["usage", "--config", str(path), "--by", "model"])
    assert code == 0
    said = capsys.readouterr().out.splitlines()  # the daemon's log lines go there too
    lines = said[next(i for i, line in enumerate(said) if line.startswith("model ")) :]
    assert lines[0].split()[:3] == ["model", "requests", "failed"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["paid/gpt-4o-mini"][1] == "2"
    assert rows["up/gpt-4o-mini"][1] == "1"
    assert rows["total"][1] == "3"
    assert float(rows["total"][6]) == pytest.approx(2 * (3e-06 + 2 * 2e-06))
    code = await asyncio.to_thread(main, ["usage", "--config", str(path), "--by", "model", "--csv"])
    assert code == 0
    said = capsys.readouterr().out.splitlines()
    csv_lines = said[next(i for i, line in enumerate(said) if line.startswith("model,")) :]
    assert csv_lines[0].startswith("model,requests,failed,")
    assert len(csv_lines) == 3
