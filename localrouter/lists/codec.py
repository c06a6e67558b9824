"""Model lists as JSON documents, written and read back field by field: the persisted list
files (persist.py) and the lists daemons share through Redis (shared_lists.py)."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from localrouter.base.offload import dismantle, dumps_array_in_steps
from localrouter.providers.base import CatalogRef, ModelInfo


def models_document(head: Mapping[str, Any], models: Sequence[ModelInfo]) -> bytes | bytearray:
    """`head`'s fields and `"models": [...]` as one JSON object, serialised a slice at a time
    (run it off the loop for long lists). orjson.JSONEncodeError if a value cannot be."""
    plain = [model.plain() for model in models]
    prefix = orjson.dumps(dict(head))[:-1] + (b',"models":' if head else b'"models":')
    data = dumps_array_in_steps(plain, prefix=prefix, suffix=b"}")
    dismantle(plain)  # 100,000 dicts freed a slice at a time, not in one cascade
    return data


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("expected text")
    return value


def _whole(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**53:
        raise TypeError("expected a whole number in range")
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("expected true or false")
    return value


def _words(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError("expected a list of text")
    return tuple(value)


def _prices(value: Any) -> dict[str, float]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
        for k, v in value.items()
    ):
        raise TypeError("expected prices")
    return {k: float(v) for k, v in value.items()}


def _catalog(value: Any) -> CatalogRef:
    if not isinstance(value, dict):
        raise TypeError("expected a catalog reference")
    return CatalogRef(_text(value.get("id")), _text(value.get("matched_via")))


# How each type a ModelInfo field has is read back; a field of the wrong type spoils the file.
_READER_BY_TYPE: dict[Any, Callable[[Any], Any]] = {
    str: _text,
    int: _whole,
    bool: _flag,
    tuple[str, ...]: _words,
    Mapping[str, float]: _prices,
    CatalogRef: _catalog,
}


def _readers() -> dict[str, Callable[[Any], Any]]:
    """A reader per ModelInfo field, from its type: a new field needs nothing here unless its
    type is new (then this fails at import, naming it)."""
    hints = typing.get_type_hints(ModelInfo)
    readers = {}
    for field in dataclasses.fields(ModelInfo):
        kinds = [k for k in typing.get_args(hints[field.name]) if k is not type(None)]
        kind = kinds[0] if isinstance(hints[field.name], types.UnionType) else hints[field.name]
        if kind not in _READER_BY_TYPE:
            raise TypeError(f"persist: no reader for ModelInfo.{field.name} ({kind})")
        readers[field.name] = _READER_BY_TYPE[kind]
    return readers


_READERS = _readers()


def read_model(item: Any) -> ModelInfo:
    """One model entry as written by models_document; TypeError if it is not one."""
    if not isinstance(item, dict) or "id" not in item:
        raise TypeError("a model entry without an id")
    unknown = set(item) - set(_READERS)
    if unknown:
        raise TypeError(f"unexpected fields {sorted(unknown)}")
    return ModelInfo(**{key: _READERS[key](value) for key, value in item.items()})
