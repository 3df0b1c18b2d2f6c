"""Load balancing across the deployments of one model."""

from __future__ import annotations

import random
from collections import Counter

from llmrelay.catalog import Catalog
from llmrelay.config import Settings
from llmrelay.reliability.breaker import BreakerSettings, LocalBreakers
from llmrelay.reliability.executor import Balancer


def entry(balance: str):
    settings = Settings.from_dict(
        {
            "providers": {
                p: {"kind": "openai", "base_url": f"http://{p}"} for p in ("east", "west", "north")
            },
            "models": [
                {
                    "name": "m",
                    "balance": balance,
                    "deployments": [
                        {"provider": "east", "upstream": "m", "weight": 3},
                        {"provider": "west", "upstream": "m", "weight": 1},
                        {"provider": "north", "upstream": "m", "weight": 1},
                    ],
                }
            ],
        }
    )
    return Catalog(settings).get("m")


def test_weighted_shares_follow_the_weights():
    balancer = Balancer(LocalBreakers(BreakerSettings()), random.Random(3))
    picks = Counter(balancer.pick(entry("weighted"), frozenset()).key for _ in range(10_000))
    assert abs(picks["east/m"] / 10_000 - 0.6) < 0.03
    assert abs(picks["west/m"] / 10_000 - 0.2) < 0.03


def test_least_in_flight_picks_the_least_loaded_per_weight():
    balancer = Balancer(LocalBreakers(BreakerSettings()), random.Random(3))
    m = entry("least_in_flight")
    balancer.in_flight.update({"east/m": 3, "west/m": 2, "north/m": 0})
    assert balancer.pick(m, frozenset()).key == "north/m"
    balancer.in_flight.update({"north/m": 2})  # east 3/3=1 < west 2/1 = north 2/1
    assert balancer.pick(m, frozenset()).key == "east/m"


def test_open_breakers_and_cooldowns_are_skipped_unless_asked():
    breakers = LocalBreakers(BreakerSettings(consecutive_failures=1))
    balancer = Balancer(breakers, random.Random(3))
    m = entry("weighted")
    breakers.record("east/m", False)  # opens
    breakers.cooldown("west/m", 30)
    assert {balancer.pick(m, frozenset()).key for _ in range(200)} == {"north/m"}
    assert balancer.pick(m, frozenset({"north/m"})) is None
    assert balancer.pick(m, frozenset({"north/m"}), True).key == "west/m"  # cooling, but asked for
