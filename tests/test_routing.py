"""The route stage through a real gateway and the official openai SDK: each router's decisions, the
classifier against a scripted simulator (and when it fails), experiments, savings on the record."""

from __future__ import annotations

import uuid
from collections import Counter
from decimal import Decimal
from pathlib import Path

import anthropic
import genai_prices
import openai
import pytest
import yaml

from llmrelay.observability.sqlite_store import SqliteCallStore
from llmrelay.pipeline import Call
from llmrelay.routing.experiments import Experiment
from llmrelay.routing.heuristic import Heuristic
from llmrelay.routing.settings import ExperimentSettings, HeuristicRouter
from llmrelay.types import ChatRequest, Message

from .conftest import recorded, serve_config, simulate_config, stop_process
from .test_cli_calllog import llmrelay

HARD = "Analyze the trade-offs of these two designs and prove which one scales better."
EASY = "What is the capital of France?"

# The classifier's upstreams: "router-ok" answers like a rating model, the others fail in their way.
SIMULATOR = {
    "seed": 1,
    "rules": [
        {"match": "prove|theorem|algorithm", "model": "router-ok", "reply": "COMPLEX"},
        {"match": ".", "model": "router-ok", "reply": "SIMPLE."},
        {"match": ".", "model": "router-garbage", "reply": "It depends."},
        {"match": ".", "model": "router-hedged", "reply": "Not simple"},
    ],
    "per_model": {"router-slow": {"latency_ms": 3000}, "router-down": {"faults": {"500": 1.0}}},
}


def _model(name: str, upstream: str, price_ref: str, **kw) -> dict:
    return {"name": name, "provider": "up", "upstream": upstream, "price_ref": price_ref,
            "price_provider": "openai", **kw}  # fmt: skip


def _classifier_route(name: str, model: str, **router) -> dict:
    return {"name": name, "tiers": TIERS, "router": {"kind": "classifier", "model": model, **router}}


TIERS = [{"name": "small", "model": "small"}, {"name": "frontier", "model": "big"}]


def routing_config(sim: str, home: Path) -> dict:
    return {
        "execute": {"timeout_s": 10, "max_attempts": 1},
        "calllog": {
            "directory": str(home),
            "store": "sqlite:///calls.db",
            "flush_interval_s": 0.05,
            "bodies": "full",
        },  # fmt: skip
        "providers": {"up": {"kind": "openai", "base_url": sim + "/v1"}},
        "models": [
            _model("small", "gpt-4o-mini", "gpt-4o-mini"),
            _model("big", "gpt-4o", "gpt-4o"),
            _model("text-only", "gpt-4o-mini", "gpt-4o-mini", capabilities=["streaming"]),
            *(
                _model(f"rater-{kind}", f"router-{kind}", "gpt-4o-mini")
                for kind in ("ok", "slow", "garbage", "hedged", "down")
            ),
        ],
        "routes": [
            {
                "name": "auto",
                "aliases": ["legacy-gpt4"],
                "tiers": TIERS,
                "router": "heuristic",
                "rules": [
                    {"metadata": {"plan": "enterprise"}, "tier": "frontier"},
                    {"header": {"X-Team": ["research", "ml-*"]}, "tier": "frontier"},
                    {"alias": "legacy-gpt4", "user": "vip-*", "tier": "frontier"},
                ],
            },
            _classifier_route("auto-clf", "rater-ok"),
            _classifier_route("auto-clf-slow", "rater-slow", timeout_s=0.5, on_error="small"),
            _classifier_route("auto-clf-garbage", "rater-garbage"),
            _classifier_route("auto-clf-hedged", "rater-hedged"),
            _classifier_route("auto-clf-down", "rater-down"),
            {
                "name": "auto-ab",
                "tiers": TIERS,
                "router": "heuristic",
                "experiment": {
                    "name": "ab",
                    "variants": [
                        {"name": "routed", "weight": 1},
                        {"name": "frontier", "weight": 1, "model": "big"},
                        {"name": "terse", "weight": 1, "system": "Answer in one word."},
                    ],
                },
            },
            {
                "name": "auto-tools",
                "tiers": [{"name": "tiny", "model": "text-only"}, {"name": "frontier", "model": "big"}],
            },
        ],
    }


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    server = simulate_config(SIMULATOR, tmp_path_factory.mktemp("routing-sim"))
    yield server
    stop_process(server)


@pytest.fixture(scope="module")
def gateway(sim, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("routing")
    server = serve_config(routing_config(sim.url, tmp / "home"), tmp)
    yield server
    stop_process(server)


@pytest.fixture
def client(gateway):
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0, timeout=20) as c:
        yield c


def ask(client, model: str, content: str, **kw):
    """The completion and its call id."""
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": content}], **kw
    )
    return raw.parse(), raw.headers


async def decision(gateway, headers) -> dict:
    record = await recorded(gateway.home, headers["x-llmrelay-request-id"])
    return record.extra["route"]


# --- the heuristic on known inputs (no gateway needed) -------------------------------------------


@pytest.mark.parametrize(
    ("text", "hard"),
    [
        (EASY, False),
        ("hi", False),
        ("Write a haiku about cats.", False),
        ("Explain why the sky is blue.", False),  # one analysis word: 0.26
        (HARD, True),  # analyze, trade-offs, designs, prove
        ("Fix this:\n```python\ndef f(x):\n    return x\n```", True),  # code
        ("Why does this loop never end?\nfor (i = 0; i < n; i--) {\n  total += i;\n}", True),
        (" ".join(["word"] * 300), True),  # long
        (" ".join(["word"] * 150), False),  # half as long: 0.25
    ],
)
def test_heuristic_scores_known_inputs(text, hard):
    score, reason = Heuristic(HeuristicRouter()).score(text)
    assert (score >= 0.5) is hard, (score, reason)


def test_heuristic_weights_and_words_come_from_the_config():
    router = Heuristic(HeuristicRouter(analysis_words=("haiku",), analysis_weight=0.6, code_weight=0))
    assert router.score("Write a haiku about cats.") == (
        pytest.approx(0.6 + 0.5 * 5 / 300),
        "5 words, analysis words: haiku",
    )
    assert router.score("x = 1;\ny = 2;")[0] < 0.1  # code no longer counts
    assert router.score(HARD)[0] < 0.1  # nor the default words


# --- through the gateway -------------------------------------------------------------------------


async def test_auto_picks_by_complexity_and_the_response_says_which_model(client, gateway):
    easy, easy_headers = ask(client, "auto", EASY)
    hard, hard_headers = ask(client, "auto", HARD)
    assert (easy.model, hard.model) == ("small", "big")
    assert easy.choices[0].message.content == f"You said: {EASY}"
    assert (easy_headers["x-llmrelay-route"], hard_headers["x-llmrelay-route"]) == (
        "auto:small",
        "auto:frontier",
    )
    record = await recorded(gateway.home, easy_headers["x-llmrelay-request-id"])
    assert (record.requested_model, record.model, record.fell_back) == ("auto", "small", False)
    route = record.extra["route"]
    assert route["route"] == "auto" and route["router"] == "heuristic" and route["tier"] == "small"
    assert route["model"] == "small" and route["score"] < 0.5 and route["reason"] == "6 words"
    hard_route = await decision(gateway, hard_headers)
    assert hard_route["tier"] == "frontier" and hard_route["score"] >= 0.5 and "prove" in hard_route["reason"]


def _price(model: str, record) -> Decimal:
    usage = genai_prices.Usage(input_tokens=record.prompt_tokens, output_tokens=record.completion_tokens)
    return genai_prices.calc_price(usage, model, provider_id="openai").total_price


async def test_the_record_keeps_the_frontier_cost_and_the_saving(client, gateway):
    _, headers = ask(client, "auto", EASY + " (savings)")
    record = await recorded(gateway.home, headers["x-llmrelay-request-id"])
    route = record.extra["route"]
    frontier = _price("gpt-4o", record)
    assert Decimal(route["frontier_cost_usd"]) == frontier
    assert Decimal(route["saved_usd"]) == frontier - Decimal(record.cost_usd) > 0
    assert Decimal(record.cost_usd) == _price("gpt-4o-mini", record)
    _, headers = ask(client, "auto", HARD)  # the frontier model itself: nothing saved
    assert Decimal((await decision(gateway, headers))["saved_usd"]) == 0


async def test_a_stream_is_routed_and_its_saving_recorded_at_its_end(client, gateway):
    with client.chat.completions.with_streaming_response.create(
        model="auto", messages=[{"role": "user", "content": EASY + " streamed"}], stream=True
    ) as response:
        chunks = list(response.parse())
        call_id = response.headers["x-llmrelay-request-id"]
    assert {c.model for c in chunks} == {"small"}
    route = (await recorded(gateway.home, call_id)).extra["route"]
    assert route["tier"] == "small" and Decimal(route["saved_usd"]) > 0


@pytest.mark.parametrize(
    ("kw", "why"),
    [
        ({"metadata": {"plan": "enterprise"}}, "rule 0 (metadata.plan)"),
        ({"extra_headers": {"x-team": "ml-platform"}}, "rule 1 (header X-Team)"),
    ],
)
async def test_rules_come_before_the_router(client, gateway, kw, why):
    answer, headers = ask(client, "auto", EASY, **kw)
    route = await decision(gateway, headers)
    assert answer.model == "big" and route["router"] == "rules" and route["reason"] == why
    assert route["score"] is None


def test_a_rule_on_the_alias_and_user(client):
    assert ask(client, "legacy-gpt4", EASY, user="vip-7")[0].model == "big"
    assert ask(client, "legacy-gpt4", EASY, user="someone")[0].model == "small"  # both must hold
    assert ask(client, "auto", EASY, user="vip-7")[0].model == "small"


async def test_a_tier_that_cannot_serve_the_request_gives_way_to_a_stronger_one(client, gateway):
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    answer, headers = ask(client, "auto-tools", "hi", tools=tools)
    route = await decision(gateway, headers)
    assert (
        answer.model == "big" and route["tier"] == "frontier" and route["reason"].endswith("tiny lacks tools")
    )
    assert ask(client, "auto-tools", "hi")[0].model == "text-only"


def test_unknown_names_are_the_usual_model_error_and_routes_are_listed(client):
    with pytest.raises(openai.NotFoundError) as caught:
        ask(client, "auto-nope", EASY)
    assert caught.value.code == "model_not_found"
    listed = {m.id: m.owned_by for m in client.models.list()}
    assert listed["auto"] == listed["legacy-gpt4"] == "llmrelay-route" and listed["small"] == "up"
    assert client.models.retrieve("auto").id == "auto"


# --- the classifier, scripted ---------------------------------------------------------------------


async def _probes(home: Path, call_id: str) -> list:
    store = SqliteCallStore(home / "calls.db")
    await store.open()
    try:
        return [r for r in await store.recent(limit=500) if r.extra.get("route_probe") == call_id]
    finally:
        await store.close()


async def test_the_classifier_rates_through_the_pipeline_and_is_cached(client, gateway):
    text = f"Prove the theorem {uuid.uuid4().hex}"  # never asked before
    answer, headers = ask(client, "auto-clf", text)
    route = await decision(gateway, headers)
    assert answer.model == "big" and route["router"] == "classifier" and route["score"] == 1.0
    assert route["reason"] == "rater-ok rated it COMPLEX"
    probes = await _probes(gateway.home, headers["x-llmrelay-request-id"])
    assert [(p.model, p.status) for p in probes] == [("rater-ok", "success")]  # on record, with a cost
    assert probes[0].cost_usd is not None and probes[0].request_body["messages"][1]["content"] == text

    again, headers = ask(client, "auto-clf", text)
    route = await decision(gateway, headers)
    assert again.model == "big" and route["reason"] == "rater-ok rated it COMPLEX (cached)"
    assert await _probes(gateway.home, headers["x-llmrelay-request-id"]) == []

    simple, headers = ask(client, "auto-clf", EASY)
    assert simple.model == "small" and (await decision(gateway, headers))["score"] == 0.0


@pytest.mark.parametrize(
    ("route_name", "model", "why"),
    [
        ("auto-clf-slow", "small", "no answer within 0.5s"),  # on_error: small
        ("auto-clf-garbage", "big", "it answered 'It depends.', neither SIMPLE nor COMPLEX"),
        # A label inside a longer answer is not a rating: "Not simple" must not go to the small model.
        ("auto-clf-hedged", "big", "it answered 'Not simple', neither SIMPLE nor COMPLEX"),
        ("auto-clf-down", "big", "UpstreamUnavailable: All 1 attempts failed"),  # default: frontier
    ],
)
async def test_a_failing_classifier_routes_to_its_default(client, gateway, route_name, model, why):
    answer, headers = ask(client, route_name, f"{EASY} {uuid.uuid4().hex}")
    route = await decision(gateway, headers)
    assert answer.model == model and route["score"] is None and why in route["reason"]
    assert route["reason"].startswith("classifier failed (")


# --- experiments ---------------------------------------------------------------------------------


async def test_experiment_variants_are_sticky_per_user_and_on_every_record(client, gateway):
    seen: dict[str, set[str]] = {}
    for i in range(12):
        user = f"user-{i}"
        for _ in range(2):
            answer, headers = ask(client, "auto-ab", EASY, user=user)
            seen.setdefault(user, set()).add(headers["x-llmrelay-variant"])
            if headers["x-llmrelay-variant"] == "frontier":
                assert answer.model == "big" and headers["x-llmrelay-route"] == "auto-ab:frontier"
    assert all(len(variants) == 1 for variants in seen.values())  # sticky
    assert {v for variants in seen.values() for v in variants} == {"routed", "frontier", "terse"}
    route = await decision(gateway, headers)
    assert route["experiment"] == "ab" and route["variant"] == headers["x-llmrelay-variant"]
    assert route["assigned_by"] == "user"


async def test_a_prompt_variant_puts_its_system_message_first(client, gateway):
    user = next(f"u{i}" for i in range(100) if _variant("ab", f"u{i}") == "terse")
    _, headers = ask(client, "auto-ab", EASY, user=user)
    record = await recorded(gateway.home, headers["x-llmrelay-request-id"])
    assert record.extra["route"]["variant"] == "terse"
    assert record.request_body["messages"][0] == {"role": "system", "content": "Answer in one word."}


async def test_requests_without_a_user_get_a_variant_each(client, gateway):
    _, headers = ask(client, "auto-ab", EASY)
    assert (await decision(gateway, headers))["assigned_by"] == "request"


EXPERIMENT = ExperimentSettings(variants=[{"name": "a", "weight": 1}, {"name": "b", "weight": 3}])


def _variant(name: str, user: str, settings: ExperimentSettings | None = None) -> str:
    settings = settings or ExperimentSettings(
        variants=[{"name": "routed"}, {"name": "frontier", "model": "big"}, {"name": "terse", "system": "x"}]
    )
    experiment = Experiment(name, settings, [v.name for v in settings.variants])
    call = Call(ChatRequest(model="auto-ab", messages=[Message(role="user", content="hi")], user=user))
    return experiment.assign(call).name


def test_assignment_follows_the_weights_and_the_experiment_name_reshuffles():
    counts = Counter(_variant("exp", f"user-{i}", EXPERIMENT) for i in range(4000))
    assert 0.22 < counts["a"] / 4000 < 0.28  # weight 1 of 4
    moved = sum(
        _variant("exp", f"user-{i}", EXPERIMENT) != _variant("exp2", f"user-{i}", EXPERIMENT)
        for i in range(400)
    )
    assert moved > 50  # another experiment, another draw


# --- llmrelay costs ------------------------------------------------------------------------------


async def test_costs_by_variant_and_the_money_routing_saved(client, gateway, tmp_path):
    for i in range(6):
        _, headers = ask(client, "auto-ab", EASY, user=f"costs-{i}")
    await recorded(gateway.home, headers["x-llmrelay-request-id"])  # the last one is written
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump({"calllog": {"directory": str(gateway.home), "store": "sqlite:///calls.db"}})
    )
    out = llmrelay("costs", "--config", str(config), "--by", "variant")
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:] if line.strip()}
    assert {"ab/routed", "ab/frontier", "ab/terse"} <= set(rows)
    assert rows["ab/frontier"][-1] == "$0.000000"  # the frontier model saves nothing
    assert Decimal(rows["ab/routed"][-1].strip("$")) > 0
    saved = Decimal(out.split("routing saved $")[1].split()[0])
    assert saved >= sum(Decimal(r[-1].strip("$")) for g, r in rows.items() if g.startswith("ab/")) > 0


async def test_a_cache_hit_records_the_decision_but_no_routing_saving(client, gateway):
    content = f"{EASY} {uuid.uuid4().hex}"
    _, first = ask(client, "auto", content, temperature=0)
    answer, hit = ask(client, "auto", content, temperature=0)
    assert (first["x-llmrelay-cache"], hit["x-llmrelay-cache"]) == ("miss", "hit") and answer.model == "small"
    assert "saved_usd" in await decision(gateway, first)
    record = await recorded(gateway.home, hit["x-llmrelay-request-id"])
    assert record.status == "cache_hit" and record.extra["route"]["model"] == "small"
    assert "saved_usd" not in record.extra["route"] and Decimal(record.extra["saved_usd"]) > 0  # the cache's


def test_the_anthropic_api_can_name_a_route_too(gateway):
    with anthropic.Anthropic(base_url=gateway.url, api_key="x", max_retries=0) as claude:
        message = claude.messages.create(
            model="auto", max_tokens=50, messages=[{"role": "user", "content": HARD}]
        )
    assert message.model == "big" and message.content[0].text == f"You said: {HARD}"


async def test_without_routes_the_stage_is_not_in_the_chain():
    from llmrelay import Relay
    from llmrelay.routing.stage import RouteStage

    async with Relay({"calllog": {"enabled": False}}) as relay:
        assert "route" in relay.settings.pipeline and RouteStage.from_relay(relay) is None
