"""Which instance serves a model id, the same way for every endpoint: `instance/upstream-id`
(even if not listed yet), else a bare upstream id, served by the first instance in config order
that lists it."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from localrouter.errors import ModelNotFound
from localrouter.offload import dismantle
from localrouter.registry import Instance, InstanceLists
from localrouter.state import MODEL_INDEX, REGISTRY, SETTINGS
from localrouter.suggest import Suggester


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


async def resolve(request: web.Request, model: str) -> tuple[Instance, str]:
    """The instance and its upstream id for `model`; ModelNotFound (with suggestions) if none."""
    if (found := await find(request.app, model)) is not None:
        return found
    index = await _index(request.app)
    close = index.suggester.close(model)
    hint = f" Did you mean: {', '.join(close)}?" if close else " GET /v1/models lists the ids."
    raise ModelNotFound(
        f"The model '{model[:200]}' does not exist in any configured provider.{hint}",
        param="model",
    )


async def find(app: web.Application, model: str) -> tuple[Instance, str] | None:
    """The instance and its upstream id for `model`, or None."""
    if (found := app[REGISTRY].resolve(model)) is not None:
        return found
    if (instance := (await _index(app)).bare.get(model)) is not None:
        return instance, model
    return None


async def _index(app: web.Application) -> ModelIndex:
    lists = await app[REGISTRY].lists(app[SETTINGS].models_deadline_seconds)
    return await app[MODEL_INDEX].get_async(None, lists, lambda: model_index(lists))
