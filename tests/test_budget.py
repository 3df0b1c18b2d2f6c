"""Budgets against a real gateway, to the pico-dollar: spend is the exact sum of the recorded costs
at the catalog's real prices, a call is refused exactly when its estimate would pass the budget, in
each wire format, spend survives a restart, and two gateways sharing Redis hold one budget."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import anthropic
import httpx
import openai
import pytest

from .conftest import (
    MASTER_KEY,
    REDIS_URL,
    gateway_config,
    recorded,
    redis_prefix_that_expires,
    serve_config,
    stop_process,
)

# gpt-4o-mini's public prices (USD per million tokens): what the catalog (genai-prices) must charge.
INPUT, OUTPUT = Decimal("0.15"), Decimal("0.60")
MAX_TOKENS = 10
PICO = Decimal("1e-12")


def config(sim: str, home, **extra) -> dict:
    cfg = gateway_config(sim, master_key=MASTER_KEY)
    cfg["calllog"] = {"directory": str(home), "flush_interval_s": 0.05}
    return {**cfg, **extra}


@pytest.fixture(scope="module")
def gw(simulator, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("budget")
    server = serve_config(config(simulator.url, tmp / "home", budgets={"user_daily_usd": "0.00001"}), tmp)
    yield server
    stop_process(server)


def admin(gw, method: str, path: str, **kw) -> httpx.Response:
    return httpx.request(
        method, gw.url + path, headers={"authorization": f"Bearer {MASTER_KEY}"}, timeout=10, **kw
    )


def new_key(gw, budget: Decimal | None = None) -> dict:
    body = {"owner": "budgeted", "models": ["gpt-4o-mini"]}
    if budget is not None:
        body["budget_daily_usd"] = str(budget)
    r = admin(gw, "POST", "/admin/keys", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def ask(gw, key: str, **kw):
    with openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0) as c:
        return c.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}], max_tokens=MAX_TOKENS, **kw
        )


def cost_of(gw, raw) -> Decimal:
    record = asyncio.run(recorded(gw.home, raw.headers["x-llmrelay-request-id"]))
    return Decimal(record.cost_usd)


def spent(gw, key_id: str) -> Decimal:
    return Decimal(admin(gw, "GET", f"/admin/keys/{key_id}").json()["spend"]["daily_usd"])


def probe(gw) -> tuple[Decimal, Decimal]:
    """One call's exact cost at the real prices, and the estimate the gateway checks before it."""
    raw = ask(gw, MASTER_KEY)
    record = asyncio.run(recorded(gw.home, raw.headers["x-llmrelay-request-id"]))
    cost = (record.prompt_tokens * INPUT + record.completion_tokens * OUTPUT) / 1_000_000
    assert Decimal(record.cost_usd) == cost  # the catalog charged the real prices, exactly
    return cost, (record.prompt_tokens * INPUT + MAX_TOKENS * OUTPUT) / 1_000_000


def test_spend_is_the_exact_sum_and_the_budget_holds_to_the_pico_dollar(gw):
    cost, estimate = probe(gw)
    enough = new_key(gw, 2 * cost + estimate)  # a third call fits exactly
    short = new_key(gw, 2 * cost + estimate - PICO)  # one pico-dollar less: it does not
    costs = [cost_of(gw, ask(gw, enough["key"])) for _ in range(3)]
    assert costs == [cost] * 3
    with pytest.raises(openai.RateLimitError) as refused:
        ask(gw, enough["key"])
    assert refused.value.code == "budget_exceeded"
    assert int(refused.value.response.headers["retry-after"]) >= 1  # the budget's reset
    assert f"daily budget of key {enough['id']}" in refused.value.message
    assert spent(gw, enough["id"]) == 3 * cost == sum(costs)

    for _ in range(2):
        ask(gw, short["key"])
    with pytest.raises(openai.RateLimitError):
        ask(gw, short["key"])
    assert spent(gw, short["id"]) == 2 * cost
    # The refusal in the Anthropic route's own shape.
    with (
        anthropic.Anthropic(base_url=gw.url, api_key=short["key"], max_retries=0) as c,
        pytest.raises(anthropic.RateLimitError) as refused_a,
    ):
        c.messages.create(
            model="gpt-4o-mini", max_tokens=MAX_TOKENS, messages=[{"role": "user", "content": "hi"}]
        )
    assert refused_a.value.body["error"]["type"] == "rate_limit_error"
    assert "budget" in refused_a.value.body["error"]["message"]


def test_streams_and_cache_hits_are_charged_what_they_cost(gw):
    key = new_key(gw)
    with openai.OpenAI(base_url=gw.url + "/v1", api_key=key["key"], max_retries=0) as c:
        with c.chat.completions.with_streaming_response.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "stream to me"}],
            stream=True,
            stream_options={"include_usage": True},
        ) as stream:
            call_id = stream.headers["x-llmrelay-request-id"]
            assert "stream to me" in "".join(stream.iter_lines())
        streamed = Decimal(asyncio.run(recorded(gw.home, call_id)).cost_usd)
        assert streamed > 0 and spent(gw, key["id"]) == streamed
    paid, hit = (ask(gw, key["key"], temperature=0) for _ in range(2))  # the second from the cache
    assert hit.headers["x-llmrelay-cache"] == "hit"
    assert spent(gw, key["id"]) == streamed + cost_of(gw, paid)
    assert cost_of(gw, hit) == 0


def test_each_end_user_has_a_budget_within_the_key(gw):
    key = new_key(gw)["key"]
    ask(gw, key, user="alice")  # $0.0000036 of her $0.00001
    with pytest.raises(openai.RateLimitError) as refused:
        ask(gw, key, user="alice")  # spent + estimate would pass it
    assert "end user 'alice'" in refused.value.message
    ask(gw, key, user="bob")
    ask(gw, MASTER_KEY, user="alice")  # another key's "alice" is someone else


def test_spend_survives_a_restart(simulator, tmp_path):
    cfg = config(simulator.url, tmp_path / "home")
    first = serve_config(cfg, tmp_path)
    try:
        key = new_key(first, Decimal("1"))
        costs = sum(cost_of(first, ask(first, key["key"])) for _ in range(2))
    finally:
        stop_process(first)  # a clean stop saves the spend not yet flushed
    second = serve_config(cfg, tmp_path)
    try:
        assert spent(second, key["id"]) == costs
    finally:
        stop_process(second)


def test_two_gateways_sharing_redis_hold_one_budget(simulator, tmp_path):
    with redis_prefix_that_expires("budget") as prefix:
        cfg = config(simulator.url, tmp_path / "home", redis_url=REDIS_URL, budgets={"redis_prefix": prefix})
        one, two = serve_config(cfg, tmp_path), serve_config(cfg, tmp_path)  # one key store, one Redis
        try:
            cost, estimate = probe(one)
            key = new_key(one, 2 * cost + estimate)
            for gw in (one, two, one):  # three calls fit, spread over both
                ask(gw, key["key"])
            with pytest.raises(openai.RateLimitError):
                ask(two, key["key"])  # alone, this gateway has seen only one call
            assert spent(two, key["id"]) == spent(one, key["id"]) == 3 * cost
        finally:
            stop_process(one)
            stop_process(two)


def test_a_budget_in_redis_survives_redis_losing_it(simulator, tmp_path):
    """Redis restarted without persistence (or evicted the counter) while the gateway runs: the
    counter is filled again from the saved spend on the next call, not restarted from zero."""
    import redis

    with redis_prefix_that_expires("budget") as prefix:
        cfg = config(simulator.url, tmp_path / "home", redis_url=REDIS_URL, budgets={"redis_prefix": prefix})
        gw = serve_config(cfg, tmp_path)
        try:
            cost, estimate = probe(gw)
            key = new_key(gw, 2 * cost + estimate)
            for _ in range(2):
                ask(gw, key["key"])
            time.sleep(1.5)  # the ledger saves spend every second
            with redis.Redis.from_url(REDIS_URL) as r:
                lost = [k for k in r.scan_iter(f"{prefix}:*") if key["id"].encode() in k]
                assert lost and r.delete(*lost) == len(lost)
            assert spent(gw, key["id"]) == 2 * cost  # read back from the table
            ask(gw, key["key"])  # the third still fits...
            with pytest.raises(openai.RateLimitError):
                ask(gw, key["key"])  # ...the fourth does not, as if Redis had lost nothing
        finally:
            stop_process(gw)
