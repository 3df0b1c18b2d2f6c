"""Provider failures stay invisible: retries, fallback across providers, stream priming, stall
detection and circuit breakers, over real sockets against the simulator's faults."""

from __future__ import annotations

import json
import time

import anthropic
import httpx
import openai
import pytest
import yaml

from .conftest import free_port, start_process, stop_process

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
HELLO = [{"role": "user", "content": "hello"}]
PHOENIX_PORT = free_port()  # nothing listens here until test_breaker_opens_and_recovers starts it


def config(sim: str) -> dict:
    oa, an = {"provider": "oa"}, {"provider": "an"}
    return {
        "execute": {
            "timeout_s": 10,
            "max_attempts": 2,
            "backoff_base_s": 0.01,
            "backoff_max_s": 0.05,
            "attempt_timeout_s": 3,
            "first_token_timeout_s": 1,
            "stall_timeout_s": 1,
        },
        "breaker": {"consecutive_failures": 2, "open_s": 1, "min_requests": 100},
        "providers": {
            "oa": {"kind": "openai", "base_url": sim + "/v1"},
            "an": {"kind": "anthropic", "base_url": sim},
            "phoenix": {"kind": "openai", "base_url": f"http://127.0.0.1:{PHOENIX_PORT}/v1"},
            "rejects": {
                "kind": "openai",
                "base_url": sim + "/v1",
                "headers": {"x-sim-fault": "no-such-fault"},
            },
        },
        "models": [
            {"name": "healthy", **oa, "upstream": "gpt-4o-mini"},
            {"name": "claude", **an, "upstream": "claude-haiku-4-5"},
            # one sick deployment (picked first: its weight dwarfs the other's) and one healthy
            {
                "name": "two-keys",
                "deployments": [
                    {**oa, "upstream": "fault-503", "weight": 1e9},
                    {**oa, "upstream": "gpt-4o-mini", "weight": 1e-9},
                ],
            },
            {
                "name": "rate-limited-twin",
                "deployments": [
                    {**oa, "upstream": "fault-429", "weight": 1e9},
                    {**oa, "upstream": "gpt-4o-mini", "weight": 1e-9},
                ],
            },
            {"name": "flaky", **oa, "upstream": "fault-500", "fallbacks": ["claude"]},
            {"name": "hangs", **oa, "upstream": "fault-hang", "fallbacks": ["claude"]},
            {"name": "stalls", **oa, "upstream": "fault-stall", "fallbacks": ["claude"]},
            {"name": "hangs-alone", **oa, "upstream": "fault-hang-alone"},
            {"name": "doomed", **oa, "upstream": "fault-500-doomed", "fallbacks": ["doomed-too"]},
            {"name": "doomed-too", **an, "upstream": "fault-drop-doomed"},
            {"name": "phoenix", "provider": "phoenix", "upstream": "gpt-4o-mini", "fallbacks": ["healthy"]},
            {
                "name": "bad-request",
                "provider": "rejects",
                "upstream": "gpt-4o-mini",
                "fallbacks": ["healthy"],
            },
        ],
    }


@pytest.fixture(scope="module")
def gateway(simulator, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reliability")
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(config(simulator.url)))
    server = start_process(["serve", "--config", str(path)], free_port(), tmp, ready_path="/healthz")
    yield server
    stop_process(server)


@pytest.fixture
def client(gateway):
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0) as c:
        yield c


def attempts(raw) -> int:
    return int(raw.headers["x-llmrelay-attempts"])


def test_retry_on_another_deployment_then_success(client):
    raw = client.chat.completions.with_raw_response.create(model="two-keys", messages=HELLO)
    assert raw.parse().choices[0].message.content == "You said: hello"
    assert attempts(raw) == 2


def test_retry_after_cools_the_deployment_down(client):
    first = client.chat.completions.with_raw_response.create(model="rate-limited-twin", messages=HELLO)
    assert attempts(first) == 2  # the 429, then the twin
    second = client.chat.completions.with_raw_response.create(model="rate-limited-twin", messages=HELLO)
    assert attempts(second) == 1  # the rate-limited deployment sits out its Retry-After (7 s)


def test_fallback_across_providers_with_tools(client):
    raw = client.chat.completions.with_raw_response.create(
        model="flaky", messages=[{"role": "user", "content": "weather in Paris?"}], tools=[WEATHER_TOOL]
    )
    completion = raw.parse()
    (call,) = completion.choices[0].message.tool_calls
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert completion.model == "claude" and raw.headers["x-llmrelay-model"] == "claude"
    assert attempts(raw) == 3  # two on the OpenAI upstream, one on the Anthropic fallback


def test_anthropic_client_falls_back_too(gateway):
    with anthropic.Anthropic(base_url=gateway.url, api_key="x", max_retries=0) as c:
        message = c.messages.create(model="flaky", max_tokens=50, messages=HELLO)
    assert message.content[0].text == "You said: hello" and message.model == "claude"


def test_everything_down_is_one_error_listing_every_attempt(client, gateway):
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="doomed", messages=HELLO)
    assert e.value.status_code == 502
    body = e.value.body
    assert body["code"] == "all_attempts_failed" and len(body["attempts"]) == 4
    assert "UpstreamUnavailable" in body["message"] and "UpstreamConnectionError" in body["message"]
    # Both breakers are open now (2 failures each): the next call fails fast, without an attempt,
    # and says why in the route's own format.
    response = httpx.post(
        gateway.url + "/v1/messages", json={"model": "doomed", "max_tokens": 5, "messages": HELLO}
    )
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["type"] == "overloaded_error" and len(error["attempts"]) == 2
    assert all("circuit open" in a for a in error["attempts"])


def test_no_retry_on_a_client_error(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.with_raw_response.create(model="bad-request", messages=HELLO)
    assert "no-such-fault" in e.value.message
    assert e.value.response.headers["x-llmrelay-attempts"] == "1"  # not retried, no fallback


def test_a_stream_that_fails_before_its_first_token_falls_back_transparently(client):
    raw = client.chat.completions.with_raw_response.create(model="hangs", messages=HELLO, stream=True)
    assert raw.headers["x-llmrelay-attempts"] == "3" and raw.headers["x-llmrelay-model"] == "claude"
    chunks = list(raw.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "You said: hello"
    assert {c.model for c in chunks} == {"claude"}


def test_a_stall_after_the_first_tokens_ends_in_an_explicit_error(client):
    stream = client.chat.completions.create(
        model="stalls", stream=True, messages=[{"role": "user", "content": "a reply long enough to stall in"}]
    )
    received = []
    started = time.monotonic()
    with pytest.raises(openai.APIError, match="stalled"):
        for chunk in stream:
            received.append(chunk)
    assert received and time.monotonic() - started < 5  # cut after the 1 s stall timeout


def test_breaker_opens_and_recovers(client, gateway, simulator, tmp_path):
    def phoenix_state() -> str:
        breakers = httpx.get(gateway.url + "/admin/breakers").json()["breakers"]
        return next((b["state"] for b in breakers if b["key"] == "phoenix/gpt-4o-mini"), "closed")

    # Nothing listens on phoenix's port: two failures open its breaker, the fallback answers.
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(model="phoenix", messages=HELLO)
        assert raw.parse().model == "healthy"
    assert phoenix_state() == "open"
    raw = client.chat.completions.with_raw_response.create(model="phoenix", messages=HELLO)
    assert attempts(raw) == 1  # open: not even tried

    # The upstream comes back; after open_s (1 s) a half-open probe succeeds and closes it.
    server = start_process(["simulate"], PHOENIX_PORT, tmp_path, ready_path="/v1/models")
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            raw = client.chat.completions.with_raw_response.create(model="phoenix", messages=HELLO)
            if raw.parse().model == "phoenix":
                break
            time.sleep(0.2)
        assert raw.parse().model == "phoenix"
        assert phoenix_state() == "closed"
    finally:
        stop_process(server)


def test_the_total_deadline_can_be_set_per_request(client):
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(
            model="hangs-alone", messages=HELLO, extra_headers={"x-llmrelay-timeout": "0.5"}
        )
    assert e.value.status_code == 504 and time.monotonic() - started < 2.5
    with pytest.raises(openai.BadRequestError, match="x-llmrelay-timeout"):
        client.chat.completions.create(
            model="healthy", messages=HELLO, extra_headers={"x-llmrelay-timeout": "soon"}
        )


def test_breakers_are_shared_across_replicas_through_redis(simulator, tmp_path):
    import os

    import redis

    url = os.environ.get("LLMRELAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    try:
        redis.Redis.from_url(url, socket_timeout=1).ping()
    except redis.RedisError as exc:
        if os.environ.get("LLMRELAY_REQUIRE_SERVICES") == "1":
            raise
        pytest.skip(f"Redis not reachable at {url}: {exc}")
    cfg = config(simulator.url)
    cfg["redis_url"] = url
    cfg["breaker"] = {**cfg["breaker"], "open_s": 30}  # stays open through the whole test
    dead = f"dead-{free_port()}"  # a deployment key no other run shares
    cfg["providers"][dead] = {"kind": "openai", "base_url": f"http://127.0.0.1:{free_port()}/v1"}
    cfg["models"].append({"name": "shared", "provider": dead, "upstream": "m", "fallbacks": ["healthy"]})
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg))
    a = start_process(["serve", "--config", str(path)], free_port(), tmp_path, ready_path="/healthz")
    b = start_process(["serve", "--config", str(path)], free_port(), tmp_path, ready_path="/healthz")
    try:
        with (
            openai.OpenAI(base_url=a.url + "/v1", api_key="x", max_retries=0) as on_a,
            openai.OpenAI(base_url=b.url + "/v1", api_key="x", max_retries=0) as on_b,
        ):
            for _ in range(2):  # two failures on replica A open the breaker there
                on_a.chat.completions.create(model="shared", messages=HELLO)
            time.sleep(1.0)  # replicas pull the shared state every 250 ms
            # B has never sent to the dead deployment itself, yet skips it: it learned through Redis.
            raw = on_b.chat.completions.with_raw_response.create(model="shared", messages=HELLO)
            assert attempts(raw) == 1 and raw.parse().model == "healthy"  # B skipped the dead one
    finally:
        stop_process(a)
        stop_process(b)
        keys = redis.Redis.from_url(url).keys(f"llmrelay:breaker:{dead}*")
        if keys:
            redis.Redis.from_url(url).delete(*keys)
