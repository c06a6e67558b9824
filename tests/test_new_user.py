"""What a new user hit (issue 33, item 14): an empty config file, the catalog command's help,
a service installed from a virtualenv under /tmp."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from localrouter.app import create_app
from localrouter.cli import main
from localrouter.config.loading import parse_settings
from localrouter.systemd import private_tmp_warning


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "server:\n  port: 8741\n"])
def test_check_says_when_a_config_file_configures_no_instances(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    """An empty file (or one without providers) serves nothing; `check` says so, and how to
    get the embedded default back."""
    path = tmp_path / "config.yaml"
    path.write_text(text)
    assert main(["check", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "instances: 0" in out
    assert "configures no provider instances" in out
    assert "remove the file to run on the embedded default" in out


async def test_health_notes_a_config_without_instances(aiohttp_client: Any) -> None:
    """The same note reaches /health (and the log at start), which stays ok."""
    client = await aiohttp_client(create_app(parse_settings("", "empty.yaml", {})))
    health = await (await client.get("/health")).json()
    assert health["status"] == "ok"
    assert any("configures no provider instances" in note for note in health["notes"])


def test_catalog_update_help_names_every_source() -> None:
    """`catalog update --help` names the three sources it fetches."""
    shown = subprocess.run(
        [sys.executable, "-m", "localrouter", "catalog", "update", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "OpenRouter" in shown
    assert "models.dev" in shown
    assert "LiteLLM" in shown


@pytest.mark.parametrize(
    ("prefix", "warned"),
    [("/tmp/venv", True), ("/var/tmp/x/.venv", True), ("/home/me/.venv", False), ("/tmpx", False)],
)
def test_service_install_warns_of_an_installation_private_tmp_hides(
    prefix: str, warned: bool
) -> None:
    """The unit's PrivateTmp=yes hides /tmp from the service: installing from a virtualenv
    there says so."""
    warning = private_tmp_warning(prefix)
    assert (warning is not None) is warned
    if warning is not None:
        assert "PrivateTmp=yes" in warning
        assert prefix in warning
