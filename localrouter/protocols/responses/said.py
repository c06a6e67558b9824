"""What the open items of a streamed Response have said (`Said`): kept as the JSON strings that
its closing events carry, appended to delta by delta (a delta costs its own bytes, whatever came
before), up to MAX_OUTPUT_BYTES for all items; a long one is serialised once, however often the
closing events and `response.completed` repeat it."""

from __future__ import annotations

import orjson

# What a streamed Response may say (its text and tool-call arguments, as JSON strings), all of
# which its closing events repeat and the store keeps: past it, the answer ends as one that
# reached its maximum output. Eight times the longest answer a model gives (128k tokens, about
# 512 KiB).
MAX_OUTPUT_BYTES = 4 * 1024 * 1024
# Below this, a string is handed back as a str: serialising it again costs under 0.3 ms, where
# each pass over 4 MiB of escaped code took about 15 ms of the loop.
_SERIALISED_ONCE = 64 * 1024

# A string as the closing events carry it: a str, or a long one as the JSON kept.
Text = str | orjson.Fragment


class Said:
    """What each open item of one streamed Response has said so far, by output_index."""

    def __init__(self, max_bytes: int = MAX_OUTPUT_BYTES) -> None:
        self.max_bytes = max_bytes
        self._room = max_bytes  # what all items may still say
        self._items: dict[int, bytearray] = {}  # by output_index: `"` and the JSON so far

    def open(self, index: int) -> None:
        self._items[index] = bytearray(b'"')

    def add(self, index: int, part: str) -> bool:
        """Keep `part` of what item `index` says; False, keeping nothing, when that would take
        all the items past `max_bytes`."""
        data = orjson.dumps(part)
        size = len(data) - 2  # without its quotes
        if size > self._room:
            return False
        self._room -= size
        self._items[index] += memoryview(data)[1:-1]
        return True

    def take(self, index: int) -> Text:
        """All item `index` said, as the events that close it carry it; the item is let go."""
        said = self._items.pop(index)
        said += b'"'
        if len(said) > _SERIALISED_ONCE:
            return orjson.Fragment(bytes(said))
        text: str = orjson.loads(said)
        return text
