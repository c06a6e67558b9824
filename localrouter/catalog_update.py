"""`localrouter catalog match` and `localrouter catalog update`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import orjson
from pydantic import SecretStr
from yarl import URL

from localrouter.base.errors import UpstreamError
from localrouter.catalog import UPDATED, Catalog, load_catalog, parse_catalog
from localrouter.catalog.build import build_catalog, serialise
from localrouter.catalog.enrich import enrich
from localrouter.config.settings import ProviderSettings
from localrouter.lists.persist import write_atomically
from localrouter.providers import PROVIDERS
from localrouter.providers.base import CatalogRef
from localrouter.upstream.client import Canned, CannedTransport, SessionTransport, UpstreamClient

OPENROUTER_URL = "https://openrouter.ai/api/v1/models"
MODELS_DEV_URL = "https://models.dev/api.json"
LITELLM_URL = (
    "https://raw.githubusercontent.com/BerriAI/litellm/main/model_prices_and_context_window.json"
)
MIN_MODELS = 50


@dataclass(frozen=True, slots=True)
class MatchReport:
    rows: list[tuple[str, CatalogRef | None]]

    @property
    def matched(self) -> int:
        return sum(1 for _, found in self.rows if found is not None)

    def render(self) -> str:
        width = max((len(model_id) for model_id, _ in self.rows), default=10)
        lines = [
            f"{model_id:<{width}}  {found.id} ({found.matched_via})"
            if found
            else f"{model_id:<{width}}  -"
            for model_id, found in self.rows
        ]
        total = len(self.rows)
        rate = 100.0 * self.matched / total if total else 0.0
        lines.append(f"matched {self.matched} of {total} ({rate:.1f} %)")
        return "\n".join(lines)


async def match_body(body: bytes, provider_type: str, catalog: Catalog) -> MatchReport:
    """List a captured response body with the real adapter (through a transport that answers
    from memory), then enrich every model. Raises UpstreamError if the adapter cannot read it."""
    spec = PROVIDERS[provider_type]
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UpstreamError(
            f"not JSON; expected a saved answer of {provider_type}'s model-list endpoint"
        ) from None

    def answer(method: str, url: URL, sent: bytes) -> Canned:
        # A list is the GET; anything else the adapter asks (ollama's per-model details) gets
        # an empty object, and the adapter keeps what the list said.
        return Canned(body if method == "GET" else b"{}")

    settings = ProviderSettings(
        name="file",
        type=provider_type,
        base_url=spec.default_base_url or "http://file.invalid/v1",
        api_key=SecretStr("file") if spec.key_required else None,
    )
    http = UpstreamClient(CannedTransport(answer), timeout_seconds=30, max_bytes=256 * 1024 * 1024)
    models = await spec.factory(settings, spec).list_models(http)
    if not models:
        raise UpstreamError(
            f"no models in it for provider type {provider_type}; is it the answer of that "
            "provider's model-list endpoint, saved whole?"
        )
    enriched = enrich(models, catalog, spec.catalog_provider)
    return MatchReport([(model.id, model.catalog) for model in enriched])


class SourceUrls(NamedTuple):
    """Where `catalog update` fetches each source."""

    openrouter: str = OPENROUTER_URL
    models_dev: str = MODELS_DEV_URL
    litellm: str = LITELLM_URL


DEFAULT_SOURCES = SourceUrls()


async def fetch_catalog(current: Catalog, urls: SourceUrls = DEFAULT_SOURCES) -> tuple[bytes, int]:
    """Fetch the three live sources and check them: the new catalog's bytes and size. Raises
    on failure."""
    async with aiohttp.ClientSession(trust_env=True) as session:
        http = UpstreamClient(
            SessionTransport(session), timeout_seconds=60, max_bytes=256 * 1024 * 1024
        )
        openrouter = await http.get_json(urls.openrouter)
        models_dev = await http.get_json(urls.models_dev)
        litellm = await http.get_json(urls.litellm)
    document = build_catalog(openrouter, models_dev, urls._asdict(), litellm)
    _check(document, current)
    data = serialise(document)
    return data, parse_catalog(data, "new").size  # what we write must load


def update_catalog(cache_dir: Path, urls: SourceUrls = DEFAULT_SOURCES) -> str:
    """`localrouter catalog update`: fetch, check, then write atomically. Raises on failure."""
    current = load_catalog(cache_dir)
    data, size = asyncio.run(fetch_catalog(current, urls))
    cache_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(cache_dir / UPDATED, data)
    return f"catalog updated: {size} models (was {current.size}) in {cache_dir / UPDATED}"


def _check(document: dict[str, Any], current: Catalog) -> None:
    router = len(document["openrouter"])
    scoped = sum(map(len, document["providers"].values()))
    costs = sum(map(len, document["litellm"].values()))
    if min(router, scoped, costs) < MIN_MODELS:
        raise UpstreamError(
            f"the fetched lists are too small ({router} OpenRouter, {scoped} models.dev, "
            f"{costs} LiteLLM models; at least {MIN_MODELS} each expected); the catalog is "
            "unchanged"
        )
    if router + scoped + costs < current.size / 2:
        raise UpstreamError(
            f"the fetched lists hold {router + scoped + costs} models, less than half of the "
            f"current {current.size}; the catalog is unchanged"
        )
