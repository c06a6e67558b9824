"""Which instance serves a model id, the same way for every endpoint: an alias is followed to
its target (config/control.py); then `instance/upstream-id` (even if not listed yet), else a
bare upstream id, served by the first instance in config order that lists it. A client calls
only what its allowlist admits (control.may_call)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from localrouter.base.errors import ModelNotAllowed, ModelNotFound
from localrouter.base.offload import dismantle
from localrouter.base.suggest import Suggester
from localrouter.config.control import Client, may_call
from localrouter.config.live import LiveSettings
from localrouter.lists.derived import DerivedCache
from localrouter.lists.instance import Instance
from localrouter.lists.registry import InstanceLists, Registry
from localrouter.providers.base import ModelInfo

# How many close ids are weighed before those the caller may not see are left out.
SUGGESTION_CANDIDATES = 12
# Ollama names are `[namespace/]model:tag`; an id whose last part has no tag is listed with
# this, and a name sent back with it finds the id without it.
LATEST = ":latest"


@dataclass(frozen=True, slots=True)
class ModelIndex:
    """Bare upstream ids to the first instance (in config order) that lists them, and the
    suggestions for an id nobody lists; built once per data change."""

    bare: dict[str, Instance]
    suggester: Suggester

    def dismantle(self) -> None:
        dismantle(self.bare)
        self.suggester.dismantle()


def model_index(lists: InstanceLists) -> ModelIndex:
    bare: dict[str, Instance] = {}
    for instance, served in zip(lists.instances, lists.served, strict=True):
        if served is not None:
            for model in served.models.models:
                bare.setdefault(model.id, instance)
    known = [f"{instance.name}/{model_id}" for model_id, instance in bare.items()]
    return ModelIndex(bare, Suggester([*known, *bare]))


def ollama_name(model_id: str) -> str:
    """The name Ollama's clients see for an id: with `:latest` when its last part has no tag."""
    return model_id if ":" in model_id.rpartition("/")[2] else model_id + LATEST


class Resolver:
    """Model names to the instance that serves them, for the app's registry under the live
    config (aliases, the models deadline)."""

    def __init__(self, registry: Registry, live: LiveSettings) -> None:
        self.registry, self.live = registry, live
        self._index: DerivedCache[None, ModelIndex] = DerivedCache(capacity=1)

    async def lists(self) -> InstanceLists:
        """Every instance's served list: at once when all are fresh, else within the models
        deadline."""
        return await self.registry.lists(self.live.models_deadline_seconds)

    async def index(self) -> ModelIndex:
        lists = await self.registry.lists(self.live.models_deadline_seconds)
        return await self._index.get_async(None, lists, lambda: model_index(lists))

    async def resolve(self, model: str, client: Client | None) -> tuple[Instance, str]:
        """The instance and its upstream id for `model` (an id or an alias of the current
        rules), if `client` may call it. ModelNotAllowed (403) for a name outside the client's
        allowlist that does not resolve into it, whether or not it exists (so a client learns
        nothing of what it cannot see); else ModelNotFound (404, with suggestions from what
        the caller may see) if nothing serves it, an alias's target included."""
        rules = self.live.rules
        target = rules.target(model)
        found = self.registry.resolve(target) or await self.find(target)  # the first: no await
        if client is not None and not may_call(
            client, model, f"{found[0].name}/{found[1]}" if found is not None else None
        ):
            raise ModelNotAllowed(
                f"Client '{client.name}' may not use '{model[:200]}': it is outside the "
                "client's allow list (clients[].allow in the config).",
                param="model",
            )
        if found is not None and target != model and await self.listing(*found) is None:
            found = None  # an alias promises a listed model: its target's 404, not the upstream's
        if found is None:
            if target != model:
                raise ModelNotFound(
                    f"The alias '{model}' names '{target[:200]}', which no configured provider "
                    "serves now (models.aliases in the config).",
                    param="model",
                )
            close = await self.suggestions(model, client)
            hint = (
                f" Did you mean: {', '.join(close)}?" if close else " GET /v1/models lists the ids."
            )
            raise ModelNotFound(
                f"The model '{model[:200]}' does not exist in any configured provider.{hint}",
                param="model",
            )
        return found

    async def suggestions(self, model: str, client: Client | None) -> list[str]:
        """Up to three listed ids close to `model` that `client` may see (never a hidden one),
        as the full `instance/model` ids a request names them by."""
        index = await self.index()
        rules = self.live.rules
        shown: list[str] = []
        for close in index.suggester.close(model, n=SUGGESTION_CANDIDATES):
            instance = index.bare.get(close)
            full = f"{instance.name}/{close}" if instance is not None else close
            if full not in shown and rules.admits(client, full):
                shown.append(full)
        return shown[:3]

    async def find(self, model: str) -> tuple[Instance, str] | None:
        """The instance and its upstream id for `model` (an id, not an alias), or None."""
        if (found := self.registry.resolve(model)) is not None:
            return found
        if (instance := (await self.index()).bare.get(model)) is not None:
            return instance, model
        return None

    async def full_ids(self) -> Callable[[str], str | None]:
        """A bare upstream id -> the `instance/id` a request for it resolves to, or None."""
        bare = (await self.index()).bare

        def full_id(model_id: str) -> str | None:
            instance = bare.get(model_id)
            return f"{instance.name}/{model_id}" if instance is not None else None

        return full_id

    def listing(self, instance: Instance, upstream_id: str) -> Awaitable[ModelInfo | None]:
        """The model as its instance lists it (its limits, whether it reasons). Its instance's
        own coroutine, handed on: no coroutine of ours to make and await around it."""
        return instance.listed(upstream_id, self.live.models_deadline_seconds)

    async def our_id(self, name: str) -> str:
        """The id (or alias) an Ollama name stands for: itself if something lists it so, else
        without the `:latest` that `ollama_name` added."""
        if not name.endswith(LATEST) or name in self.live.rules.aliases:
            return name
        found = await self.find(name)
        if found is not None and await self.listing(*found) is not None:
            return name
        return name.removesuffix(LATEST)
