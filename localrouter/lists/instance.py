"""One configured provider instance: its settings, its upstream client, its model cache, and
how a request in each wire protocol reaches it (`Route`, made once per instance and protocol).
The registry (registry.py) holds the current set of them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import aiohttp

from localrouter.base.offload import heavy
from localrouter.config.settings import ProviderSettings
from localrouter.lists.cache import ModelCache, ModelList
from localrouter.lists.persist import ListStore
from localrouter.providers.base import ANTHROPIC_MESSAGES, Endpoint, ModelInfo, Provider, Wire
from localrouter.upstream.client import UpstreamClient, Where
from localrouter.upstream.key_pool import KeyPool

CONNECT_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Route:
    """How a request in one wire protocol reaches an instance: made once per instance."""

    base: str
    headers: Mapping[str, str]  # the provider's auth and the instance's own headers
    keyed: tuple[Mapping[str, str], ...]  # the same with each key of a pool, by position
    # chat_timeout_seconds, the longest silence mid-answer: a stream's read limit restarts
    # with every chunk. A whole answer arrives at its end, so the caller gives it one deadline
    # (forward.send) instead: aiohttp's own timers cost 10 % of proxy throughput.
    stream_limits: aiohttp.ClientTimeout
    answer_limits: aiohttp.ClientTimeout  # connect only
    label: str | None = None  # how messages name the instance (UpstreamClient.label)
    _targets: dict[str, Where] = field(default_factory=dict, compare=False)

    def url(self, path: str) -> str:
        return f"{self.base}/{path}"

    def target(self, path: str) -> Where:
        """The URL of `path` (a route's constant) and how messages name it, made once."""
        target = self._targets.get(path)
        if target is None:
            target = self._targets[path] = Where(self.label, self.url(path))
        return target


@dataclass(slots=True)
class Instance:
    settings: ProviderSettings
    provider: Provider
    http: UpstreamClient
    cache: ModelCache
    base: Instance | None = None  # set on a twin built with a caller's key: never persisted
    store: ListStore | None = None  # where its last-known-good list is kept on disk
    keys: KeyPool | None = None  # with api_keys: the pool every call takes its key from
    _routes: dict[Wire, Route | None] = field(default_factory=dict)
    _by_id: tuple[ModelList, dict[str, ModelInfo]] | None = None

    async def listed(self, upstream_id: str, wait_seconds: float) -> ModelInfo | None:
        """The model as this instance's list describes it (fresh or stale), or None. Waits for
        the upstream (at most `wait_seconds`) only while the instance has no list at all; the
        index is built once per list, off the loop when long."""
        current = self.cache.current
        if current is None:
            await self.cache.get(wait_seconds)
            current = self.cache.current
            if current is None:
                return None
        if self._by_id is None or self._by_id[0] is not current:
            models = current.models
            by_id = await heavy(lambda: {model.id: model for model in models}, len(models))
            self._by_id = (current, by_id)
        return self._by_id[1].get(upstream_id)

    @property
    def name(self) -> str:
        return self.settings.name

    def route(self, wire: Wire) -> Route | None:
        """Where and how to send `wire` requests; None if the provider does not speak it."""
        if wire not in self._routes:
            settings = self.settings
            endpoint = settings.spec.endpoint(wire)
            if wire is Wire.MESSAGES and settings.messages is not None:  # the config decides
                native = settings.messages == "native"
                endpoint = (endpoint or ANTHROPIC_MESSAGES) if native else None
            if wire is Wire.RESPONSES and settings.responses is not None:
                native = settings.responses == "native"
                endpoint = (endpoint or Endpoint()) if native else None
            if endpoint is None:
                self._routes[wire] = None
            else:
                silence = settings.chat_timeout_seconds
                keyed = tuple(endpoint.auth.headers(k, settings.headers) for k in settings.keys)
                self._routes[wire] = Route(
                    endpoint.base(settings).rstrip("/"),
                    keyed[0] if keyed else endpoint.auth.headers(None, settings.headers),
                    keyed,
                    aiohttp.ClientTimeout(sock_connect=CONNECT_TIMEOUT_SECONDS, sock_read=silence),
                    aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_SECONDS),
                    self.http.label,
                )
        return self._routes[wire]
