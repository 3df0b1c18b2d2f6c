"""``cache.semantic.verify: {model: ...}``: a semantic match is served only when a model, asked through
the gateway's own pipeline, calls the two questions the SAME; a DIFFERENT, a timeout, an error or
garbage is a miss. A real gateway with the real embedder, the official SDK and a scripted simulator."""

from __future__ import annotations

import random
import string
from pathlib import Path

import openai
import pytest

from llmrelay import Relay
from llmrelay.errors import ConfigError
from llmrelay.observability.sqlite_store import SqliteCallStore

from .conftest import gateway_config, recorded, serve_config, simulate_config, stop_process

# The verifying models' scripts (the simulator matches the verifier's question pair).
SIMULATOR = {
    "seed": 1,
    "rules": [
        {"match": ".", "model": "judge-same", "reply": "SAME"},
        {"match": ".", "model": "judge-different", "reply": "Different."},
        {"match": ".", "model": "judge-garbage", "reply": "It depends."},
        {"match": ".", "model": "judge-hedged", "reply": "Not the same."},
        {"match": ".", "model": "judge-slow", "reply": "SAME"},
    ],
    "per_model": {"judge-slow": {"latency_ms": 3000}, "judge-down": {"faults": {"500": 1.0}}},
}
JUDGES = ("same", "different", "garbage", "hedged", "slow", "down")


def _model(name: str, upstream: str, **kw) -> dict:
    return {"name": name, "provider": "up", "upstream": upstream, "price_ref": "gpt-4o-mini",
            "price_provider": "openai", **kw}  # fmt: skip


def config(sim: str, home: Path) -> dict:
    answering = [
        _model(
            f"answer-{judge}",
            "gpt-4o-mini",
            cache={"semantic": {"enabled": True, "verify": {"model": f"judge-{judge}", "timeout_s": 0.5}}},
        )
        for judge in JUDGES
    ]
    return {
        "execute": {"timeout_s": 10, "max_attempts": 1},
        "calllog": {"directory": str(home), "store": "sqlite:///calls.db", "flush_interval_s": 0.05},
        "providers": {"up": {"kind": "openai", "base_url": sim + "/v1"}},
        "models": [
            *answering,
            _model("answer-unverified", "gpt-4o-mini", cache={"semantic": {"enabled": True}}),
            *(_model(f"judge-{judge}", f"judge-{judge}") for judge in JUDGES),
        ],
        "cache": {"ttl_s": 600},
    }


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    server = simulate_config(SIMULATOR, tmp_path_factory.mktemp("verify-sim"))
    yield server
    stop_process(server)


@pytest.fixture(scope="module")
def gateway(sim, tmp_path_factory):
    pytest.importorskip("usearch", reason="the semantic extra: pip install 'llmrelay[semantic]'")
    tmp = tmp_path_factory.mktemp("verify")
    server = serve_config(config(sim.url, tmp / "home"), tmp)
    yield server
    stop_process(server)


@pytest.fixture
def client(gateway):
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0, timeout=20) as c:
        yield c


def ask(client, model: str, question: str):
    raw = client.chat.completions.with_raw_response.create(
        model=model, temperature=0, messages=[{"role": "user", "content": question}]
    )
    return raw.parse(), raw.headers


async def _records(home: Path) -> list:
    store = SqliteCallStore(home / "calls.db")
    await store.open()
    try:
        return await store.recent(limit=500)
    finally:
        await store.close()


def questions() -> tuple[str, str]:
    """A question and a paraphrase, new to the cache (the tag keeps them apart from other tests')."""
    tag = "".join(random.choices(string.ascii_lowercase, k=8))  # no digits: the number check is tested
    return f"How do I reset my password on account {tag}?", f"How can I reset my password on account {tag}?"


async def test_a_match_the_model_calls_the_same_is_served_and_the_verdict_is_kept(client, gateway):
    first, asked = questions()
    original, headers = ask(client, "answer-same", first)
    assert headers["x-llmrelay-cache"] == "miss"
    served, headers = ask(client, "answer-same", asked)
    assert headers["x-llmrelay-cache"] == "semantic-hit"
    assert served.choices[0].message.content == original.choices[0].message.content
    call_id = headers["x-llmrelay-request-id"]

    # The verifying model's call went through the pipeline: on record, with a cost, marked.
    hit = await recorded(gateway.home, call_id)
    assert hit.status == "cache_hit" and hit.extra["cache_verify"] == "judge-same said SAME"
    probes = [r for r in await _records(gateway.home) if r.extra.get("cache_probe") == call_id]
    assert [(p.model, p.status) for p in probes] == [("judge-same", "success")]
    assert probes[0].cost_usd is not None

    # Asked again: the verdict is remembered, no second model call.
    _, headers = ask(client, "answer-same", asked)
    assert headers["x-llmrelay-cache"] == "semantic-hit"
    again = await recorded(gateway.home, headers["x-llmrelay-request-id"])
    assert again.extra["cache_verify"] == "judge-same said SAME (cached)"
    assert not [r for r in await _records(gateway.home) if r.extra.get("cache_probe") == again.id]


@pytest.mark.parametrize(
    ("judge", "why"),
    [
        ("different", "judge-different said DIFFERENT"),
        ("garbage", "failed (it answered 'It depends.', neither SAME nor DIFFERENT): a miss"),
        # SAME inside a longer answer is not a yes, only an answer that starts with it (cut at 3 tokens).
        ("hedged", "failed (it answered 'Not the same', neither SAME nor DIFFERENT): a miss"),
        ("slow", "failed (no answer within 0.5s): a miss"),
        ("down", "failed (UpstreamUnavailable: "),
    ],
)
async def test_anything_but_same_is_a_miss_answered_upstream(client, gateway, judge, why):
    first, asked = questions()
    ask(client, f"answer-{judge}", first)
    answer, headers = ask(client, f"answer-{judge}", asked)
    assert headers["x-llmrelay-cache"] == "miss" and answer.choices[0].message.content
    record = await recorded(gateway.home, headers["x-llmrelay-request-id"])
    assert record.status == "success" and record.extra["cache_verify"].startswith(why)


async def test_the_cheap_checks_reject_before_any_model_call(client, gateway):
    """A number mismatch never reaches the model; a route without ``verify`` never asks one."""
    first, asked = questions()
    ask(client, "answer-same", first)
    _, headers = ask(client, "answer-same", first.replace("reset", "reset 2"))
    assert headers["x-llmrelay-cache"] == "miss"
    ask(client, "answer-unverified", first)
    _, unverified = ask(client, "answer-unverified", asked)
    assert unverified["x-llmrelay-cache"] == "semantic-hit"
    ids = [headers["x-llmrelay-request-id"], unverified["x-llmrelay-request-id"]]
    for call_id in ids:
        assert "cache_verify" not in (await recorded(gateway.home, call_id)).extra
    assert not [r for r in await _records(gateway.home) if r.extra.get("cache_probe") in ids]


async def test_a_verifying_model_that_is_not_configured_is_a_config_error():
    config = gateway_config("http://127.0.0.1:9")
    config["models"][0]["cache"] = {"semantic": {"enabled": True, "verify": {"model": "gpt-4o-mni"}}}
    with pytest.raises(ConfigError, match=r"models\.gpt-4o-mini\.cache\.semantic\.verify: no model named"):
        async with Relay(config):
            pass
