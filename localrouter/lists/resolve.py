"""Which instance serves a model id, the same way for every endpoint: an alias is followed to
its target (model_rules.py); then `instance/upstream-id` (even if not listed yet), else a bare
upstream id, served by the first instance in config order that lists it. A client calls only
what its allowlist admits, by the name it used or the id that name resolved to."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from localrouter.base.errors import ModelNotAllowed, ModelNotFound
from localrouter.base.offload import dismantle
from localrouter.base.suggest import Suggester
from localrouter.config.control import ModelRules
from localrouter.lists.instance import Instance
from localrouter.lists.registry import InstanceLists, Registry
from localrouter.state import CLIENT, MODEL_INDEX, REGISTRY, SETTINGS


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


async def resolve(
    request: web.Request, model: str, rules: ModelRules, registry: Registry
) -> tuple[Instance, str]:
    """The instance and its upstream id for `model` (an id or an alias of the current
    `rules`), if the caller may call it; ModelNotFound (with suggestions) if nothing serves
    it, ModelNotAllowed (403) outside the caller's allowlist."""
    target = rules.target(model)
    found = registry.resolve(target) or await find(request.app, target)  # the first: no await
    if found is None:
        if target != model:
            raise ModelNotFound(
                f"The alias '{model}' names '{target[:200]}', which no configured provider "
                "serves now (models.aliases in the config).",
                param="model",
            )
        index = await index_of(request.app)
        close = index.suggester.close(model)
        hint = f" Did you mean: {', '.join(close)}?" if close else " GET /v1/models lists the ids."
        raise ModelNotFound(
            f"The model '{model[:200]}' does not exist in any configured provider.{hint}",
            param="model",
        )
    client = request[CLIENT]
    if (
        client is not None
        and not client.allows(model)
        and not client.allows(f"{found[0].name}/{found[1]}")
    ):
        raise ModelNotAllowed(
            f"Client '{client.name}' may not use '{model[:200]}': it is outside the client's "
            "allow list (clients[].allow in the config).",
            param="model",
        )
    return found


async def find(app: web.Application, model: str) -> tuple[Instance, str] | None:
    """The instance and its upstream id for `model` (an id, not an alias), or None."""
    if (found := app[REGISTRY].resolve(model)) is not None:
        return found
    if (instance := (await index_of(app)).bare.get(model)) is not None:
        return instance, model
    return None


async def full_ids(app: web.Application) -> Callable[[str], str | None]:
    """A bare upstream id -> the `instance/id` a request for it resolves to, or None."""
    bare = (await index_of(app)).bare

    def full_id(model_id: str) -> str | None:
        instance = bare.get(model_id)
        return f"{instance.name}/{model_id}" if instance is not None else None

    return full_id


async def index_of(app: web.Application) -> ModelIndex:
    lists = await app[REGISTRY].lists(app[SETTINGS].models_deadline_seconds)
    return await app[MODEL_INDEX].get_async(None, lists, lambda: model_index(lists))
