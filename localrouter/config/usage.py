"""The usage ledger's settings (`usage:`) and the prices a config may give (`pricing:` and
`model_pricing:` of an instance), which win over the catalog's."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

PER_MILLION = 1_000_000


class UsageSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    path: str | None = None  # default: the XDG state dir, localrouter/usage.sqlite3
    retention_days: int = Field(default=90, gt=0)  # per-request rows; daily totals: 400 days


class PriceSettings(BaseModel):
    """USD per million tokens, as providers publish them; what is left out is unknown, except
    cache reads and writes, which cost what input costs when not given."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: float | None = Field(default=None, ge=0)
    output: float | None = Field(default=None, ge=0)
    cache_read: float | None = Field(default=None, ge=0)
    cache_write: float | None = Field(default=None, ge=0)

    def per_token(self) -> dict[str, float]:
        """These prices in the catalog's keys and unit (OpenRouter's: USD per token)."""
        keys = {
            "prompt": self.input,
            "completion": self.output,
            "input_cache_read": self.cache_read,
            "input_cache_write": self.cache_write,
        }
        return {key: value / PER_MILLION for key, value in keys.items() if value is not None}
