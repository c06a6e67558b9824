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

from localrouter.base.offload import INLINE_ITEMS, heavy

Json = dict[str, Any]  # a JSON object, as every protocol's bodies and events are

INLINE_BYTES = 256 * 1024  # below this, orjson's single call costs well under 10 ms
_SPACE = re.compile(r"[ \t\n\r]*")
_NUMBER_CHARACTERS = re.compile(r"[0-9.eE+\-]*")  # what may continue a number past a window's end
# The C scanner the decoder sets up (the stubs do not declare the attribute).
_SCAN: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


async def loads_off_loop(raw: bytes | bytearray) -> Any:
    """The decoded JSON; raises ValueError for anything that is not JSON."""
    if len(raw) <= INLINE_BYTES:
        return orjson.loads(raw)
    return await heavy(lambda: loads_in_steps(raw), INLINE_ITEMS + 1)


def loads_in_steps(raw: bytes | bytearray, *, step: int = 1024 * 1024, objects_to: int = 0) -> Any:
    """Decode element by element (see the module docstring); raises ValueError if invalid.
    Objects nested up to `objects_to` deep are split into members too (a catalog is objects of
    objects); deeper values are each scanned in one call."""
    text = _Window(raw, step, objects_to)
    value = text.value(depth=0)
    if text.peek() != "":
        raise ValueError("extra data after the JSON value")
    return value


class _Window:
    """The text being decoded, a window at a time: `step` bytes are decoded as the scan needs
    them, so no copy of the whole body is ever made (one 30 MB copy, with the page faults of
    its fresh memory, held the GIL for tens of milliseconds)."""

    def __init__(self, raw: bytes | bytearray, step: int, objects_to: int) -> None:
        self._raw = memoryview(raw)
        self._objects_to = objects_to
        self._step = step
        self._next = 0  # the first byte not decoded yet
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._text = ""
        self._position = 0
        self.consumed = 0  # characters scanned before the window, for error positions

    def value(self, depth: int) -> Any:
        opening = self.peek()
        if opening == "[" and depth <= 1:
            return self._array(depth)
        if opening == "{" and depth <= self._objects_to:
            return self._object(depth)
        return self._scan()

    def peek(self) -> str:
        """The next character that is not white space, or "" at the end."""
        while True:
            found = _SPACE.match(self._text, self._position)
            self._position = found.end() if found else self._position
            if self._position < len(self._text) or not self._grow():
                return self._text[self._position : self._position + 1]

    def _array(self, depth: int) -> list[Any]:
        items: list[Any] = []
        self._position += 1
        if self.peek() == "]":
            self._position += 1
            return items
        while True:
            items.append(self.value(depth + 1))
            self._expect_separator("]")
            if self._text[self._position - 1] == "]":
                return items

    def _object(self, depth: int) -> dict[str, Any]:
        members: dict[str, Any] = {}
        self._position += 1
        if self.peek() == "}":
            self._position += 1
            return members
        while True:
            if self.peek() != '"':
                raise ValueError(f"expected a key at {self._at()}")
            key = self._scan()
            if self.peek() != ":":
                raise ValueError(f"expected ':' at {self._at()}")
            self._position += 1
            members[key] = self.value(depth + 1)
            self._expect_separator("}")
            if self._text[self._position - 1] == "}":
                return members

    def _expect_separator(self, closing: str) -> None:
        separator = self.peek()
        if separator not in (",", closing):
            raise ValueError(f"expected ',' or '{closing}' at {self._at()}")
        self._position += 1

    def _scan(self) -> Any:
        """One whole value at the position. A value the window cuts fails to scan, or is a number
        whose rest (digits, a fraction, an exponent) may lie past the window's end: either way
        it is scanned again over a wider window."""
        while True:
            try:
                value, end = _SCAN(self._text, self._position)
            except (StopIteration, ValueError):
                if self._grow():
                    continue
                raise ValueError(f"not JSON at {self._at()}") from None
            if not _NUMBER_CHARACTERS.fullmatch(self._text, end) or not self._grow():
                self._position = end
                return value

    def _grow(self) -> bool:
        """Drop what was scanned, and at least double what is left; False at the end."""
        if self._next >= len(self._raw):
            return False
        rest = self._text[self._position :]
        pieces, wanted = [rest], max(len(rest), 1)
        added = 0
        while added < wanted and self._next < len(self._raw):
            chunk = self._raw[self._next : self._next + self._step]
            self._next += len(chunk)
            final = self._next >= len(self._raw)
            piece = self._decoder.decode(chunk, final=final)
            pieces.append(piece)
            added += len(piece) or 1
        self.consumed += self._position
        self._text, self._position = "".join(pieces), 0
        return True

    def _at(self) -> int:
        return self.consumed + self._position


def loads_or_none(raw: object) -> Any:
    """JSON text (bytes or str) decoded, or None for anything that is not JSON: for data
    another process wrote, which is ignored, not trusted."""
    if not isinstance(raw, (bytes, str)):
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
