"""What a call is expected to use before it is made: its input from the request's size, its
output from the most it asked for (max_tokens and its kin in each protocol), else the model's
output limit, else DEFAULT_OUTPUT_TOKENS; and what that would cost at the model's prices."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from localrouter.base.jsonload import Json
from localrouter.usage.cost import unrounded_cost
from localrouter.usage.record import CostSource
from localrouter.usage.tokens import estimated

DEFAULT_OUTPUT_TOKENS = 4096
_FREE = CostSource.FREE  # an enum's member, looked up once
# Exact types (a bool is no count), compared by identity: an isinstance() that fails looks up
# the value's __class__ for each type, about a microsecond for a request that says none.
_NUMBERS = (int, float)
# Every key output_cap reads: most requests have none, and are told so by one C call.
_CAP_KEYS = frozenset(("max_completion_tokens", "max_tokens", "max_output_tokens", "options"))


def output_cap(body: Json) -> int | None:
    """The most output tokens a request asks for, when it says: the first positive number of
    Chat Completions' two names, Messages' and Responses' name, and Ollama's num_predict."""
    if _CAP_KEYS.isdisjoint(body):
        return None
    options = body.get("options")
    said: tuple[Any, ...] = (
        body.get("max_completion_tokens"),
        body.get("max_tokens"),
        body.get("max_output_tokens"),
        options.get("num_predict") if type(options) is dict else None,
    )
    for value in said:
        if type(value) in _NUMBERS and value > 0:
            return int(value)
    return None


# Input tokens, output tokens, and their cost (None: the model's price is unknown). A plain
# tuple: one is made per limited call.
Estimate = tuple[int, int, float | None]


class Rates:
    """What a call to one model is expected to use and cost: its prices (USD per token, the
    catalog's keys; None: unknown) and its listed output limit, worked out once per model and
    list and asked once a call."""

    __slots__ = ("_output", "_prices", "_source")

    def __init__(
        self, prices: Mapping[str, float] | None, source: CostSource, listed_output: int | None
    ) -> None:
        self._prices, self._source = prices, source
        self._output = listed_output or DEFAULT_OUTPUT_TOKENS

    def estimate(self, request_bytes: int, asked_output: int | None) -> Estimate:
        input_tokens = estimated(request_bytes)
        output_tokens = asked_output or self._output
        prices = self._prices
        if self._source is _FREE:
            cost: float | None = 0.0
        elif prices is None:
            cost = None
        else:
            cost = unrounded_cost(input_tokens, output_tokens, prices)
        return input_tokens, output_tokens, cost
