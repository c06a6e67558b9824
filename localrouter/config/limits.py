"""The limits' settings (`limits:`, and each client's `limits:` and `model_limits:`): request
and token rates per minute, dollar budgets per day and month, calls in flight at once."""

from __future__ import annotations

import zoneinfo
from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

LIMIT_KEYS = (
    "requests_per_minute",
    "tokens_per_minute",
    "usd_per_day",
    "usd_per_month",
    "max_parallel",
)
DOLLAR_KEYS = ("usd_per_day", "usd_per_month")


class LimitValues(BaseModel):
    """Each limit, or None for none. A client's own or one of its model_limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_minute: int | None = Field(default=None, gt=0)
    tokens_per_minute: int | None = Field(default=None, gt=0)  # input + output tokens
    usd_per_day: float | None = Field(default=None, ge=0)
    usd_per_month: float | None = Field(default=None, ge=0)
    max_parallel: int | None = Field(default=None, gt=0)  # calls in flight at once
    # What a dollar budget does with a model whose price is unknown: let it through
    # uncounted ("allow"), or refuse it ("refuse"); None: as `limits:` says.
    usd_limits_unpriced: Literal["allow", "refuse"] | None = None

    @property
    def set(self) -> dict[str, float]:
        """The limits that are set, by key (LIMIT_KEYS)."""
        return {key: value for key in LIMIT_KEYS if (value := getattr(self, key)) is not None}

    @property
    def has_dollars(self) -> bool:
        return self.usd_per_day is not None or self.usd_per_month is not None


class LimitSettings(LimitValues):
    """`limits:`: for every client without limits of its own, and for anyone when no clients
    are set; and when days and months start, when answers warn, how budgets refuse."""

    timezone: str = "local"  # an IANA name, or "local" (this machine's)
    warn_at: float = Field(default=0.8, gt=0, le=1)  # a budget's used share that warns
    budget_status: Literal[429, 402, 403] = 429

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if value != "local":
            try:
                zoneinfo.ZoneInfo(value)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError(
                    f"unknown time zone {value[:40]!r}; write an IANA name such as "
                    "'Europe/Berlin', or 'local'"
                ) from None
        return value

    @property
    def refuses_unpriced(self) -> bool:
        return self.usd_limits_unpriced == "refuse"


def unpriced_note(path: str, values: LimitValues, refuses: bool) -> str | None:
    """What `check` and /api/v1/key say of a dollar limit: calls to unpriced models are
    outside it (or refused)."""
    if not values.has_dollars:
        return None
    if refuses:
        return f"{path}: calls to models with no known price are refused (usd_limits_unpriced)"
    return (
        f"{path}: calls to models with no known price are not counted in its dollar budget; "
        "price them (providers[].pricing) or set usd_limits_unpriced: refuse"
    )


def limit_notes(
    limits: LimitSettings,
    clients: Sequence[tuple[LimitValues | None, Mapping[str, LimitValues]]],
) -> tuple[str, ...]:
    """`unpriced_note` of every dollar limit: the top-level one, then each client's (its own
    limits, then its model_limits)."""
    found: list[tuple[str, LimitValues, bool]] = [("limits", limits, limits.refuses_unpriced)]
    for index, (own, by_model) in enumerate(clients):
        said = own.usd_limits_unpriced if own is not None else None
        refuses = (said or limits.usd_limits_unpriced) == "refuse"
        if own is not None:
            found.append((f"clients[{index}].limits", own, refuses))
        found += [
            (f"clients[{index}].model_limits.{glob}", values, refuses)
            for glob, values in by_model.items()
        ]
    return tuple(
        note for path, values, refuses in found if (note := unpriced_note(path, values, refuses))
    )
