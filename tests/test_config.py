"""Config: where it is found, ${VAR} secrets, defaults, and one clear message per mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from localrouter.base.errors import ConfigError
from localrouter.cli import main
from localrouter.config.loading import (
    EMBEDDED_DEFAULT,
    default_settings,
    find_config_path,
    load_config,
    parse_settings,
)
from localrouter.providers import PROVIDERS

VALID = """
server:
  port: 9000
providers:
  - name: oa
    type: openai
    api_key: ${MY_OPENAI_KEY}
  - name: box
    type: openai_compatible
    base_url: http://127.0.0.1:8000/v1
    headers:
      X-Team: ${TEAM_HEADER}
"""


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_locations_in_order(tmp_path: Path):
    """The config file is looked for in order: the explicit path, $LOCALROUTER_CONFIG, the XDG
    location, ~/.localrouter/config.yml, and else there is none."""
    xdg = write(tmp_path, "{}", "xdg/localrouter/config.yaml")
    legacy = write(tmp_path, "{}", "home/.localrouter/config.yml")
    explicit = tmp_path / "explicit.yaml"
    from_env = tmp_path / "env.yaml"
    env = {
        "LOCALROUTER_CONFIG": str(from_env),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "HOME": str(tmp_path / "home"),
    }
    assert find_config_path(explicit, env) == explicit
    assert find_config_path(None, env) == from_env
    del env["LOCALROUTER_CONFIG"]
    assert find_config_path(None, env) == xdg
    xdg.unlink()
    assert find_config_path(None, env) == legacy
    legacy.unlink()
    assert find_config_path(None, env) is None


def test_env_references_are_expanded(tmp_path: Path):
    env = {"MY_OPENAI_KEY": "sk-live-abcdef", "TEAM_HEADER": "blue"}
    loaded = load_config(write(tmp_path, VALID), env)
    oa, box = loaded.settings.providers
    assert oa.api_key is not None
    assert oa.api_key.get_secret_value() == "sk-live-abcdef"
    assert "sk-live-abcdef" not in repr(loaded.settings)
    assert box.headers == {"X-Team": "blue"}
    assert loaded.settings.server.port == 9000
    assert loaded.settings.server.host == "127.0.0.1"
    assert loaded.settings.server.models_deadline_seconds == 2.5
    assert loaded.origin == str(tmp_path / "config.yaml")


def test_standard_key_variable_fills_a_missing_api_key():
    text = "providers:\n  - {name: oa, type: openai}\n"
    settings = parse_settings(text, "c.yaml", {"OPENAI_API_KEY": "sk-from-env"})
    key = settings.providers[0].api_key
    assert key is not None
    assert key.get_secret_value() == "sk-from-env"


def test_embedded_default_has_keyless_providers_and_those_with_keys():
    """Local servers are not in it: discovery finds those that run (tests/test_discovery.py)."""
    default = default_settings({})
    keyless = {p.name for p in default.providers}
    assert "openrouter" in keyless
    assert not keyless & {"lmstudio", "ollama"}
    assert default.discovery.enabled
    assert "openai" not in keyless
    with_key = default_settings({"OPENAI_API_KEY": "sk-abc-123456"})
    assert "openai" in {p.name for p in with_key.providers}


def test_no_file_uses_the_embedded_default(tmp_path: Path):
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    loaded = load_config(None, env)
    assert loaded.origin == EMBEDDED_DEFAULT
    assert loaded.settings.providers


def test_ttl_defaults_by_kind():
    """Without an override a local server (openai_compatible on localhost, LM Studio) gets a 300 s
    TTL, while a cloud type, even at a loopback URL, and a remote server get default_ttl_seconds."""
    text = """
providers:
  - {name: cloud, type: openai, api_key: k, base_url: "http://127.0.0.1:1/v1"}
  - {name: lan, type: openai_compatible, base_url: "http://localhost:8000/v1"}
  - {name: remote, type: openai_compatible, base_url: "https://example.test/v1"}
  - {name: studio, type: lmstudio}
model_cache:
  default_ttl_seconds: 1234
"""
    settings = parse_settings(text, "c.yaml", {})
    ttls = {p.name: settings.ttl_for(p) for p in settings.providers}
    assert ttls == {"cloud": 1234, "lan": 300, "remote": 1234, "studio": 300}


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        (
            "server:\n  prot: 1\n",
            {},
            "c.yaml: server.prot: unknown key",
        ),
        (
            "server:\n  port: eighty\n",
            {},
            "c.yaml: server.port: Input should be a valid integer",
        ),
        (
            "providers:\n  - {name: a, type: lmstudio}\n  - {name: a, type: lmstudio}\n",
            {},
            "c.yaml: providers[1].name: duplicate instance name 'a' (also providers[0])",
        ),
        (
            "providers:\n  - {name: a, type: openia}\n",
            {},
            "c.yaml: providers[0].type: unknown provider type 'openia'; expected one of:",
        ),
        (
            "server: {auth_token: '${NOPE_KEY}'}\n",
            {},
            "c.yaml: server.auth_token: environment variable NOPE_KEY is not set",
        ),
        (
            "providers:\n  - {name: a, type: openai}\n",
            {},
            "c.yaml: providers[0]: provider 'a' needs an API key: set OPENAI_API_KEY",
        ),
        (
            "providers:\n  - {name: a, type: openai_compatible}\n",
            {},
            "c.yaml: providers[0]: provider type 'openai_compatible' has no default URL; "
            "set base_url",
        ),
        (
            "providers:\n  - {name: 'a/b', type: lmstudio}\n",
            {},
            "c.yaml: providers[0].name: String should match pattern",
        ),
        (
            "model_cache:\n  provider_ttl_overrides: {olama: 5}\n",
            {},
            "c.yaml: model_cache.provider_ttl_overrides.olama: 'olama' is neither an instance",
        ),
        ("providers: [\n", {}, "c.yaml: not valid YAML at line 2"),
        ("- a\n- b\n", {}, "c.yaml: expected a mapping at the top level, got list"),
    ],
)
def test_bad_config_is_refused_with_one_clear_message(
    text: str, env: dict[str, str], expected: str
):
    with pytest.raises(ConfigError) as caught:
        parse_settings(text, "c.yaml", env)
    assert expected in str(caught.value)


def test_check_prints_a_summary_without_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("MY_OPENAI_KEY", "sk-live-secret-999")
    monkeypatch.setenv("TEAM_HEADER", "header-secret-777")
    assert main(["check", "--config", str(write(tmp_path, VALID))]) == 0
    out = capsys.readouterr().out
    assert "oa" in out
    assert "openai_compatible" in out
    assert "http://127.0.0.1:8000/v1" in out
    assert "key set" in out
    assert "X-Team" in out
    assert "sk-live-secret-999" not in out
    assert "header-secret-777" not in out


def test_check_refuses_a_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    path = write(tmp_path, "providers:\n  - {name: a, type: nope}\n")
    assert main(["check", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}: providers[0].type: unknown provider type 'nope'" in err


def test_missing_explicit_file_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["check", "--config", str(tmp_path / "absent.yaml")]) == 1
    assert "absent.yaml: no such file" in capsys.readouterr().err


@pytest.mark.parametrize(
    "type_name", sorted(t for t, spec in PROVIDERS.items() if spec.key_required)
)
def test_a_missing_required_key_names_the_variable_to_set(type_name: str):
    variable = PROVIDERS[type_name].key_env
    assert variable
    with pytest.raises(ConfigError) as caught:
        parse_settings(f"providers:\n  - {{name: x, type: {type_name}}}\n", "c.yaml", {})
    assert f"needs an API key: set {variable}" in str(caught.value)


def test_keyless_types_need_no_key():
    for type_name in ("ollama", "lmstudio", "fal", "openrouter"):
        settings = parse_settings(f"providers:\n  - {{name: x, type: {type_name}}}\n", "c.yaml", {})
        (provider,) = settings.enabled_providers
        assert (provider.type, provider.api_key, settings.notes) == (type_name, None, ())


def test_the_example_config_checks_with_no_variable_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    for spec in PROVIDERS.values():
        if spec.key_env:
            monkeypatch.delenv(spec.key_env, raising=False)
    example = Path(__file__).parent.parent / "config" / "localrouter.example.yaml"
    assert main(["check", "--config", str(example)]) == 0
    out = capsys.readouterr().out
    assert "openai           openai" in out
    assert "(disabled)" in out.split("openai           openai")[1].splitlines()[0]
    assert "note: instance 'openai' is off: its api_key names OPENAI_API_KEY" in out


def test_an_unset_key_variable_leaves_the_instance_without_a_key():
    config = (
        "providers:\n"
        "  - {name: oa, type: openai, api_key: '${LR_UNSET_A}'}\n"
        "  - {name: lab, type: openai_compatible, base_url: 'http://127.0.0.1:9/v1',"
        " api_key: 'Bearer ${LR_UNSET_B}'}\n"
        "  - {name: gq, type: groq, api_key: '${LR_UNSET_C}', enabled: false}\n"
    )
    settings = parse_settings(config, "test.yaml", {})
    oa, lab, gq = settings.providers
    assert (oa.enabled, oa.api_key) == (False, None)
    assert (lab.enabled, lab.api_key) == (True, None)
    assert (gq.enabled, gq.api_key) == (False, None)
    assert settings.notes[0].startswith("instance 'oa' is off: its api_key names LR_UNSET_A")
    assert settings.notes[1] == "instance 'lab' runs without a key: LR_UNSET_B is not set"
    assert len(settings.notes) == 3


@pytest.mark.parametrize(
    ("entry", "where"),
    [
        ("{name: lab, type: openai_compatible, base_url: '${LR_UNSET_URL}'}", "base_url"),
        (
            "{name: lab, type: openai_compatible, base_url: 'http://127.0.0.1:9/v1',"
            " headers: {X-Org: '${LR_UNSET_HEADER}'}}",
            "headers.X-Org",
        ),
    ],
)
def test_an_unset_variable_where_a_value_is_required_is_an_error(entry: str, where: str):
    with pytest.raises(ConfigError, match=rf"providers\[0\]\.{where}: environment variable"):
        parse_settings(f"providers:\n  - {entry}\n", "test.yaml", {})
