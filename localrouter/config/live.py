"""The config in force, and who is told when a new one arrives.

The reloader publishes a validated config here; each subscriber (the guard, the registry, the
metrics) takes what it needs from it, in the order they subscribed. Request handlers read
`current` for settings such as `server.models_deadline_seconds`.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

from localrouter.config.control import ModelRules
from localrouter.config.settings import Settings

Subscriber = Callable[[Settings], Awaitable[None] | None]


class LiveSettings:
    def __init__(self, settings: Settings, *, origin: str) -> None:
        self.current = settings
        self.rules = ModelRules.of(settings)  # models: and clients:, compiled
        self.origin = origin  # the file it came from, or the embedded default
        self._subscribers: list[Subscriber] = []

    @property
    def models_deadline_seconds(self) -> float:
        """How long a model-list request waits for upstreams before answering with what it has."""
        return self.current.server.models_deadline_seconds

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    async def publish(self, settings: Settings, *, origin: str) -> None:
        self.current, self.rules, self.origin = settings, ModelRules.of(settings), origin
        for subscriber in self._subscribers:
            result = subscriber(settings)
            if inspect.isawaitable(result):
                await result
