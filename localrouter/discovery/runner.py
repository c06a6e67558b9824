"""Discovery's rounds: every `interval_seconds`, each target (`discovery.hosts` x `ports`, and
the host variables users already set) is probed (fingerprint.py), and what serves becomes an
instance named `<kind>-<port>` of the provider type that fits it, added to the registry's
configured ones (never written into the config). A server that stops answering is dropped
after two missed rounds; meanwhile its last list is served as stale, as for any instance."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import structlog
from aiohttp import web

from localrouter.config.discovery import DiscoverySettings
from localrouter.config.settings import ProviderSettings, Settings
from localrouter.discovery.asking import Finding, ServerState
from localrouter.discovery.fingerprint import probe_all
from localrouter.http.bodies import JSON
from localrouter.lists.cache import Clock

log = structlog.get_logger(__name__)

MISSED_ROUNDS = 2  # a found server is dropped after this many rounds without an answer
TICK_SECONDS = 0.25  # how often the clock is looked at between rounds
CONCURRENT_PROBES = 4
PROBE_SECONDS = 1.0
LOOPBACK = ("127.0.0.1", "localhost", "::1")
WILDCARDS = ("0.0.0.0", "::")  # a server bound to every address: loopback here
MAX_PORT = 65535


@dataclass(slots=True)
class Target:
    """One host and port probed each round, and what it last answered."""

    host: str
    port: int
    finding: Finding | None = None
    last_seen: float | None = None  # when it last served (unix seconds)
    missed: int = 0  # rounds in a row without an answer since it last served
    instance: str | None = None  # the instance it is (found), or the configured one it is


def host_variables(environment: Mapping[str, str]) -> list[tuple[str, int]]:
    """Where the host variables users already set say a server listens: OLLAMA_HOST
    (host, host:port or a URL; port 11434 when left out), and llama.cpp's server's
    LLAMA_ARG_HOST and LLAMA_ARG_PORT (8080 when left out). A wildcard bind means
    loopback here."""
    found = []
    if ollama := environment.get("OLLAMA_HOST", "").strip():
        found.append(_host_port(ollama, 11434))
    llama_host = environment.get("LLAMA_ARG_HOST", "").strip()
    llama_port = environment.get("LLAMA_ARG_PORT", "").strip()
    if llama_host or llama_port:
        port = int(llama_port) if llama_port.isdigit() else 8080
        found.append(_host_port(llama_host or "127.0.0.1", port))
    return [target for target in found if 0 < target[1] <= MAX_PORT]


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    if text.strip("[]") in WILDCARDS:  # a bare :: (or [::]) is no URL's host
        return "127.0.0.1", default_port
    url = urlsplit(text if "://" in text else f"http://{text}")
    try:
        port = url.port or default_port
    except ValueError:
        return "", 0
    host = url.hostname or "127.0.0.1"
    return ("127.0.0.1" if host in WILDCARDS else host), port


def instance_name(finding: Finding) -> str:
    kind = str(finding.kind)
    if finding.host in LOOPBACK:
        return f"{kind}-{finding.port}"
    return f"{kind}-{finding.host}-{finding.port}"


class Discovery:
    """Probes each round and keeps the registry's instances: the configured ones plus what
    was found (`apply` is what a config (re)load calls instead of the registry's own)."""

    def __init__(
        self,
        settings: Settings,
        environment: Mapping[str, str],
        clock: Clock,
        apply: Callable[[Settings], Awaitable[None]],
    ) -> None:
        self._clock = clock
        self._apply_registry = apply
        self._environment = environment
        self._settings = settings
        self._targets: dict[tuple[str, int], Target] = {}
        self._found: dict[str, ProviderSettings] = {}
        self._lock = asyncio.Lock()
        self.rounds = 0
        self._retarget(settings.discovery)

    @property
    def settings(self) -> DiscoverySettings:
        return self._settings.discovery

    def _retarget(self, settings: DiscoverySettings) -> None:
        wanted = [(host, port) for host in settings.hosts for port in settings.ports]
        wanted += host_variables(self._environment)
        server = self._settings.server
        own = {server.port, server.ollama_port}
        kept = {}
        for host, port in dict.fromkeys(wanted):
            if port in own and host in LOOPBACK:
                continue  # this daemon's own listeners
            kept[host, port] = self._targets.get((host, port)) or Target(host, port)
        for where, target in self._targets.items():
            if where not in kept:  # no longer probed: what it was found as goes with it
                self._forget(target)
        self._targets = kept

    async def apply(self, settings: Settings) -> None:
        """A config (re)loaded: the registry gets it with what was found added."""
        async with self._lock:
            self._settings = settings
            self._retarget(settings.discovery)
            if not settings.discovery.enabled:
                self._found.clear()
            await self._publish()

    async def _publish(self) -> None:
        settings = self._settings
        configured = {_url_key(p.resolved_base_url): p.name for p in settings.providers}
        found = [
            provider
            for provider in self._found.values()
            if _url_key(provider.resolved_base_url) not in configured
            and provider.name not in {p.name for p in settings.providers}
        ]
        expose = settings.discovery.expose
        merged = settings.model_copy(
            update={"providers": [*settings.providers, *(found if expose else ())]}
        )
        await self._apply_registry(merged)

    async def run(self) -> None:
        """A round at once, then one every interval_seconds by the clock, until cancelled
        (the clock is read every TICK_SECONDS: a clock a test moves is followed)."""
        next_round = float("-inf")
        while True:
            now = self._clock()
            if now >= next_round:
                next_round = now + self.settings.interval_seconds
                if self.settings.enabled:
                    try:
                        await self.round()
                    except Exception:  # a bug here must not end discovery for good
                        log.exception("discovery.round_failed")
            await asyncio.sleep(TICK_SECONDS)

    async def round(self) -> list[Target]:
        """Probe every target once; add what started serving, drop what stopped twice. The
        probes run outside the lock (a round of silent ports takes seconds, and a reload
        must not wait for it); a target a reload took away meanwhile is left out."""
        targets = list(self._targets.values())
        # A session of its own: no credential, no cookie, no proxy from the environment.
        async with aiohttp.ClientSession(
            cookie_jar=aiohttp.DummyCookieJar(), trust_env=False
        ) as session:
            findings = await probe_all(
                [(target.host, target.port) for target in targets],
                session,
                concurrency=CONCURRENT_PROBES,
                timeout=PROBE_SECONDS,
            )
        async with self._lock:
            now = self._clock()
            configured = {_url_key(p.resolved_base_url): p.name for p in self._settings.providers}
            changed = False
            if self.settings.enabled:
                for target, finding in zip(targets, findings, strict=True):
                    if self._targets.get((target.host, target.port)) is target:
                        changed |= self._update(target, finding, now, configured)
            self.rounds += 1
            if changed:
                await self._publish()
            return targets

    def _update(
        self, target: Target, finding: Finding, now: float, configured: dict[str, str]
    ) -> bool:
        """What a target's finding changes: whether the instances changed."""
        target.finding = finding
        serving = finding.state is ServerState.SERVING and finding.kind is not None
        if finding.state in (ServerState.SERVING, ServerState.AUTH_REQUIRED):
            target.last_seen, target.missed = now, 0
        else:
            target.missed += 1
        if serving and finding.base_url is not None:
            duplicate = configured.get(_url_key(finding.base_url))
            if duplicate is not None:
                target.instance = duplicate
                return self._forget(target)
            provider = _provider(finding)
            known = self._found.get(provider.name)
            if known is not None and _same(known, provider):  # as found, maybe by another name
                target.instance = provider.name
                return False
            self._forget(target)
            self._found[provider.name] = provider
            target.instance = provider.name
            log.info("discovery.found", instance=provider.name, url=finding.base_url)
            return True
        if target.missed >= MISSED_ROUNDS or finding.state is ServerState.AUTH_REQUIRED:
            return self._forget(target)
        return False

    def _forget(self, target: Target) -> bool:
        name = target.instance
        if name is None or name not in self._found:
            return False
        target.instance = None
        others = (other for other in self._targets.values() if other is not target)
        if any(other.instance == name and not other.missed for other in others):
            return False  # the same server still answers at another of its addresses
        del self._found[name]
        log.info("discovery.gone", instance=name)
        return True

    def rows(self) -> list[dict[str, Any]]:
        """One row per target, as GET /api/discovery shows it."""
        rows = []
        for target in self._targets.values():
            finding = target.finding
            rows.append(
                {
                    "host": target.host,
                    "port": target.port,
                    "type": str(finding.kind) if finding and finding.kind else None,
                    "state": str(finding.state) if finding else None,
                    "version": finding.version if finding else None,
                    "models": finding.models if finding else None,
                    "last_seen": target.last_seen,
                    "instance": target.instance,
                    "base_url": finding.base_url if finding else None,
                    # what an instance of it is (or would be) named and typed
                    "name": instance_name(finding) if finding and finding.kind else None,
                    "provider_type": finding.provider_type if finding else None,
                }
            )
        return rows


def _provider(finding: Finding) -> ProviderSettings:
    assert finding.provider_type is not None
    assert finding.base_url is not None
    return ProviderSettings(
        name=instance_name(finding), type=finding.provider_type, base_url=finding.base_url
    )


def _same(known: ProviderSettings, found: ProviderSettings) -> bool:
    """The same server, however its loopback address was written (localhost, 127.0.0.1)."""
    return known.type == found.type and _url_key(known.resolved_base_url) == _url_key(
        found.resolved_base_url
    )


def _url_key(url: str) -> str:
    """A base URL as instances are compared by: scheme, host (loopback names as one) and
    port, without a trailing /v1."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host in LOOPBACK:
        host = "127.0.0.1"
    with contextlib.suppress(ValueError):
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return f"{parts.scheme}://{host}:{port}"
    return url


class DiscoveryEndpoint:
    """GET /api/discovery: one row per probe target."""

    def __init__(self, discovery: Discovery) -> None:
        self._discovery = discovery

    async def __call__(self, _: web.Request) -> web.Response:
        discovery = self._discovery
        settings = discovery.settings
        shown = {
            "enabled": settings.enabled,
            "expose": settings.expose,
            "interval_seconds": settings.interval_seconds,
            "rounds": discovery.rounds,
            "servers": discovery.rows(),
        }
        return web.Response(body=orjson.dumps(shown), content_type=JSON)
