"""The ledger's numbers on /metrics: tokens and cost by client and model, the requests that
could not be priced, and the time to a stream's first token by route. Counted as records
are settled (off the request's path), turned into metric families when scraped."""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Iterator
from itertools import accumulate

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from localrouter.usage.record import CallRecord, CostSource

TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TOKEN_TYPES = ("input", "output", "cache_read", "cache_write", "reasoning")


class UsageMetrics(Collector):
    def __init__(self) -> None:
        self.tokens: Counter[tuple[str, str, str]] = Counter()  # (client, model, type)
        self.cost: dict[tuple[str, str], float] = {}  # (client, model)
        self.unpriced = 0
        self.ttft: dict[str, list[float]] = {}  # route -> bucket counts, the last +Inf
        self.ttft_sum: dict[str, float] = {}

    def count(self, record: CallRecord) -> None:
        client, model = record.client or "", record.model or ""
        tokens = record.tokens
        counts = (
            tokens.input_tokens,
            tokens.output_tokens,
            tokens.cache_read_tokens,
            tokens.cache_write_tokens,
            tokens.reasoning_tokens,
        )
        for kind, count in zip(TOKEN_TYPES, counts, strict=True):
            if count:
                self.tokens[(client, model, kind)] += count
        if record.cost_usd is not None:
            pair = (client, model)
            self.cost[pair] = self.cost.get(pair, 0.0) + record.cost_usd
        elif record.cost_source is CostSource.UNPRICED and record.model is not None:
            self.unpriced += 1
        if record.ttft_ms is not None:
            seconds = record.ttft_ms / 1000.0
            buckets = self.ttft.setdefault(record.route, [0.0] * (len(TTFT_BUCKETS) + 1))
            buckets[bisect_right(TTFT_BUCKETS, seconds - 1e-12)] += 1
            self.ttft_sum[record.route] = self.ttft_sum.get(record.route, 0.0) + seconds

    def collect(self) -> Iterator[Metric]:
        tokens = CounterMetricFamily(
            "localrouter_tokens",
            "Tokens by client, model and type",
            labels=["client", "model", "type"],
        )
        for (client, model, kind), count in sorted(self.tokens.items()):
            tokens.add_metric([client, model, kind], count)
        cost = CounterMetricFamily(
            "localrouter_cost_usd", "Cost in USD by client and model", labels=["client", "model"]
        )
        for (client, model), usd in sorted(self.cost.items()):
            cost.add_metric([client, model], usd)
        unpriced = CounterMetricFamily(
            "localrouter_unpriced_requests", "Requests to models with no known price"
        )
        unpriced.add_metric([], self.unpriced)
        ttft = HistogramMetricFamily(
            "localrouter_time_to_first_token_seconds",
            "Time from a streamed request to its first byte, by route",
            labels=["route"],
        )
        bounds = [repr(bound) for bound in TTFT_BUCKETS] + ["+Inf"]
        for route, buckets in sorted(self.ttft.items()):
            cumulative = list(zip(bounds, accumulate(buckets), strict=True))
            ttft.add_metric([route], cumulative, self.ttft_sum[route])
        yield tokens
        yield cost
        yield unpriced
        yield ttft
