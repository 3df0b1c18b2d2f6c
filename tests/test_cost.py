"""Cost to the micro-dollar, from the usage payloads the providers really send."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from llmrelay.catalog import Catalog, cost_usd
from llmrelay.config import Settings
from llmrelay.providers import anthropic_format, openai_format
from llmrelay.types import Usage

CONFIG = {
    "providers": {
        "openai": {"kind": "openai", "base_url": "https://api.openai.com/v1"},
        "anthropic": {"kind": "anthropic", "base_url": "https://api.anthropic.com"},
        "local": {"kind": "openai", "base_url": "http://127.0.0.1:8000/v1"},
    },
    "models": [
        {"name": "gpt-4o-mini", "provider": "openai"},
        {"name": "gpt-4o", "provider": "openai"},
        {"name": "sonnet", "provider": "anthropic", "upstream": "claude-sonnet-4-5"},
        {"name": "haiku", "provider": "anthropic", "upstream": "claude-haiku-4-5"},
        {
            "name": "llama",
            "provider": "local",
            "upstream": "llama-3.1-8b",
            "price": {"input": 0.2, "output": 0.4, "cache_read": 0.05},
        },
        {
            "name": "claude-compatible",
            "provider": "local",
            "upstream": "my-claude",
            "price": {"input": 3, "output": 15, "cache_read": 0.3, "cache_write": 3.75, "cache_write_1h": 6},
        },
        {"name": "mystery", "provider": "local", "upstream": "no-such-model-anywhere"},
    ],
}

# A real gpt-4o-mini response's usage block (cached prompt prefix).
OPENAI_BODY = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
}

# A real Messages response's usage: input_tokens excludes the cache reads and writes.
ANTHROPIC_BODY = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [{"type": "text", "text": "ok"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 50,
        "cache_creation_input_tokens": 2000,
        "cache_read_input_tokens": 10000,
        "output_tokens": 400,
        "service_tier": "standard",
    },
}


@pytest.fixture(scope="module")
def catalog():
    return Catalog(Settings.from_dict(CONFIG))


def test_openai_usage_with_cached_prompt(catalog):
    usage = openai_format.parse_response(OPENAI_BODY, "gpt-4o-mini").usage
    assert usage == Usage(prompt_tokens=2006, completion_tokens=300, cached_tokens=1920)
    # 86 uncached x $0.15 + 1920 cached x $0.075 + 300 out x $0.60, per million
    assert catalog.cost(catalog.get("gpt-4o-mini").deployments[0], usage) == Decimal("0.0003369")


def test_anthropic_usage_with_cache_reads_and_writes(catalog):
    usage = anthropic_format.parse_response(ANTHROPIC_BODY, "sonnet").usage
    assert usage == Usage(
        prompt_tokens=12050, completion_tokens=400, cached_tokens=10000, cache_write_tokens=2000
    )
    # 50 in x $3 + 2000 written x $3.75 + 10000 read x $0.30 + 400 out x $15, per million
    assert catalog.cost(catalog.get("sonnet").deployments[0], usage) == Decimal("0.01665")


def test_anthropic_1_hour_cache_writes_at_their_own_price(catalog):
    """Anthropic's usage splits writes by TTL; 1-hour ones cost 2x the input price, 5-minute ones
    1.25x (claude-sonnet-4-5: $6 and $3.75 per million, input $3, read $0.30, output $15)."""
    body = {**ANTHROPIC_BODY, "usage": {**ANTHROPIC_BODY["usage"]}}
    body["usage"]["cache_creation"] = {"ephemeral_5m_input_tokens": 500, "ephemeral_1h_input_tokens": 1500}
    usage = anthropic_format.parse_response(body, "sonnet").usage
    assert usage == Usage(
        prompt_tokens=12050,
        completion_tokens=400,
        cached_tokens=10000,
        cache_write_tokens=2000,
        cache_write_1h_tokens=1500,
    )
    # 50 in x $3 + 500 x $3.75 + 1500 x $6 + 10000 read x $0.30 + 400 out x $15, per million
    assert catalog.cost(catalog.get("sonnet").deployments[0], usage) == Decimal("0.020025")
    # The same from a price override in the config; without cache_write_1h, 1-hour writes cost
    # what other writes do.
    assert catalog.cost(catalog.get("claude-compatible").deployments[0], usage) == Decimal("0.020025")
    assert catalog.cost(catalog.get("llama").deployments[0], usage) == catalog.cost(
        catalog.get("llama").deployments[0], usage.model_copy(update={"cache_write_1h_tokens": 0})
    )


@pytest.mark.parametrize(
    ("model", "usage", "expected"),
    [
        # The figures from ../shared/docs/dependencies.md: 100k input (60k cached) + 10k output.
        ("gpt-4o", Usage(prompt_tokens=100_000, cached_tokens=60_000, completion_tokens=10_000), "0.275"),
        (
            "gpt-4o-mini",
            Usage(prompt_tokens=100_000, cached_tokens=60_000, completion_tokens=10_000),
            "0.0165",
        ),
        ("sonnet", Usage(prompt_tokens=100_000, cached_tokens=60_000, completion_tokens=10_000), "0.288"),
        ("haiku", Usage(prompt_tokens=100_000, cached_tokens=60_000, completion_tokens=10_000), "0.096"),
        ("haiku", Usage(prompt_tokens=1, completion_tokens=1), "0.000006"),
        # 1-hour cache writes: $6 (sonnet) and $2 (haiku) per million; above 200k prompt tokens
        # sonnet's prices double ($12).
        (
            "sonnet",
            Usage(prompt_tokens=100_000, cache_write_tokens=100_000, cache_write_1h_tokens=100_000),
            "0.6",
        ),
        (
            "haiku",
            Usage(prompt_tokens=100_000, cache_write_tokens=100_000, cache_write_1h_tokens=40_000),
            "0.155",
        ),
        (
            "sonnet",
            Usage(prompt_tokens=300_000, cache_write_tokens=300_000, cache_write_1h_tokens=300_000),
            "3.6",
        ),
        ("gpt-4o-mini", Usage(), "0"),
    ],
)
def test_catalog_prices(catalog, model, usage, expected):
    assert catalog.cost(catalog.get(model).deployments[0], usage) == Decimal(expected)


def test_price_override_in_config(catalog):
    usage = Usage(prompt_tokens=1000, cached_tokens=400, completion_tokens=100)
    # 600 x $0.20 + 400 x $0.05 + 100 x $0.40, per million
    assert catalog.cost(catalog.get("llama").deployments[0], usage) == Decimal("0.00018")


def test_unknown_price_is_none_not_zero(catalog):
    assert catalog.cost(catalog.get("mystery").deployments[0], Usage(prompt_tokens=10)) is None


# --- the per-request shortcut gives the library's figures -----------------------------------------

SHORTCUT = {
    "providers": CONFIG["providers"],
    "models": [
        {"name": "gpt-4o-mini", "provider": "openai"},
        {"name": "gpt-4.1-mini", "provider": "openai"},
        {"name": "haiku", "provider": "anthropic", "upstream": "claude-haiku-4-5"},
        {"name": "sonnet", "provider": "anthropic", "upstream": "claude-sonnet-4-5"},  # tiered at 200k
    ],
}


def _random_usages(n: int) -> list[Usage]:
    rng = random.Random(7)
    out = [Usage(), Usage(prompt_tokens=1), Usage(prompt_tokens=200_001, completion_tokens=5)]
    for _ in range(n):
        prompt = rng.choice([0, 1, rng.randint(0, 5_000), rng.randint(0, 1_000_000)])
        out.append(
            Usage(
                prompt_tokens=prompt,
                cached_tokens=rng.randint(0, prompt // 2) if rng.random() < 0.5 else 0,
                cache_write_tokens=(written := rng.randint(0, prompt // 2) if rng.random() < 0.5 else 0),
                cache_write_1h_tokens=rng.choice([0, written, rng.randint(0, written)]),
                completion_tokens=rng.choice([0, rng.randint(0, 100_000)]),
            )
        )
    return out


@pytest.mark.parametrize("name", [m["name"] for m in SHORTCUT["models"]])
def test_precomputed_rates_equal_genai_prices(name):
    catalog = Catalog(Settings.from_dict(SHORTCUT))
    entry = catalog.get(name)
    (deployment,) = entry.deployments
    assert catalog._rates[(name, deployment.key)] is not None  # the shortcut is in use for this model
    for usage in _random_usages(200):
        assert catalog.cost(deployment, usage) == cost_usd(entry.settings, deployment, usage), usage


def test_inconsistent_usage_has_no_cost_rather_than_a_wrong_one(catalog):
    bad = Usage(prompt_tokens=10, cached_tokens=20)  # more cached than prompt tokens
    assert catalog.cost(catalog.get("gpt-4o-mini").deployments[0], bad) is None
    assert catalog.cost(catalog.get("llama").deployments[0], bad) is None
    bad = Usage(prompt_tokens=10, cache_write_tokens=2, cache_write_1h_tokens=3)  # more 1h than written
    assert catalog.cost(catalog.get("sonnet").deployments[0], bad) is None
    assert cost_usd(catalog.get("sonnet").settings, catalog.get("sonnet").deployments[0], bad) is None


def test_prices_that_change_by_date_are_asked_of_the_library():
    """claude-sonnet-4-6's prices are a list by date: no precomputed rates, the library prices it."""
    config = {
        "providers": CONFIG["providers"],
        "models": [{"name": "s46", "provider": "anthropic", "upstream": "claude-sonnet-4-6"}],
    }
    catalog = Catalog(Settings.from_dict(config))
    entry = catalog.get("s46")
    (deployment,) = entry.deployments
    assert catalog._rates[("s46", deployment.key)] is None
    usage = Usage(prompt_tokens=2000, cached_tokens=1000, cache_write_tokens=500, cache_write_1h_tokens=500)
    cost = catalog.cost(deployment, usage)
    assert cost is not None and cost == cost_usd(entry.settings, deployment, usage)
