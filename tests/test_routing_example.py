"""examples/routing.yaml as shipped: `model: auto` answered by the small or the frontier simulated
model by the heuristic router, the experiment route, and `llmrelay costs` reading the result."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import openai
import pytest

from .conftest import free_port, recorded, start_process, stop_process
from .test_cli_calllog import llmrelay

ROUTING = Path(__file__).resolve().parent.parent / "examples" / "routing.yaml"


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("routing-example")
    home = tmp / "home"
    server = start_process(
        ["serve", "--config", str(ROUTING)],
        free_port(),
        tmp,
        ready_path="/healthz",
        env={"LLMRELAY_HOME": str(home)},
    )
    server.home = home
    yield server
    stop_process(server)


@pytest.fixture
def client(example):
    with openai.OpenAI(base_url=example.url + "/v1", api_key="x", max_retries=0) as c:
        yield c


def say(client, content: str, model: str = "auto", **kw):
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": content}], **kw
    )


@pytest.mark.parametrize(
    ("content", "model"),
    [
        ("What is the capital of France?", "sim/gpt-4o-mini"),
        ("Summarise this in a sentence: the meeting moved to Tuesday.", "sim/gpt-4o-mini"),
        (
            "Compare quicksort and mergesort, analyse their complexity and prove the lower bound.",
            "sim/gpt-4o",
        ),
        ("Why does this crash?\n```python\nprint(items[len(items)])\n```", "sim/gpt-4o"),
    ],
)
def test_auto_answers_from_the_model_the_heuristic_picks(client, content, model):
    raw = say(client, content)
    answer = raw.parse()
    assert answer.model == model == raw.headers["x-llmrelay-model"]
    assert answer.choices[0].message.content == f"You said: {content}"


async def test_the_decision_and_the_saving_are_on_the_record(client, example):
    raw = say(client, "Hello there!")
    record = await recorded(example.home, raw.headers["x-llmrelay-request-id"])
    route = record.extra["route"]
    assert (record.requested_model, route["model"], route["tier"], route["router"]) == (
        "auto", "sim/gpt-4o-mini", "small", "heuristic",
    )  # fmt: skip
    assert Decimal(route["frontier_cost_usd"]) > Decimal(record.cost_usd) > 0
    assert Decimal(route["saved_usd"]) == Decimal(route["frontier_cost_usd"]) - Decimal(record.cost_usd)


def test_the_enterprise_rule_sends_everything_to_the_frontier_model(client):
    assert say(client, "Hello there!", metadata={"plan": "enterprise"}).parse().model == "sim/gpt-4o"


async def test_the_experiment_is_sticky_and_costs_compare_its_variants(client, example, monkeypatch):
    variants = {}
    for i in range(10):
        for _ in range(2):
            raw = say(client, "Hello there!", model="auto-ab", user=f"user-{i}")
            variants.setdefault(i, set()).add(raw.headers["x-llmrelay-variant"])
    assert all(len(v) == 1 for v in variants.values()) and set().union(*variants.values()) == {
        "routed",
        "frontier",
    }
    await recorded(example.home, raw.headers["x-llmrelay-request-id"])  # written in order: all are
    monkeypatch.setenv("LLMRELAY_HOME", str(example.home))
    out = llmrelay("costs", "--config", str(ROUTING), "--by", "variant")
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:] if line.strip()}
    assert sum(int(rows[g][1]) for g in rows if g.startswith("heuristic-vs-frontier/")) == 20
    assert rows["heuristic-vs-frontier/frontier"][-1] == "$0.000000"
    assert Decimal(rows["heuristic-vs-frontier/routed"][-1].strip("$")) > 0
    assert Decimal(out.split("routing saved $")[1].split()[0]) > 0
