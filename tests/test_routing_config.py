"""Routes in the config: what is accepted, and a clear ConfigError for each mistake."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from llmrelay.config import Settings
from llmrelay.errors import ConfigError

TIERS = [{"name": "small", "model": "mini"}, {"name": "frontier", "model": "large"}]


def config(*routes: dict, **top) -> dict:
    return {
        "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
        "models": [{"name": "mini", "provider": "p"}, {"name": "large", "provider": "p"}],
        "routes": list(routes),
        **top,
    }


def route(**fields) -> dict:
    return {"name": "auto", "tiers": TIERS, **fields}


def test_a_route_with_defaults_and_the_stage_in_the_default_pipeline():
    settings = Settings.from_dict(config(route()))
    (auto,) = settings.routes
    assert auto.router.kind == "heuristic" and auto.frontier_tier == "frontier"
    assert settings.pipeline.index("route") < settings.pipeline.index("guard_input")


def test_every_router_and_an_experiment_parse():
    routes = [
        route(name="h", router={"kind": "heuristic", "long_words": 100, "analysis_words": ["prove"]}),
        route(name="c", router={"kind": "classifier", "model": "mini", "timeout_s": 1, "on_error": "small"}),
        route(name="t", router={"kind": "trained", "path": "router.npz"}),
        route(
            name="r",
            router="rules",
            rules=[{"header": {"x-tier": "big"}, "tier": "frontier"}],
            default="small",
        ),
        route(
            name="e",
            experiment={
                "sticky": "key",
                "variants": [
                    {"name": "a", "weight": 9},
                    {"name": "b", "model": "large"},
                    {"name": "c", "router": {"kind": "classifier", "model": "mini"}, "system": "Be brief."},
                ],
            },
        ),
    ]
    assert [r.router.kind for r in Settings.from_dict(config(*routes)).routes] == [
        "heuristic", "classifier", "trained", "rules", "heuristic",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("routes", "top", "message"),
    [
        ([route(tiers=[])], {}, "routes.0.tiers: Tuple should have at least 1 item"),
        ([route(tiers=[{"name": "small", "model": "gpt-9"}])], {}, "'gpt-9' is not a model of this config"),
        ([route(name="mini")], {}, "'mini' is a model's name"),
        (
            [route(), route(aliases=["x"], name="y"), route(name="x")],
            {},
            "the name 'x' is used by two routes",
        ),
        ([route(tiers=[*TIERS, {"name": "small", "model": "large"}])], {}, "two tiers have the same name"),
        ([route(frontier="huge")], {}, "routes.auto.frontier: 'huge' is not one of its tiers"),
        (
            [
                route(
                    tiers=[{"name": "a", "model": "mini", "min_score": 0.1}, {"name": "b", "model": "large"}]
                )
            ],
            {},
            "the first tier takes every score",
        ),
        (
            [
                route(
                    tiers=[
                        {"name": "a", "model": "mini"},
                        {"name": "b", "model": "large", "min_score": 0.7},
                        {"name": "c", "model": "large", "min_score": 0.3},
                    ]
                )
            ],
            {},
            "rising from one to the next",
        ),
        ([route(tiers=[TIERS[0], {**TIERS[1], "min_score": 1.5}])], {}, "less than or equal to 1"),
        ([route(router="fancy")], {}, "does not match any of the expected tags"),
        ([route(router={"kind": "classifier", "model": "auto"})], {}, "'auto' is not a model of this config"),
        (
            [route(router={"kind": "classifier", "model": "mini", "on_error": "x"})],
            {},
            "'x' is not one of the route",
        ),
        ([route(router={"kind": "classifier", "model": "mini", "timeout_s": 0})], {}, "greater than 0"),
        ([route(router="rules")], {}, "the 'rules' router needs the route's `rules`"),
        ([route(rules=[{"tier": "small"}])], {}, "has no condition"),
        ([route(rules=[{"user": "a", "tier": "mid"}])], {}, "rules.0.tier: 'mid' is not one of its tiers"),
        ([route(experiment={"variants": [{"name": "a"}]})], {}, "at least 2 items"),
        ([route(experiment={"variants": [{"name": "a"}, {"name": "a"}]})], {}, "distinct names"),
        ([route(experiment={"variants": [{"name": "a"}, {"name": "b", "weight": 0}]})], {}, "greater than 0"),
        (
            [route(experiment={"variants": [{"name": "a"}, {"name": "b", "model": "x"}]})],
            {},
            "experiment.b.model",
        ),
        (
            [
                route(
                    experiment={
                        "variants": [{"name": "a"}, {"name": "b", "model": "mini", "router": "heuristic"}]
                    }
                )
            ],
            {},
            "sets both `model` and `router`",
        ),
        ([route()], {"pipeline": ["record", "execute"]}, "no 'route' stage"),
        (
            [route()],
            {"pipeline": ["record", "cache", "route", "execute"]},
            "'route' must come before 'cache'",
        ),
    ],
)
def test_bad_routes_are_config_errors(routes, top, message):
    with pytest.raises(ConfigError) as caught:
        Settings.from_dict(config(*routes, **top))
    assert message in caught.value.message


def test_serve_refuses_a_bad_route_with_the_reason(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config(route(tiers=[{"name": "small", "model": "gpt-9"}]))))
    result = subprocess.run(
        [sys.executable, "-m", "llmrelay", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "'gpt-9' is not a model of this config" in result.stderr
