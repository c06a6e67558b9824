"""What a call cost: its tokens at the prices of the model that answered. A price the config
gives (an instance's `pricing`, or `model_pricing` for some of its models) wins over the
catalog's; a local instance with no price in the config is free; a model with no known
price is unpriced, its cost null, never 0."""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase

from localrouter.config.settings import ProviderSettings
from localrouter.providers.base import ProviderKind
from localrouter.usage.record import CostSource, Tokens

_FREE = CostSource.FREE  # an enum's member, looked up once

Prices = tuple[Mapping[str, float] | None, CostSource]


def prices_for(
    provider: ProviderSettings, upstream_id: str, listed: Mapping[str, float] | None
) -> Prices:
    """The prices (the catalog's keys, USD per token) a call to `upstream_id` on `provider`
    is charged at, and where they come from; `listed` is the model's listing's pricing."""
    configured = configured_prices(provider, upstream_id)
    if configured is not None:
        return configured
    if listed:
        return listed, CostSource.CATALOG
    return None, CostSource.UNPRICED


def configured_prices(provider: ProviderSettings, upstream_id: str) -> Prices | None:
    """What the config alone says a call to `upstream_id` on `provider` costs, or None when
    it does not say (the listing's prices decide). Worked out once per instance's settings
    and model: kept by the settings' identity (a reload makes new ones), up to a bound."""
    key = id(provider), upstream_id
    found = _configured.get(key)
    if found is not None and found[0] is provider:
        return found[1]
    if len(_configured) >= _CONFIGURED_KEPT:
        _configured.clear()
    decided = _configured_prices(provider, upstream_id)
    _configured[key] = provider, decided
    return decided


def forget_configured_prices() -> None:
    """A config (re)loaded: the old settings' prices are not asked for again."""
    _configured.clear()


_CONFIGURED_KEPT = 4096
_configured: dict[tuple[int, str], tuple[ProviderSettings, Prices | None]] = {}


def _configured_prices(provider: ProviderSettings, upstream_id: str) -> Prices | None:
    for pattern, prices in provider.model_pricing.items():
        if fnmatchcase(upstream_id, pattern):
            return prices.per_token(), CostSource.CATALOG
    if provider.pricing is not None:
        return provider.pricing.per_token(), CostSource.CATALOG
    if provider.kind is ProviderKind.LOCAL:
        return None, CostSource.FREE
    return None


def cost_of(tokens: Tokens, prices: Mapping[str, float]) -> float | None:
    """USD for `tokens` at `prices`, or None when a price the call needs is unknown. Cache
    reads and writes cost what the catalog says they cost, else what input costs; reasoning
    is output, at `internal_reasoning` where the catalog prices it apart (above 0)."""
    if not (tokens.cache_read_tokens or tokens.cache_write_tokens or tokens.reasoning_tokens):
        return plain_cost(tokens.input_tokens, tokens.output_tokens, prices)
    prompt, completion = prices.get("prompt"), prices.get("completion")
    uncached = max(tokens.input_tokens - tokens.cache_read_tokens - tokens.cache_write_tokens, 0)
    if (uncached and prompt is None) or (tokens.output_tokens and completion is None):
        return None
    read = prices.get("input_cache_read", prompt)
    written = prices.get("input_cache_write", prompt)
    if (tokens.cache_read_tokens and read is None) or (
        tokens.cache_write_tokens and written is None
    ):
        return None
    reasoning_price = prices.get("internal_reasoning", completion) or 0.0
    answered = tokens.output_tokens - tokens.reasoning_tokens
    total = (
        uncached * (prompt or 0.0)
        + tokens.cache_read_tokens * (read or 0.0)
        + tokens.cache_write_tokens * (written or 0.0)
        + max(answered, 0) * (completion or 0.0)
        + min(tokens.reasoning_tokens, tokens.output_tokens) * reasoning_price
        + prices.get("request", 0.0)
    )
    return round(total, 12)


def plain_cost(input_tokens: int, output_tokens: int, prices: Mapping[str, float]) -> float | None:
    """cost_of for counts with no cache reads or writes and no reasoning (the common call),
    whose other terms are all 0."""
    total = unrounded_cost(input_tokens, output_tokens, prices)
    return round(total, 12) if total is not None else None


def unrounded_cost(
    input_tokens: int, output_tokens: int, prices: Mapping[str, float]
) -> float | None:
    """plain_cost with float noise left in (an estimate's: a round costs more than the sum)."""
    prompt, completion = prices.get("prompt"), prices.get("completion")
    if (input_tokens and prompt is None) or (output_tokens and completion is None):
        return None
    return (
        input_tokens * (prompt or 0.0)
        + output_tokens * (completion or 0.0)
        + prices.get("request", 0.0)
    )


def priced(
    tokens: Tokens, prices: Mapping[str, float] | None, source: CostSource
) -> tuple[float | None, CostSource]:
    """`cost_usd` and `cost_source` for a record."""
    if source is _FREE:
        return 0.0, source
    if prices is None:
        return None, CostSource.UNPRICED
    cost = cost_of(tokens, prices)
    return (cost, source) if cost is not None else (None, CostSource.UNPRICED)
