"""The ``trained`` router in the gateway: a tiny model trained here with a fixed seed, saved, loaded
by a route, and its decisions seen through the official openai SDK."""

from __future__ import annotations

import subprocess
import sys

import openai
import pytest
import yaml

from llmrelay.routing.trained import TrainedRouter, train

from .conftest import recorded, serve_config, stop_process

HARD = [
    "Prove that there are infinitely many primes.",
    "Solve the integral of x^2 sin x dx step by step.",
    "Derive the closed form of the Fibonacci sequence.",
    "Prove that sqrt(2) is irrational.",
    "Solve the recurrence T(n) = 2T(n/2) + n and prove the bound.",
    "Derive the gradient of the softmax cross-entropy loss.",
    "Prove the triangle inequality for complex numbers.",
    "Solve this system of differential equations.",
]
EASY = [
    "What is the capital of France?",
    "Say hello in Spanish.",
    "What colour is the sky?",
    "Translate 'cat' to German.",
    "What is the capital of Italy?",
    "Say thanks in French.",
    "What colour is grass?",
    "Translate 'dog' to Spanish.",
]
ROWS = [{"prompt": p, "label": "strong"} for p in HARD] + [{"prompt": p, "label": "weak"} for p in EASY]


def config(sim: str, home, path) -> dict:
    return {
        "calllog": {"directory": str(home), "store": "sqlite:///calls.db", "flush_interval_s": 0.05},
        "providers": {"up": {"kind": "openai", "base_url": sim + "/v1"}},
        "models": [
            {"name": "small", "provider": "up", "upstream": "gpt-4o-mini"},
            {"name": "big", "provider": "up", "upstream": "gpt-4o"},
        ],
        "routes": [
            {
                "name": "auto",
                "tiers": [{"name": "weak", "model": "small"}, {"name": "strong", "model": "big"}],
                "router": {"kind": "trained", "path": str(path)},
            }
        ],
    }


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("trained-router") / "router.npz"
    train(ROWS, seed=0, strong_share=0.5).save(path)
    return path


@pytest.fixture(scope="module")
def gateway(simulator, model_path, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trained-gateway")
    server = serve_config(config(simulator.url, tmp / "home", model_path), tmp)
    yield server
    stop_process(server)


@pytest.mark.parametrize(
    ("content", "model"),
    [
        ("Prove that e is irrational.", "big"),
        ("Derive the formula for the sum of squares.", "big"),
        ("What is the capital of Spain?", "small"),
        ("Say goodbye in Italian.", "small"),
    ],
)
async def test_the_trained_router_decides_with_its_calibrated_threshold(gateway, model_path, content, model):
    router = TrainedRouter.load(model_path)
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": content}]
        )
    assert raw.parse().model == model
    route = (await recorded(gateway.home, raw.headers["x-llmrelay-request-id"])).extra["route"]
    score = router.score(content)
    assert route["router"] == "trained" and route["score"] == round(score, 4)
    assert route["reason"] == f"trained score {score:.3f} (threshold {router.threshold:.3f})"
    assert (score >= router.threshold) == (model == "big")


def test_a_missing_model_file_stops_the_gateway_with_the_reason(simulator, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config(simulator.url, tmp_path, tmp_path / "nope.npz")))
    result = subprocess.run(
        [sys.executable, "-m", "llmrelay", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0 and "nope.npz is not a trained router file" in result.stderr
