"""Token counts from each upstream's wire format to the ledger's convention (input inclusive of
cache reads and writes), and what they cost. The payloads follow each API's documented usage
objects (OpenAI Chat Completions and Responses, Anthropic Messages, Gemini's usageMetadata,
Ollama's final answer, llama.cpp's server timings)."""

from __future__ import annotations

import pytest

from localrouter.config.settings import ProviderSettings
from localrouter.usage.cost import cost_of, priced, prices_for
from localrouter.usage.record import CostSource, Tokens
from localrouter.usage.tokens import (
    from_anthropic,
    from_chat_answer,
    from_gemini,
    from_llamacpp,
    from_ollama,
    from_openai,
    from_responses,
)


def test_openai_prompt_tokens_already_hold_the_cached_ones() -> None:
    """OpenAI: prompt_tokens 2006 of which 1920 cached; reasoning is part of the output."""
    usage = {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 256},
    }
    assert from_openai(usage) == Tokens(2006, 300, 1920, 0, 256)


def test_openrouter_reports_cache_writes_beside_reads() -> None:
    """OpenRouter passes a cache write (Anthropic's, Gemini's) in prompt_tokens_details."""
    usage = {
        "prompt_tokens": 5000,
        "completion_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 4800},
    }
    assert from_openai(usage) == Tokens(5000, 10, 0, 4800, 0)


def test_deepseek_names_its_cache_hits_apart() -> None:
    usage = {"prompt_tokens": 100, "completion_tokens": 5, "prompt_cache_hit_tokens": 64}
    assert from_openai(usage) == Tokens(100, 5, 64, 0, 0)


def test_anthropic_input_tokens_leave_out_cache_reads_and_writes() -> None:
    """Anthropic: 12 uncached + 4000 read + 300 written = 4312 input tokens."""
    usage = {
        "input_tokens": 12,
        "cache_read_input_tokens": 4000,
        "cache_creation_input_tokens": 300,
        "output_tokens": 85,
    }
    assert from_anthropic(usage) == Tokens(4312, 85, 4000, 300, 0)


def test_responses_input_tokens_hold_the_cached_ones() -> None:
    usage = {
        "input_tokens": 900,
        "input_tokens_details": {"cached_tokens": 512},
        "output_tokens": 40,
        "output_tokens_details": {"reasoning_tokens": 16},
        "total_tokens": 940,
    }
    assert from_responses(usage) == Tokens(900, 40, 512, 0, 16)


def test_gemini_thoughts_are_output_and_cached_content_is_input() -> None:
    metadata = {
        "promptTokenCount": 1200,
        "cachedContentTokenCount": 1024,
        "candidatesTokenCount": 50,
        "thoughtsTokenCount": 30,
        "totalTokenCount": 1280,
    }
    assert from_gemini(metadata) == Tokens(1200, 80, 1024, 0, 30)


def test_ollama_counts_come_from_its_final_answer() -> None:
    answer = {"done": True, "prompt_eval_count": 26, "eval_count": 298}
    assert from_ollama(answer) == Tokens(26, 298, 0, 0, 0)


def test_llamacpp_timings_count_its_prompt_cache_as_input() -> None:
    """llama.cpp: prompt_n evaluated now plus cache_n taken from its cache."""
    timings = {"prompt_n": 10, "cache_n": 118, "predicted_n": 42, "predicted_ms": 500.0}
    assert from_llamacpp(timings) == Tokens(128, 42, 118, 0, 0)
    assert from_chat_answer({"choices": [], "timings": timings}) == Tokens(128, 42, 118, 0, 0)


@pytest.mark.parametrize("usage", [None, "12", {"prompt_tokens": True}, {"prompt_tokens": -5}])
def test_what_is_not_a_count_counts_as_nothing(usage: object) -> None:
    assert from_openai(usage) is None


PRICES = {
    "prompt": 3e-06,
    "completion": 1.5e-05,
    "input_cache_read": 3e-07,
    "input_cache_write": 3.75e-06,
}


def test_cost_prices_cache_reads_and_writes_apart_from_input() -> None:
    """4312 input (12 uncached, 4000 read, 300 written) and 85 output at Claude's prices."""
    tokens = Tokens(4312, 85, 4000, 300, 0)
    expected = 12 * 3e-06 + 4000 * 3e-07 + 300 * 3.75e-06 + 85 * 1.5e-05
    assert cost_of(tokens, PRICES) == pytest.approx(expected)


def test_an_unknown_price_is_unknown_never_zero() -> None:
    assert cost_of(Tokens(10, 10), {"prompt": 1e-06}) is None
    assert priced(Tokens(10, 10), None, CostSource.UNPRICED) == (None, CostSource.UNPRICED)


def test_config_prices_win_and_local_instances_are_free() -> None:
    """A local instance is free; a price in the config wins over the catalog, per model first."""
    local = ProviderSettings(name="box", type="ollama")
    assert prices_for(local, "llama3", None) == (None, CostSource.FREE)
    assert priced(Tokens(100, 100), None, CostSource.FREE) == (0.0, CostSource.FREE)
    priced_here = ProviderSettings(
        name="box",
        type="ollama",
        pricing={"input": 1.0, "output": 2.0},
        model_pricing={"big-*": {"input": 10.0, "output": 20.0}},
    )
    assert prices_for(priced_here, "llama3", None)[0] == {"prompt": 1e-06, "completion": 2e-06}
    assert prices_for(priced_here, "big-model", None)[0] == {
        "prompt": 1e-05,
        "completion": 2e-05,
    }
    cloud = ProviderSettings(name="oa", type="openai", api_key="sk-test-12345678")
    assert prices_for(cloud, "gpt-4o", PRICES) == (PRICES, CostSource.CATALOG)
    assert prices_for(cloud, "gpt-4o", None) == (None, CostSource.UNPRICED)
