"""Every adapter reads its captured answers through a transport that answers from memory: no
server, no sleeping. The spec's auth goes out exactly as the provider wants it, and only there."""

from __future__ import annotations

import pytest
from pydantic import SecretStr
from yarl import URL

from localrouter.base.errors import UpstreamError
from localrouter.config.settings import ProviderSettings
from localrouter.providers import PROVIDERS
from localrouter.upstream.client import Canned, CannedTransport, UpstreamClient
from tests.conftest import FIXTURES
from tests.test_provider_contract import KEY, SCENARIOS

BASE = "http://canned.invalid"


def canned_client(type_name: str) -> tuple[UpstreamClient, CannedTransport]:
    scenario = SCENARIOS[type_name]

    def answer(method: str, url: URL, body: bytes) -> Canned:
        fixture = scenario.route(url.relative(), body)
        if fixture is None:
            return Canned(b'{"error": {"message": "no such thing"}}', status=404)
        return Canned((FIXTURES / fixture).read_bytes().replace(b"UPSTREAM", f"{BASE}/v1".encode()))

    transport = CannedTransport(answer)
    return UpstreamClient(transport, timeout_seconds=5, max_bytes=1 << 20), transport


def settings_for(type_name: str) -> ProviderSettings:
    scenario = SCENARIOS[type_name]
    return ProviderSettings(
        name="p",
        type=type_name,
        base_url=BASE + scenario.base_path,
        api_key=SecretStr(KEY) if scenario.keyed else None,
        **scenario.config,
    )


@pytest.mark.parametrize("type_name", sorted(PROVIDERS))
async def test_each_adapter_parses_its_captured_answers(type_name: str) -> None:
    spec, settings = PROVIDERS[type_name], settings_for(type_name)
    http, transport = canned_client(type_name)
    models = await spec.factory(settings, spec).list_models(http)
    assert {model.id for model in models} == SCENARIOS[type_name].expected_ids
    for method, url, headers in transport.sent:
        assert KEY not in str(url)
        assert headers["User-Agent"].startswith("localrouter/")
        for name, value in SCENARIOS[type_name].auth.items():
            assert headers[name] == value, (method, url)
        others = {name for name, value in headers.items() if KEY in value}
        assert others <= set(SCENARIOS[type_name].auth)


async def test_a_canned_redirect_is_refused_like_a_real_one() -> None:
    transport = CannedTransport(
        lambda method, url, body: Canned(b"", status=307, headers={"Location": "http://x.invalid/"})
    )
    http = UpstreamClient(transport, timeout_seconds=5, max_bytes=1024, instance="p")
    with pytest.raises(UpstreamError, match=r"instance 'p'.*redirect to http://x\.invalid/"):
        await http.get_json(BASE + "/v1/models")


async def test_a_canned_answer_over_the_limit_is_refused() -> None:
    transport = CannedTransport(lambda method, url, body: Canned(b"[" + b"1," * 600 + b"1]"))
    http = UpstreamClient(transport, timeout_seconds=5, max_bytes=1024, instance="p")
    with pytest.raises(UpstreamError, match="more than 1024 bytes"):
        await http.get_json(BASE + "/v1/models")
