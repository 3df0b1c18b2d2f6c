"""The ``cache:`` section and its per-model overrides, as a config file's author writes them."""

from __future__ import annotations

import pytest

from llmrelay.config import CachePolicy, Settings
from llmrelay.errors import ConfigError

PROVIDERS = {"p": {"kind": "openai", "base_url": "http://127.0.0.1:1/v1"}}


def settings(cache: dict, model_cache: dict | None = None) -> Settings:
    model = {"name": "m", "provider": "p", **({"cache": model_cache} if model_cache is not None else {})}
    return Settings.from_dict({"providers": PROVIDERS, "models": [model], "cache": cache})


def test_defaults():
    s = Settings()
    assert s.pipeline == (
        "record",
        "route",
        "limit",
        "budget",
        "guard_input",
        "cache",
        "guard_output",
        "execute",
    )
    assert s.cache.backend == "memory" and s.cache.ttl_s == 3600 and s.cache.only_deterministic
    assert s.cache.enabled and not s.cache.shared and not s.cache.semantic.enabled


def test_a_model_overrides_only_what_it_sets():
    s = settings(
        {"ttl_s": 60, "semantic": {"threshold": 0.8}},
        {"shared": True, "semantic": {"enabled": True}},
    )
    policy = s.cache.merged(s.models[0].cache)
    assert type(policy) is CachePolicy
    assert policy.ttl_s == 60 and policy.shared and policy.only_deterministic
    assert policy.semantic.enabled and policy.semantic.threshold == 0.8
    assert s.cache.merged(None).ttl_s == 60


@pytest.mark.parametrize(
    ("cache", "model_cache", "where"),
    [
        ({"ttl_s": 0}, None, "cache.ttl_s"),
        ({"backend": "memcached"}, None, "cache.backend"),
        ({}, {"backend": "redis"}, "models.0.cache.backend"),  # the store is global, not per model
        ({}, {"semantic": {"threshold": 1.5}}, "models.0.cache.semantic.threshold"),
    ],
)
def test_mistakes_are_config_errors_naming_the_place(cache, model_cache, where):
    with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
        settings(cache, model_cache)
