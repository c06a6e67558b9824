"""The element-wise decoder reads what orjson reads, whatever the window size."""

from __future__ import annotations

import orjson
import pytest

from localrouter.base.jsonload import loads_in_steps

DOCUMENTS = [
    b'{"object": "list", "data": [{"id": "a", "created": 1700000000}, {"id": "b"}]}',
    b' {"data" : [ 1 , 22 , 333.5e-3 , -4 , true , false , null , "x" ] } \n',
    b'[{"id": "\\u00e9t\\u00e9 \\ud83d\\ude00", "n": 12345678901234567890}, [], {}]',
    '{"id": "modèle-été", "owned_by": "日本語", "x": ["ü", "€"]}'.encode(),
    b'{"data": [], "nested": {"deep": [[1, [2, [3]]], {"k": {"v": 1}}]}}',
    b"[]",
    b"{}",
    b'"just a string"',
    b"12345",
]

INVALID = [
    b'{"data": [1, 2',
    b'{"data": [1 2]}',
    b'{"data" 1}',
    b"{1: 2}",
    b'{"a": 1} extra',
    b'{"a": "unterminated}',
    b"[1,]",
    b"",
]


@pytest.mark.parametrize("document", DOCUMENTS)
@pytest.mark.parametrize("step", [1, 2, 3, 7, 64, 1024 * 1024])
@pytest.mark.parametrize("objects_to", [0, 1, 3])
def test_every_window_size_decodes_the_same(document: bytes, step: int, objects_to: int) -> None:
    assert loads_in_steps(document, step=step, objects_to=objects_to) == orjson.loads(document)


@pytest.mark.parametrize("document", INVALID)
@pytest.mark.parametrize("step", [1, 5, 1024])
@pytest.mark.parametrize("objects_to", [0, 2])
def test_invalid_json_is_a_value_error(document: bytes, step: int, objects_to: int) -> None:
    with pytest.raises(ValueError, match=r"expected|not JSON|extra data"):
        loads_in_steps(document, step=step, objects_to=objects_to)


def test_a_long_list_in_small_windows() -> None:
    """A 300-model list with non-ASCII keys and values, read in 97-byte windows, decodes to the very
    document that was encoded."""
    models = [
        {"id": f"vendor/model-{n}", "context_length": n * 1000, "é": "ü" * n} for n in range(300)
    ]
    document = orjson.dumps({"object": "list", "data": models})
    assert loads_in_steps(document, step=97) == {"object": "list", "data": models}
