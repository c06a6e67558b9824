"""/metrics in the Prometheus text format. Request counts and latency are recorded as requests
finish, as plain numbers in a per-route slot bound at start-up; everything else (cache,
upstreams, models, reloads) is read when scraped."""

from __future__ import annotations

import itertools
import operator
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from localrouter.config.control import Client
    from localrouter.config.reload import ReloadState
    from localrouter.lists.registry import Registry

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
FOLD_EVERY = 1024
_NAME = operator.attrgetter("name")


class RouteStats:
    """Counts for one route, kept as plain numbers: the event loop is the only writer, so the
    locks prometheus-client's Counter and Histogram take per update (measured: 7 % of cached
    /v1/models throughput) buy nothing here. A request appends its status, seconds and client
    to three lists (`record`, which folds when FOLD_EVERY are pending): no tuple a request,
    so nothing for the cyclic collector. They are counted when folded and
    when scraped, in C (count, sort, bisect, sum). Turned into metric families when scraped."""

    __slots__ = ("buckets", "by_status", "callers", "clients", "latencies", "seconds", "statuses")

    def __init__(self, clients: Counter[str]) -> None:
        # The pending requests' statuses, seconds and clients (None: anyone), side by side.
        self.statuses: list[int] = []
        self.latencies: list[float] = []
        self.callers: list[Client | None] = []
        self.by_status: Counter[int] = Counter()
        self.clients = clients  # requests by client name, shared by every route (Metrics)
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.seconds = 0.0

    def record(self, status: int, seconds: float, client: Client | None = None) -> None:
        self.statuses.append(status)
        self.latencies.append(seconds)
        self.callers.append(client)
        if len(self.statuses) >= FOLD_EVERY:
            self.fold()

    def fold(self) -> None:
        statuses, latencies, callers = self.statuses, self.latencies, self.callers
        if not statuses:
            return
        if statuses.count(status := statuses[0]) == len(statuses):  # the usual case
            self.by_status[status] += len(statuses)
        else:
            self.by_status.update(statuses)
        if callers.count(caller := callers[0]) == len(callers):  # one client, or anyone
            if caller is not None:
                self.clients[caller.name] += len(callers)
        else:
            self.clients.update(map(_NAME, filter(None, callers)))
        latencies.sort()
        below = 0
        for index, bound in enumerate(LATENCY_BUCKETS):  # buckets are "le": inclusive
            up_to = bisect_right(latencies, bound)
            self.buckets[index] += up_to - below
            below = up_to
        self.buckets[-1] += len(latencies) - below
        self.seconds += sum(latencies)
        for pending in (statuses, latencies, callers):
            pending.clear()  # in place: endpoints hold on to them


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._routes: dict[str, RouteStats] = {}
        # Requests by client name (clients: in the config), folded in from the routes' stats.
        self.client_requests: Counter[str] = Counter()
        self._fallbacks: dict[tuple[str, str], int] = {}  # (from, to) as models.fallbacks names
        self.registry.register(
            _RequestCollector(self._routes, self.client_requests, self._fallbacks)
        )

    def route(self, route: str) -> RouteStats:
        """Where a route's requests are recorded (one per route, bound at start-up)."""
        stats = self._routes.get(route)
        if stats is None:
            stats = self._routes[route] = RouteStats(self.client_requests)
        return stats

    def count_fallback(self, failed: str, tried: str) -> None:
        pair = (failed, tried)
        self._fallbacks[pair] = self._fallbacks.get(pair, 0) + 1

    def watch(
        self, registry: Callable[[], Registry | None], reloads: Callable[[], ReloadState | None]
    ) -> None:
        self.registry.register(_StateCollector(registry, reloads))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def endpoint(self, request: web.Request) -> web.Response:
        """GET /metrics."""
        return web.Response(body=self.render(), headers={"Content-Type": CONTENT_TYPE})


class _RequestCollector(Collector):
    def __init__(
        self,
        routes: dict[str, RouteStats],
        clients: dict[str, int],
        fallbacks: dict[tuple[str, str], int],
    ) -> None:
        self._routes = routes
        self._clients = clients
        self._fallbacks = fallbacks

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "localrouter_http_requests",
            "HTTP requests answered, by route and status",
            labels=["route", "status"],
        )
        latency = HistogramMetricFamily(
            "localrouter_http_request_duration_seconds",
            "Time to answer (for streams: to the end of the stream), by route",
            labels=["route"],
        )
        bounds = [repr(float(bound)) for bound in LATENCY_BUCKETS] + ["+Inf"]
        for route, stats in self._routes.items():
            stats.fold()
            for status, count in sorted(stats.by_status.items()):
                requests.add_metric([route, str(status)], count)
            if stats.by_status:
                cumulative = itertools.accumulate(stats.buckets)
                buckets = list(zip(bounds, cumulative, strict=True))
                latency.add_metric([route], buckets, stats.seconds)
        by_client = CounterMetricFamily(
            "localrouter_client_requests",
            "Requests made with a client's token, by client name",
            labels=["client"],
        )
        for name, count in sorted(self._clients.items()):
            by_client.add_metric([name], count)
        fallbacks = CounterMetricFamily(
            "localrouter_fallbacks",
            "Calls passed on to a fallback (models.fallbacks), by the model that failed and the "
            "fallback tried",
            labels=["from", "to"],
        )
        for (failed, tried), count in sorted(self._fallbacks.items()):
            fallbacks.add_metric([failed, tried], count)
        yield requests
        yield latency
        yield by_client
        yield fallbacks


class _StateCollector(Collector):
    def __init__(
        self, registry: Callable[[], Registry | None], reloads: Callable[[], ReloadState | None]
    ) -> None:
        self._registry = registry
        self._reloads = reloads

    def collect(self) -> Iterator[Metric]:
        registry = self._registry()
        instances = registry.instances() if registry is not None else ()
        # Removed instances too: a counter never goes back for the life of the process.
        every_counter = registry.counters() if registry is not None else {}
        counters = {  # metric name: (CacheCounters field, help)
            "upstream_calls": ("upstream_calls", "Model-list requests sent upstream"),
            "upstream_errors": ("upstream_errors", "Model-list requests that failed"),
            "cache_hits": ("hits", "Lists served fresh from the cache"),
            "cache_misses": ("misses", "Lists that were not fresh when asked for"),
            "cache_refreshes": ("refreshes", "Refreshes started"),
            "cache_fallbacks": (
                "fallbacks",
                "Answers from a fallback (persisted, catalog, static)",
            ),
            "fleet_lists": ("fleet_lists", "Lists taken from another daemon of the fleet"),
        }
        for name, (counter, help_text) in counters.items():
            family = CounterMetricFamily(f"localrouter_{name}", help_text, labels=["instance"])
            for instance_name, counted in every_counter.items():
                family.add_metric([instance_name], getattr(counted, counter))
            yield family
        models = GaugeMetricFamily(
            "localrouter_models", "Models listed now", labels=["instance", "source"]
        )
        up = GaugeMetricFamily(
            "localrouter_instance_up", "1 if the last refresh worked", labels=["instance"]
        )
        for instance in instances:
            status = instance.cache.status()
            models.add_metric([instance.name, status.source or "none"], status.count)
            up.add_metric([instance.name], 0 if status.last_error else 1)
        yield models
        yield up
        state = self._reloads()
        if state is not None:
            yield CounterMetricFamily(
                "localrouter_config_reloads", "Config reloads applied", value=state.reloads
            )
            yield CounterMetricFamily(
                "localrouter_config_reload_failures", "Config reloads refused", value=state.failures
            )
            yield GaugeMetricFamily(
                "localrouter_config_error",
                "1 while the config file on disk is refused",
                value=1 if state.error else 0,
            )
