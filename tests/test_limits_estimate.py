"""What a request says it may answer at most, as limits reserve it: each protocol's name for
it, the first positive number winning, and anything else (a bool, a string, zero) not a cap."""

from __future__ import annotations

from typing import Any

import pytest

from localrouter.limits.estimate import output_cap


@pytest.mark.parametrize(
    ("body", "cap"),
    [
        ({"max_completion_tokens": 64, "max_tokens": 8}, 64),  # Chat Completions' newer name
        ({"max_tokens": 8}, 8),  # Chat Completions, Messages
        ({"max_output_tokens": 100.0}, 100),  # Responses
        ({"options": {"num_predict": 16}}, 16),  # Ollama
        ({"max_tokens": True, "options": {"num_predict": 16}}, 16),  # a bool is no count
        ({"max_tokens": "64"}, None),
        ({"max_tokens": 0, "max_output_tokens": -1}, None),
        ({"options": ["num_predict", 16]}, None),
        ({"model": "m", "messages": []}, None),
    ],
)
def test_the_first_positive_number_a_request_gives_is_its_output_cap(
    body: dict[str, Any], cap: int | None
) -> None:
    assert output_cap(body) == cap
