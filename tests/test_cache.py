"""The exact response cache as a client sees it: a real gateway in front of the simulator, driven by
the official openai and anthropic SDKs. The simulator numbers its responses, so a repeated response
id proves an answer came from the cache and not from a second upstream call."""

from __future__ import annotations

import json
import time
import uuid
from decimal import Decimal

import anthropic
import httpx
import openai
import pytest

from llmrelay import Relay
from llmrelay import relay as relay_module
from llmrelay.pipeline import Call
from llmrelay.providers import openai_format

from .conftest import gateway_config, recorded, serve_config, stop_process

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def cache_config(simulator_url: str, home) -> dict:
    config = gateway_config(simulator_url)
    config["execute"] = {"timeout_s": 5, "max_attempts": 1}
    config["calllog"] = {"directory": str(home), "flush_interval_s": 0.05}
    base = {"provider": "up-openai", "upstream": "gpt-4o-mini"}
    config["models"] += [
        {"name": "shared", **base, "cache": {"shared": True}},
        {"name": "any-temperature", **base, "cache": {"only_deterministic": False}},
        {"name": "one-second", **base, "cache": {"ttl_s": 1}},
        {"name": "uncached", **base, "cache": {"enabled": False}},
        {"name": "slow", "provider": "up-openai", "upstream": "slow-cache"},  # ~0.6 s per 3 tokens
        {
            "name": "flaky",
            "provider": "up-openai",
            "upstream": "fault-500-cache",
            "fallbacks": ["gpt-4o-mini"],
        },
    ]
    return config


@pytest.fixture(scope="module")
def cached_gateway(simulator, tmp_path_factory):
    """A gateway with the default cache (in memory) and no master key: each API key is a tenant."""
    tmp = tmp_path_factory.mktemp("cache")
    server = serve_config(cache_config(simulator.url, tmp / "home"), tmp)
    yield server
    stop_process(server)


@pytest.fixture
def client(cached_gateway):
    with openai.OpenAI(base_url=cached_gateway.url + "/v1", api_key="sk-tenant-a", max_retries=0) as c:
        yield c


@pytest.fixture
def aclient(cached_gateway):
    with anthropic.Anthropic(base_url=cached_gateway.url, api_key="sk-tenant-a", max_retries=0) as c:
        yield c


def unique(text: str = "question") -> list[dict]:
    """A user message no other test sends, so each test starts from an empty cache."""
    return [{"role": "user", "content": f"{text} {uuid.uuid4().hex[:8]}"}]


def ask(client: openai.OpenAI, messages, *, model="gpt-4o-mini", temperature=0, headers=None, **kw):
    if temperature is not None:
        kw["temperature"] = temperature
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=messages, extra_headers=headers, **kw
    )
    return raw.headers, raw.parse()


async def test_a_hit_costs_nothing_and_records_what_it_saved(client, cached_gateway):
    messages = unique()
    miss_headers, miss = ask(client, messages)
    hit_headers, hit = ask(client, messages)
    assert miss_headers["x-llmrelay-cache"] == "miss" and "age" not in miss_headers
    assert hit_headers["x-llmrelay-cache"] == "hit" and hit_headers["age"] == "0"
    assert hit.id == miss.id and hit.choices[0].message.content == miss.choices[0].message.content
    assert hit.usage == miss.usage  # the usage the answer took, as reported when it was made
    cost = Decimal(miss_headers["x-llmrelay-cost-usd"])
    assert cost > 0 and Decimal(hit_headers["x-llmrelay-cost-usd"]) == 0
    assert "x-llmrelay-attempts" in miss_headers and "x-llmrelay-attempts" not in hit_headers
    assert hit_headers["x-llmrelay-model"] == "gpt-4o-mini"

    record = await recorded(cached_gateway.home, hit_headers["x-llmrelay-request-id"])
    assert record.status == "cache_hit" and Decimal(record.cost_usd) == 0 and not record.attempts
    assert record.extra["cache"] == "hit" and Decimal(record.extra["saved_usd"]) == cost
    assert record.model == "gpt-4o-mini" and record.provider == "up-openai"
    assert record.prompt_tokens == miss.usage.prompt_tokens
    first = await recorded(cached_gateway.home, miss_headers["x-llmrelay-request-id"])
    assert first.status == "success" and first.extra["cache"] == "miss" and Decimal(first.cost_usd) == cost

    metrics = httpx.get(cached_gateway.url + "/metrics").text
    assert 'llmrelay_cache_hits_total{kind="exact",model="gpt-4o-mini"}' in metrics
    assert 'status="cache_hit"' in metrics


def test_field_order_and_irrelevant_fields_do_not_change_the_key(cached_gateway):
    text = unique()[0]["content"]
    bodies = [
        {"model": "gpt-4o-mini", "temperature": 0, "messages": [{"role": "user", "content": text}]},
        {"messages": [{"content": text, "role": "user"}], "temperature": 0, "model": "gpt-4o-mini"},
        {"model": "gpt-4o-mini", "temperature": 0, "messages": [{"role": "user", "content": text}],
         "user": "alice", "metadata": {"trace": "x"}, "stream_options": None},
    ]  # fmt: skip
    seen = []
    for body in bodies:
        response = httpx.post(
            cached_gateway.url + "/v1/chat/completions",
            content=json.dumps(body),
            headers={"authorization": "Bearer sk-tenant-a", "content-type": "application/json"},
        )
        seen.append((response.headers["x-llmrelay-cache"], response.json()["id"]))
    assert [s[0] for s in seen] == ["miss", "hit", "hit"] and len({s[1] for s in seen}) == 1
    for change in ({"seed": 1}, {"max_tokens": 50}, {"top_p": 0.5}, {"tools": [WEATHER_TOOL]}):
        response = httpx.post(
            cached_gateway.url + "/v1/chat/completions",
            json={**bodies[0], **change},
            headers={"authorization": "Bearer sk-tenant-a"},
        )
        assert response.headers["x-llmrelay-cache"] == "miss", change


def test_only_temperature_zero_is_cached_unless_the_route_opts_in(client):
    for temperature in (None, 0.7):
        messages = unique()
        for _ in range(2):
            headers, _ = ask(client, messages, temperature=temperature)
            assert headers["x-llmrelay-cache"] == "bypass"
    for temperature in (None, 0.7):
        messages = unique()
        statuses = [
            ask(client, messages, model="any-temperature", temperature=temperature)[0] for _ in range(2)
        ]
        assert [h["x-llmrelay-cache"] for h in statuses] == ["miss", "hit"]
    headers, _ = ask(client, unique(), model="uncached")
    assert "x-llmrelay-cache" not in headers  # the cache is off for this model


def test_cache_control_no_store_and_no_cache(client):
    messages = unique()
    headers, skipped = ask(client, messages, headers={"cache-control": "no-store"})
    assert headers["x-llmrelay-cache"] == "bypass"
    headers, first = ask(client, messages)
    assert headers["x-llmrelay-cache"] == "miss"  # no-store wrote nothing
    headers, again = ask(client, messages, headers={"cache-control": "no-store"})
    assert headers["x-llmrelay-cache"] == "bypass" and again.id != first.id  # nor read
    headers, refreshed = ask(client, messages, headers={"Cache-Control": "No-Cache"})
    assert headers["x-llmrelay-cache"] == "refresh" and refreshed.id not in (first.id, again.id)
    headers, hit = ask(client, messages)
    assert headers["x-llmrelay-cache"] == "hit" and hit.id == refreshed.id  # the refreshed entry


def test_ttl_is_in_seconds_and_age_counts_them(client):
    short, long = unique(), unique()
    assert ask(client, short, model="one-second")[0]["x-llmrelay-cache"] == "miss"
    assert ask(client, long)[0]["x-llmrelay-cache"] == "miss"
    # A TTL read as milliseconds would have expired already.
    assert ask(client, short, model="one-second")[0]["x-llmrelay-cache"] == "hit"
    time.sleep(1.2)
    assert ask(client, short, model="one-second")[0]["x-llmrelay-cache"] == "miss"  # expired
    headers, _ = ask(client, long)
    assert headers["x-llmrelay-cache"] == "hit" and int(headers["age"]) >= 1
    headers, _ = ask(client, long, headers={"cache-control": "max-age=0"})
    assert headers["x-llmrelay-cache"] == "miss"  # older than the client accepts: asked again


def stream(client: openai.OpenAI, messages, **kw):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=messages,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        **kw,
    )
    return raw.headers, list(raw.parse())


def test_a_stream_is_stored_when_complete_and_replayed_as_a_stream(client):
    messages = unique("stream")
    headers, live = stream(client, messages)
    assert headers["x-llmrelay-cache"] == "miss"
    headers, replayed = stream(client, messages)
    assert headers["x-llmrelay-cache"] == "hit" and headers["age"] == "0"
    for chunks in (live, replayed):
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith(
            "You said: stream"
        )
        assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
            "stop"
        ]
        assert chunks[0].choices[0].delta.role == "assistant"
    assert replayed[-1].usage == live[-1].usage and replayed[-1].usage.completion_tokens > 0
    # One entry serves both shapes: a plain request gets the streamed answer, and the other way round.
    headers, plain = ask(client, messages)
    assert headers["x-llmrelay-cache"] == "hit" and plain.choices[0].message.content.startswith("You said")
    other = unique("plain first")
    ask(client, other)
    headers, chunks = stream(client, other)
    assert headers["x-llmrelay-cache"] == "hit" and chunks[-1].usage is not None


def test_tool_calls_are_replayed_as_tool_call_deltas(client):
    messages = [{"role": "user", "content": f"what is the weather in Paris {uuid.uuid4().hex[:6]}"}]
    _, live = stream(client, messages, tools=[WEATHER_TOOL])
    headers, replayed = stream(client, messages, tools=[WEATHER_TOOL])
    assert headers["x-llmrelay-cache"] == "hit"

    def calls(chunks):
        out: dict[int, dict] = {}
        for chunk in chunks:
            for delta in chunk.choices[0].delta.tool_calls or () if chunk.choices else ():
                slot = out.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
                slot["id"] = delta.id or slot["id"]
                slot["name"] += delta.function.name or ""
                slot["arguments"] += delta.function.arguments or ""
        return out

    assert calls(replayed) == calls(live) and json.loads(calls(live)[0]["arguments"]) == {"city": "Paris"}
    assert [c.choices[0].finish_reason for c in replayed if c.choices and c.choices[0].finish_reason] == [
        "tool_calls"
    ]


# This anthropic SDK has no `temperature` argument any more: it goes in extra_body.
TEMPERATURE_0 = {"temperature": 0}


def test_anthropic_sdk_stream_and_message_from_the_cache(aclient):
    messages = unique("anthropic")
    finals, texts, statuses = [], [], []
    for _ in range(2):
        with aclient.messages.stream(
            model="claude-haiku", max_tokens=100, messages=messages, extra_body=TEMPERATURE_0
        ) as s:
            texts.append("".join(s.text_stream))
            finals.append(s.get_final_message())
            statuses.append(s.response.headers["x-llmrelay-cache"])
    assert statuses == ["miss", "hit"] and texts[0] == texts[1] and texts[0].startswith("You said: anthropic")
    assert finals[1].id == finals[0].id and finals[1].stop_reason == "end_turn"
    assert finals[1].usage.output_tokens == finals[0].usage.output_tokens > 0
    raw = aclient.messages.with_raw_response.create(
        model="claude-haiku", max_tokens=100, messages=messages, extra_body=TEMPERATURE_0
    )
    assert raw.headers["x-llmrelay-cache"] == "hit" and raw.parse().content[0].text == texts[0]


def test_thinking_is_kept_in_the_cache(aclient):
    """A stream with thinking stored and served as a message, and the other way round: the blocks
    come back whole, signature included (a later turn must send them back unchanged)."""
    ask = {"model": "claude-haiku", "max_tokens": 2048, "extra_body": TEMPERATURE_0}
    ask["thinking"] = {"type": "enabled", "budget_tokens": 1024}
    messages = unique("thinking")
    with aclient.messages.stream(messages=messages, **ask) as s:
        streamed = s.get_final_message()
    raw = aclient.messages.with_raw_response.create(messages=messages, **ask)
    assert raw.headers["x-llmrelay-cache"] == "hit" and blocks(raw.parse()) == blocks(streamed)
    assert streamed.content[0].type == "thinking" and streamed.content[0].signature

    messages = unique("thinking")
    whole = aclient.messages.create(messages=messages, **ask)
    with aclient.messages.stream(messages=messages, **ask) as s:
        replayed = s.get_final_message()
        assert s.response.headers["x-llmrelay-cache"] == "hit"
    assert blocks(replayed) == blocks(whole) and whole.content[0].type == "thinking"


def blocks(message) -> list[dict]:
    return [{k: v for k, v in b.to_dict().items() if k != "parsed_output"} for b in message.content]


def test_openai_and_anthropic_clients_share_an_entry(client, aclient):
    text = unique("either format")[0]["content"]
    headers, first = ask(client, [{"role": "user", "content": text}], max_tokens=100)
    assert headers["x-llmrelay-cache"] == "miss"
    raw = aclient.messages.with_raw_response.create(
        model="gpt-4o-mini",
        max_tokens=100,
        messages=[{"role": "user", "content": text}],
        extra_body=TEMPERATURE_0,
    )
    assert raw.headers["x-llmrelay-cache"] == "hit"
    assert raw.parse().content[0].text == first.choices[0].message.content


def test_tenants_do_not_share_entries_unless_the_route_is_shared(cached_gateway, client):
    with openai.OpenAI(base_url=cached_gateway.url + "/v1", api_key="sk-tenant-b", max_retries=0) as other:
        messages = unique()
        assert ask(client, messages)[0]["x-llmrelay-cache"] == "miss"
        assert ask(other, messages)[0]["x-llmrelay-cache"] == "miss"  # B cannot read A's answers
        assert ask(client, messages)[0]["x-llmrelay-cache"] == "hit"
        messages = unique()
        assert ask(client, messages, model="shared")[0]["x-llmrelay-cache"] == "miss"
        assert ask(other, messages, model="shared")[0]["x-llmrelay-cache"] == "hit"


def test_errors_cut_streams_and_fallback_answers_are_not_cached(client):
    messages = unique()
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            ask(client, messages, model="500-openai")
    for _ in range(2):  # the primary fails, the fallback answers: a stopgap, not kept
        headers, answer = ask(client, messages, model="flaky")
        assert headers["x-llmrelay-cache"] == "miss" and answer.model == "gpt-4o-mini"
    for _ in range(2):  # the upstream cuts the stream after its first content
        raw = client.chat.completions.with_raw_response.create(
            model="truncate-openai", messages=messages, temperature=0, stream=True
        )
        assert raw.headers["x-llmrelay-cache"] == "miss"
        with pytest.raises(openai.APIError):
            list(raw.parse())


def test_a_stream_the_client_leaves_is_not_stored(client):
    messages = unique("cut")
    for expected in ("miss", "miss"):
        raw = client.chat.completions.with_raw_response.create(
            model="slow", messages=messages, temperature=0, stream=True
        )
        assert raw.headers["x-llmrelay-cache"] == expected
        chunks = raw.parse()
        next(c for c in chunks if c.choices and c.choices[0].delta.content)  # some of it, then leave
        chunks.close()


async def test_an_answer_a_later_stage_filtered_is_not_stored(simulator, monkeypatch):
    """An output guardrail marks what it filtered with status "filtered"; the cache keeps none of it."""

    class MarkFiltered:
        async def __call__(self, call: Call, next):
            result = await next(call)
            call.status = "filtered"
            return result

    monkeypatch.setitem(relay_module.STAGES, "mark-filtered", lambda relay: MarkFiltered())
    config = gateway_config(simulator.url)
    config["pipeline"] = ["record", "cache", "mark-filtered", "execute"]
    body = {"model": "gpt-4o-mini", "temperature": 0, "messages": unique()}
    async with Relay(config) as relay:
        for _ in range(2):
            call = Call(openai_format.parse_request(body))
            await relay.handle(call)
            assert call.response_headers["x-llmrelay-cache"] == "miss" and call.status == "filtered"
