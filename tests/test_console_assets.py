"""Issue 39's console as files and as the daemon serves them (no browser needed): the assets
stay under 300 KB gzipped; no script builds HTML from a string, evaluates code or sets an
inline style; index.html has no inline script or style and names its assets by version;
every module a script imports is there; the pages and assets come with the strict CSP and
the cache headers; and /api/models/about tells a model's catalog entry, for the Models page
to say where each field came from."""

from __future__ import annotations

import gzip
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestServer

from localrouter.cli import main
from localrouter.console.assets import ConsoleAssets
from tests.conftest import DaemonFactory
from tests.usage_wires import Wires, ledger_config, start_wires

STATIC = Path(__file__).resolve().parent.parent / "localrouter" / "console" / "static"
BUDGET_BYTES = 300 * 1024
ADMIN = "admin-console-assets-51d0"
# What would turn a string into markup or code, or set a style the CSP refuses.
SINKS = re.compile(
    r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\s*\(|new\s+Function|"
    r"createContextualFragment|DOMParser|cssText|setAttribute\(\s*[\"']style|\.style\b|"
    r"setTimeout\(\s*[\"'`]|setInterval\(\s*[\"'`]"
)
IMPORT = re.compile(r"""(?:\bfrom\s+|\bimport\s*\(\s*|\bimport\s+)["'](\.{1,2}/[^"']+)["']""")


def assets() -> list[Path]:
    return sorted(path for path in STATIC.rglob("*") if path.is_file())


def scripts() -> list[Path]:
    return [path for path in assets() if path.suffix in (".js", ".mjs")]


def test_the_assets_are_under_300_kb_gzipped() -> None:
    total = sum(len(gzip.compress(path.read_bytes(), compresslevel=9)) for path in assets())
    print(f"\nconsole: {len(assets())} assets, {total / 1024:.1f} KB gzipped (budget 300 KB)")
    assert total < BUDGET_BYTES


@pytest.mark.parametrize("script", scripts(), ids=lambda path: str(path.relative_to(STATIC)))
def test_no_script_makes_markup_or_code_from_a_string(script: Path) -> None:
    found = [
        f"{script.name}:{number}: {line.strip()}"
        for number, line in enumerate(script.read_text().splitlines(), 1)
        if SINKS.search(line)
    ]
    assert found == []


@pytest.mark.parametrize("script", scripts(), ids=lambda path: str(path.relative_to(STATIC)))
def test_every_imported_module_is_there(script: Path) -> None:
    imported = IMPORT.findall(script.read_text())
    missing = [name for name in imported if not (script.parent / name).resolve().is_file()]
    assert missing == []


def test_index_has_no_inline_script_or_style() -> None:
    index = (STATIC / "index.html").read_text()
    assert "{{version}}" in index
    for tag in re.findall(r"<script\b[^>]*>", index):
        assert "src=" in tag, tag
    assert not re.search(r"<style\b|\sstyle=|\son[a-z]+=", index)
    for reference in re.findall(r'(?:href|src)="/ui/assets/\{\{version\}\}/([^"]+)"', index):
        assert (STATIC / reference).is_file(), reference


async def test_pages_and_assets_are_served_with_the_csp_and_cache_headers(
    daemon: DaemonFactory,
) -> None:
    client = await daemon({"providers": [], "server": {"auth_token": ADMIN}})
    version = ConsoleAssets().version
    for path in ("/ui", "/ui/", "/ui/models", "/ui/models/oa/gpt-4o-mini", "/ui/requests/gen-1"):
        page = await client.get(path)  # no token: the page holds no data
        assert page.status == 200, path
        assert page.headers["Content-Type"].startswith("text/html")
        assert page.headers["Cache-Control"] == "no-cache"
        policy = page.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy
        assert "style-src 'self'" in policy
        assert "unsafe" not in policy
        assert f"/ui/assets/{version}/app.js" in await page.text()
    for path in assets():
        name = str(path.relative_to(STATIC))
        if name == "index.html":
            continue
        answer = await client.get(f"/ui/assets/{version}/{name}")
        assert answer.status == 200, name
        assert answer.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert "Content-Security-Policy" in answer.headers
        if path.suffix == ".js":
            assert answer.headers["Content-Type"].startswith("text/javascript")
        assert await answer.read() == path.read_bytes()
    stale = await client.get("/ui/assets/000000000000/app.js")
    assert stale.status == 404


@pytest.fixture
async def wires(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Wires:
    return await start_wires(aiohttp_server)


async def test_about_names_the_catalog_entry_a_model_matches(
    daemon: DaemonFactory, wires: Wires, tmp_path: Path
) -> None:
    config = ledger_config(
        tmp_path,
        wires.instances(),
        server={"auth_token": ADMIN},
        clients=[{"name": "alice", "token": "alice-console-assets-9e2f", "allow": ["oa/*"]}],
        models={"aliases": {"fast": "oa/gpt-4o-mini"}, "hide": ["oa/zz-*"]},
    )
    client = await daemon(config)
    headers = {"Authorization": f"Bearer {ADMIN}"}

    async def about(model_id: str) -> dict[str, Any]:
        answer = await client.get("/api/models/about", params={"id": model_id}, headers=headers)
        assert answer.status == 200, await answer.text()
        shown: dict[str, Any] = await answer.json()
        return shown

    known = await about("oa/gpt-4o-mini")
    assert known["aliases"] == ["fast"]
    assert known["clients"] == ["alice"]
    assert known["clients_configured"] is True
    catalog = known["catalog"]
    assert (catalog["id"], catalog["matched_via"]) == ("openai/gpt-4o-mini", "provider_id")
    listed = await (await client.get("/v1/models/oa/gpt-4o-mini", headers=headers)).json()
    assert catalog["fields"]["context_length"] == listed["context_length"]
    assert catalog["fields"]["name"] == listed["name"]

    unknown = await about("oa/zz-private-finetune-7")
    assert unknown["hidden"] is True
    assert unknown["catalog"] is None
    assert (await about("fast"))["catalog"] is None  # an alias: its target's page asks

    refused = await client.get(
        "/api/models/about",
        params={"id": "oa/gpt-4o-mini"},
        headers={"Authorization": "Bearer alice-console-assets-9e2f"},
    )
    assert refused.status == 403  # the admin's


async def test_config_never_shows_a_password_or_query_in_a_base_url(
    daemon: DaemonFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A base_url written with a user's password and a key in its query: /api/config (the
    console's Config page) and `localrouter check` show the URL without them."""
    password, query_key = "basicpass-4f1e8a", "querykey-b7c2d9"
    provider = {
        "name": "lab",
        "type": "openai_compatible",
        "base_url": f"http://user:{password}@127.0.0.1:9/v1?api-key={query_key}",
    }
    config = {"providers": [provider], "server": {"auth_token": ADMIN}}
    client = await daemon(config)
    answer = await client.get("/api/config", headers={"Authorization": f"Bearer {ADMIN}"})
    assert answer.status == 200
    shown = await answer.text()
    assert "127.0.0.1:9/v1" in shown
    assert password not in shown
    assert query_key not in shown

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["check", "--config", str(path)]) == 0
    printed = "".join(capsys.readouterr())
    assert "127.0.0.1:9/v1" in printed
    assert password not in printed
    assert query_key not in printed
