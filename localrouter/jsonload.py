"""Decoding large JSON without stalling the event loop.

orjson decodes a 30 MB, 100,000-model list in one call of about a second, holding the GIL the
whole time: run in a thread or not, the loop waits. A body past `INLINE_BYTES` is therefore
decoded in a worker thread one element at a time (the members of the top-level object and the
items of the arrays directly under it), each by the C scanner of the standard library: the GIL
changes hands between elements, so the loop waits at most a switch interval, never the decode.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable
from typing import Any

import orjson

from localrouter.offload import INLINE_ITEMS, heavy

INLINE_BYTES = 256 * 1024  # below this, orjson's single call costs well under 10 ms
_SPACE = re.compile(r"[ \t\n\r]*")
# The C scanner the decoder sets up (the stubs do not declare the attribute).
_SCAN: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


async def loads_off_loop(raw: bytes | bytearray) -> Any:
    """The decoded JSON; raises ValueError for anything that is not JSON."""
    if len(raw) <= INLINE_BYTES:
        return orjson.loads(raw)
    return await heavy(lambda: loads_in_steps(raw), INLINE_ITEMS + 1)


def loads_in_steps(raw: bytes | bytearray) -> Any:
    """Decode element by element (see the module docstring); raises ValueError if invalid."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    step = 1024 * 1024  # one 30 MB decode holds the GIL about 30 ms; a megabyte, about 1
    view = memoryview(raw)
    parts = [decoder.decode(view[start : start + step]) for start in range(0, len(raw), step)]
    text = "".join([*parts, decoder.decode(b"", final=True)])
    value, position = _value(text, _skip(text, 0), depth=0)
    if _skip(text, position) != len(text):
        raise ValueError(f"extra data after the JSON value at {position}")
    return value


def _skip(text: str, position: int) -> int:
    found = _SPACE.match(text, position)
    return found.end() if found else position


def _value(text: str, position: int, depth: int) -> tuple[Any, int]:
    opening = text[position : position + 1]
    if opening == "[" and depth <= 1:
        return _array(text, position, depth)
    if opening == "{" and depth == 0:
        return _object(text, position, depth)
    try:
        value, end = _SCAN(text, position)
    except StopIteration:
        raise ValueError(f"not JSON at {position}") from None
    return value, end


def _array(text: str, position: int, depth: int) -> tuple[list[Any], int]:
    items: list[Any] = []
    position = _skip(text, position + 1)
    if text[position : position + 1] == "]":
        return items, position + 1
    while True:
        item, position = _value(text, position, depth + 1)
        items.append(item)
        position = _skip(text, position)
        separator = text[position : position + 1]
        if separator == "]":
            return items, position + 1
        if separator != ",":
            raise ValueError(f"expected ',' or ']' at {position}")
        position = _skip(text, position + 1)


def _object(text: str, position: int, depth: int) -> tuple[dict[str, Any], int]:
    members: dict[str, Any] = {}
    position = _skip(text, position + 1)
    if text[position : position + 1] == "}":
        return members, position + 1
    while True:
        if text[position : position + 1] != '"':
            raise ValueError(f"expected a key at {position}")
        key, position = _SCAN(text, position)
        position = _skip(text, position)
        if text[position : position + 1] != ":":
            raise ValueError(f"expected ':' at {position}")
        members[key], position = _value(text, _skip(text, position + 1), depth + 1)
        position = _skip(text, position)
        separator = text[position : position + 1]
        if separator == "}":
            return members, position + 1
        if separator != ",":
            raise ValueError(f"expected ',' or '}}' at {position}")
        position = _skip(text, position + 1)
