"""JSON enforcement end to end: a gateway in front of the simulator, whose rules answer broken JSON,
JSON fenced in prose, or JSON off the schema (tests/conftest.py), to the official SDKs."""

from __future__ import annotations

import json

import anthropic
import httpx
import openai
import pytest

from .conftest import gateway_config, recorded, serve_config, stop_process

OA = {"provider": "up-openai", "upstream": "gpt-4o-mini"}
# Answers "Sorry, no JSON today." to anything; priced like gpt-4o-mini.
BROKEN = {"provider": "up-openai", "upstream": "json-broken-1", "price": {"input": 0.15, "output": 0.6}}
JSON_OBJECT = {"type": "json_object"}
CITY = {
    "type": "json_schema",
    "json_schema": {
        "name": "city",
        "schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
ANSWER_SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


@pytest.fixture(scope="module")
def gw(simulator, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("guard-json")
    config = gateway_config(simulator.url)
    config["execute"] = {"timeout_s": 10, "max_attempts": 1}
    config["calllog"] = {"directory": str(tmp / "home"), "flush_interval_s": 0.05}
    config["cache"] = {"enabled": False}
    config["models"] += [
        {"name": "json-guarded", **OA, "guardrails": {"json": {"mode": "block"}}},
        {"name": "json-flag", **BROKEN, "guardrails": {"json": {"mode": "flag"}}},
        {"name": "always-broken", **BROKEN, "guardrails": {"json": {"mode": "block"}}},
        {"name": "no-reask", **OA, "guardrails": {"json": {"mode": "block", "reask": False}}},
        {
            "name": "always-json",
            **OA,
            "guardrails": {"json": {"mode": "block", "when": "always", "schema": ANSWER_SCHEMA}},
        },
    ]
    server = serve_config(config, tmp)
    yield server
    stop_process(server)


@pytest.fixture
def client(gw):
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-test", max_retries=0) as c:
        yield c


def ask(client, content: str, model: str = "json-guarded", response_format=JSON_OBJECT, **kw):
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": content}], response_format=response_format, **kw
    )
    return raw.headers, raw.parse()


def json_verdict(record) -> dict:
    (found,) = [v for v in record.extra["guardrails"] if v["name"] == "json"]
    return found


async def test_valid_json_passes_in_one_attempt(client, gw):
    headers, answer = ask(client, "hello")
    assert json.loads(answer.choices[0].message.content) == {"answer": "hello"}
    record = await recorded(gw.home, headers["x-llmrelay-request-id"])
    assert len(record.attempts) == 1 and json_verdict(record)["verdict"] == "pass"


def test_json_fenced_in_prose_is_unwrapped_without_a_reask(client):
    headers, answer = ask(client, "fenced json please")
    assert answer.choices[0].message.content == '{"ok": true}'
    assert headers["x-llmrelay-attempts"] == "1"


async def test_broken_json_is_asked_for_again_once(client, gw, simulator):
    headers, answer = ask(client, "broken json please")
    fixed = json.loads(answer.choices[0].message.content)
    assert fixed["answer"].startswith("Your previous answer is not valid: it is not JSON")
    assert headers["x-llmrelay-attempts"] == "2"
    record = await recorded(gw.home, headers["x-llmrelay-request-id"])
    assert [a.outcome for a in record.attempts] == ["success", "success"]
    assert json_verdict(record)["verdict"] == "reask" and "not JSON" in json_verdict(record)["reason"]
    # The usage is both attempts' (the client pays for the re-ask): ask the simulator each one alone.
    # (Its JSON mode echoes the last user message: the re-ask's is in the answer.)
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "broken json please"}],
        "response_format": JSON_OBJECT,
    }
    first = httpx.post(simulator.url + "/v1/chat/completions", json=body).json()
    body["messages"] += [first["choices"][0]["message"], {"role": "user", "content": fixed["answer"]}]
    second = httpx.post(simulator.url + "/v1/chat/completions", json=body).json()
    for kind in ("prompt_tokens", "completion_tokens"):
        assert getattr(answer.usage, kind) == first["usage"][kind] + second["usage"][kind]
    assert record.prompt_tokens == answer.usage.prompt_tokens


def test_an_answer_off_the_schema_is_asked_for_again(client):
    headers, answer = ask(client, "wrong city please", response_format=CITY)
    city = json.loads(answer.choices[0].message.content)["city"]
    assert city.startswith("Your previous answer is not valid: 3 is not of type 'string' (at /city)")
    assert headers["x-llmrelay-attempts"] == "2"


async def test_still_invalid_after_the_reask_is_a_502_naming_the_guard(client, gw):
    with pytest.raises(openai.InternalServerError) as caught:
        ask(client, "anything", model="always-broken")
    error = caught.value
    assert error.status_code == 502 and error.code == "guardrail_json"
    assert "even when asked again" in error.message and "not JSON" in error.message
    record = await recorded(gw.home, error.response.headers["x-llmrelay-request-id"])
    assert record.status == "filtered" and len(record.attempts) == 2
    assert record.cost_usd is not None and record.completion_tokens > 0  # both answers were paid for
    assert json_verdict(record)["verdict"] == "block"
    with pytest.raises(openai.InternalServerError) as once:
        ask(client, "broken json please", model="no-reask")
    assert "asked again" not in once.value.message
    assert once.value.response.headers["x-llmrelay-attempts"] == "1"


def test_flag_mode_returns_the_answer_as_it_came(client):
    headers, answer = ask(client, "anything", model="json-flag")
    assert answer.choices[0].message.content == "Sorry, no JSON today."
    assert headers["x-llmrelay-guardrails"] == "json" and headers["x-llmrelay-attempts"] == "2"


async def test_a_stream_is_checked_whole_then_replayed(client, gw):
    raw = client.chat.completions.with_raw_response.create(
        model="json-guarded",
        messages=[{"role": "user", "content": "broken json please"}],
        response_format=JSON_OBJECT,
        stream=True,
        stream_options={"include_usage": True},
    )
    assert raw.headers["x-llmrelay-attempts"] == "2"  # both were over before the first byte
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert json.loads(text)["answer"].startswith("Your previous answer is not valid")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    record = await recorded(gw.home, raw.headers["x-llmrelay-request-id"])
    assert record.stream and len(record.attempts) == 2 and record.ttft_ms is not None
    with pytest.raises(openai.InternalServerError) as caught:  # a failure is a plain 502, no stream
        client.chat.completions.create(
            model="always-broken",
            messages=[{"role": "user", "content": "x"}],
            response_format=JSON_OBJECT,
            stream=True,
        )
    assert caught.value.code == "guardrail_json"


def test_a_route_that_always_wants_json_asks_for_it(gw):
    """An Anthropic client has no response_format; the route's policy asks the model for its schema."""
    with anthropic.Anthropic(base_url=gw.url, api_key="sk-test", max_retries=0) as claude:
        message = claude.messages.create(
            model="always-json", max_tokens=200, messages=[{"role": "user", "content": "hello"}]
        )
    assert json.loads(message.content[0].text) == {"answer": "hello"}


def test_an_invalid_schema_in_the_request_is_a_400(client):
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, "hello", response_format=bad)
    assert caught.value.param == "response_format.json_schema.schema"
    assert "not a valid JSON Schema" in caught.value.message
