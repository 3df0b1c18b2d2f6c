"""Rate limits and the queue through real gateways on loopback (the official SDKs as clients):
429 with Retry-After and x-ratelimit-* headers in both wire formats, the headers on successes,
tokens per minute, end users, two gateways sharing one limit through Redis, priority order under
contention, the queue's maximum wait, and a queued client hanging up."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from llmrelay import Relay
from llmrelay.errors import RateLimitError
from llmrelay.keys import KeyLimits, VirtualKey
from llmrelay.pipeline import Call
from llmrelay.types import ChatRequest

from .conftest import (
    REDIS_URL,
    Server,
    redis_prefix_that_expires,
    serve_config,
    simulate_config,
    stop_process,
)

HI = [{"role": "user", "content": "hi"}]
HOLD = [{"role": "user", "content": "hold the line"}]  # a long answer (~3 s) from the lag-* models


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    settings = {
        "seed": 1,
        "rules": [{"match": "hold the line", "reply": " ".join(["word"] * 150)}],
        "per_model": {"lag-*": {"latency_ms": 100, "per_token_ms": 20}},
    }
    server = simulate_config(settings, tmp_path_factory.mktemp("ratelimit-sim"))
    yield server
    stop_process(server)


def config(sim: Server, tmp: Path, **limits: object) -> dict:
    return {
        "execute": {"timeout_s": 30, "max_attempts": 1},
        "calllog": {"directory": str(tmp / "home"), "flush_interval_s": 0.05},
        "providers": {
            "oa": {"kind": "openai", "base_url": sim.url + "/v1"},
            "an": {"kind": "anthropic", "base_url": sim.url},
        },
        "limits": limits,
        "models": [
            {"name": "rl", "provider": "oa", "upstream": "gpt-4o-mini", "limits": {"rpm": 3}},
            {"name": "rl-claude", "provider": "an", "upstream": "claude-haiku-4-5", "limits": {"rpm": 1}},
            {"name": "tpm", "provider": "oa", "upstream": "gpt-4o-mini", "limits": {"tpm": 2000}},
            {"name": "tpm-stream", "provider": "oa", "upstream": "gpt-4o-mini", "limits": {"tpm": 2000}},
            {
                "name": "tpm-slow",
                "provider": "oa",
                "upstream": "lag-tpm",
                "limits": {"tpm": 2000},
                "upstream_limits": {"max_concurrency": 10},  # only so the in-flight gauge shows it
            },
            {"name": "free", "provider": "oa", "upstream": "gpt-4o-mini"},
            {
                "name": "queued",
                "provider": "oa",
                "upstream": "lag-queued",
                "upstream_limits": {"max_concurrency": 1},
            },
            {
                "name": "pair",
                "deployments": [
                    {"provider": "oa", "upstream": "lag-a", "limits": {"max_concurrency": 1}},
                    {"provider": "oa", "upstream": "lag-b", "limits": {"max_concurrency": 1}},
                ],
            },
        ],
    }


@pytest.fixture(scope="module")
def gateway(sim: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("ratelimit-gw")
    server = serve_config(config(sim, tmp, user={"rpm": 2}, queue={"max_wait_s": 20}), tmp)
    yield server
    stop_process(server)


_clients: list[openai.OpenAI | anthropic.Anthropic] = []  # closed after each test


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _clients:
        _clients.pop().close()


def openai_client(server: Server, **kw: object) -> openai.OpenAI:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, **kw)
    _clients.append(client)
    return client


def metric(server: Server, name: str, **labels: str) -> float:
    total = 0.0
    for line in httpx.get(server.url + "/metrics").text.splitlines():
        named = line.startswith(name + "{") or line.startswith(name + " ")
        if named and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_over_a_model_limit_is_a_429_with_retry_after_and_openai_headers(gateway: Server) -> None:
    client = openai_client(gateway)
    remaining = []
    for _ in range(3):
        raw = client.chat.completions.with_raw_response.create(model="rl", messages=HI)
        assert raw.parse().choices[0].message.content
        assert raw.headers["x-ratelimit-limit-requests"] == "3"
        remaining.append(raw.headers["x-ratelimit-remaining-requests"])
        assert raw.headers["x-ratelimit-reset-requests"].endswith("s")
    assert remaining == ["2", "1", "0"]
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="rl", messages=HI)
    error = caught.value
    assert error.status_code == 429
    assert error.code == "rate_limit_exceeded" and error.type == "rate_limit_error"
    assert "model rl" in error.message and "requests per min (RPM): limit 3" in error.message
    retry_after = int(error.response.headers["retry-after"])
    assert 15 <= retry_after <= 20  # one request per 20 s
    assert error.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert error.response.headers["x-ratelimit-limit-requests"] == "3"
    # Streams are refused the same way, before any byte of a stream.
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="rl", messages=HI, stream=True)
    # Another model has its own budget, and none: no headers there.
    raw = client.chat.completions.with_raw_response.create(model="free", messages=HI)
    assert "x-ratelimit-limit-requests" not in raw.headers


def test_the_anthropic_route_gets_its_own_error_shape(gateway: Server) -> None:
    client = anthropic.Anthropic(base_url=gateway.url, api_key="x", max_retries=0)
    _clients.append(client)
    raw = client.messages.with_raw_response.create(model="rl-claude", max_tokens=50, messages=HI)
    assert raw.headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(model="rl-claude", max_tokens=50, messages=HI)
    assert caught.value.status_code == 429
    body = caught.value.body
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    assert "model rl-claude" in body["error"]["message"]
    assert int(caught.value.response.headers["retry-after"]) >= 50


def test_tokens_per_minute_reserve_max_tokens_then_count_the_usage(gateway: Server) -> None:
    client = openai_client(gateway)
    raw = client.chat.completions.with_raw_response.create(model="tpm", messages=HI, max_tokens=1500)
    assert raw.headers["x-ratelimit-limit-tokens"] == "2000"
    reserved_left = int(raw.headers["x-ratelimit-remaining-tokens"])
    assert 2000 - 1500 - 20 <= reserved_left <= 2000 - 1500  # the prompt (~8 tokens) and 1500 reserved
    # The answer used a dozen tokens and the rest came back: another 1500 fits at once.
    client.chat.completions.create(model="tpm", messages=HI, max_tokens=1500)
    # Asking for more than a whole minute's worth can never pass: said so, without a Retry-After.
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="tpm", messages=HI, max_tokens=5000)
    assert caught.value.code == "request_too_large"
    assert "retry-after" not in caught.value.response.headers


def test_a_streamed_calls_tokens_are_reconciled_from_its_final_usage(gateway: Server) -> None:
    client = openai_client(gateway)
    for stream_options in ({"include_usage": True}, None):  # the gateway reads usage either way
        chunks = client.chat.completions.create(
            model="tpm-stream", messages=HI, max_tokens=1500, stream=True, stream_options=stream_options
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    raw = client.chat.completions.with_raw_response.create(model="tpm-stream", messages=HI, max_tokens=10)
    # Without the reconciliation two reservations of ~1,508 could not even have fitted in 2,000.
    assert int(raw.headers["x-ratelimit-remaining-tokens"]) > 2000 - 3 * 40


def test_tokens_reserved_by_a_call_in_flight_are_not_available_to_others(gateway: Server) -> None:
    client = openai_client(gateway)
    holder = threading.Thread(
        target=lambda: client.chat.completions.create(model="tpm-slow", messages=HOLD, max_tokens=1500)
    )
    holder.start()
    _until(lambda: metric(gateway, "llmrelay_deployment_in_flight", deployment="oa/lag-tpm") == 1)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="tpm-slow", messages=HI, max_tokens=1500)
    assert "tokens per min (TPM): limit 2000" in caught.value.message
    assert int(caught.value.response.headers["x-ratelimit-remaining-tokens"]) < 520
    holder.join(30)
    # It used ~160 tokens of its 1500: the rest is back.
    client.chat.completions.create(model="tpm-slow", messages=HI, max_tokens=1500)


def test_each_end_user_has_the_default_user_limit(gateway: Server) -> None:
    client = openai_client(gateway)
    for _ in range(2):
        client.chat.completions.create(model="free", messages=HI, user="alice")
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="free", messages=HI, user="alice")
    assert "user 'alice'" in caught.value.message
    client.chat.completions.create(model="free", messages=HI, user="bob")  # another user: untouched
    assert metric(gateway, "llmrelay_ratelimit_rejections_total", scope="user") >= 1


async def test_a_virtual_keys_limits_apply_to_it_alone() -> None:
    relay = Relay({"calllog": {"enabled": False}, "simulator": {"enabled": True}, **_sim_models()})
    limited = VirtualKey(id="key_a", owner="team-a", limits=KeyLimits(rpm=2))
    other = VirtualKey(id="key_b", owner="team-b", limits=KeyLimits(rpm=2))
    request = ChatRequest(model="m", messages=HI)
    async with relay:
        for _ in range(2):
            await relay.handle(Call(request, key=limited))
        with pytest.raises(RateLimitError) as caught:
            await relay.handle(Call(request, key=limited))
        assert "API key key_a" in caught.value.message
        await relay.handle(Call(request, key=other))


def _sim_models() -> dict:
    return {
        "server": {"master_key": "sk-master"},  # virtual keys exist only behind a master key
        "providers": {"sim": {"kind": "openai", "base_url": "http://127.0.0.1:0/v1", "simulated": True}},
        "models": [{"name": "m", "provider": "sim", "upstream": "gpt-4o-mini"}],
    }


def test_two_gateways_sharing_redis_hold_one_limit_together(sim: Server, tmp_path: Path) -> None:
    rpm = 120
    with redis_prefix_that_expires("two-gateways") as prefix:
        cfg = config(sim, tmp_path, redis_prefix=prefix)
        cfg["redis_url"] = REDIS_URL
        cfg["models"][0]["limits"] = {"rpm": rpm}
        servers = [serve_config(cfg, tmp_path) for _ in range(2)]
        try:
            admitted, refused, elapsed = _hammer([s.url for s in servers], "rl", total=400)
        finally:
            for server in servers:
                stop_process(server)
    expected = rpm + rpm / 60 * elapsed  # the burst plus what refilled while the test ran
    assert refused > 0
    assert abs(admitted - expected) <= 0.05 * expected, (admitted, expected, elapsed)


def _hammer(urls: list[str], model: str, total: int) -> tuple[int, int, float]:
    """``total`` requests spread over ``urls`` from 8 threads: (admitted, refused, seconds)."""
    counts = {200: 0, 429: 0}
    lock = threading.Lock()
    body = {"model": model, "messages": HI}

    def worker(n: int) -> None:
        with httpx.Client(timeout=10) as client:
            for i in range(n):
                status = client.post(urls[i % len(urls)] + "/v1/chat/completions", json=body).status_code
                with lock:
                    counts[status] = counts.get(status, 0) + 1

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(worker, [total // 8] * 8))
    elapsed = time.monotonic() - started
    assert set(counts) == {200, 429}, counts
    return counts[200], counts[429], elapsed


def test_waiting_requests_are_served_highest_priority_first(gateway: Server) -> None:
    done: list[str] = []
    lock = threading.Lock()

    def send(name: str, priority: int | None, messages: list) -> None:
        headers = {} if priority is None else {"x-llmrelay-priority": str(priority)}
        openai_client(gateway).chat.completions.create(
            model="queued", messages=messages, extra_headers=headers
        )
        with lock:
            done.append(name)

    threads = [threading.Thread(target=send, args=("holder", None, HOLD))]
    threads[0].start()
    _until(lambda: metric(gateway, "llmrelay_deployment_in_flight", deployment="oa/lag-queued") == 1)
    order = [("low-a", 0), ("high-a", 5), ("mid", 2), ("low-b", 0), ("high-b", 5)]
    for depth, (name, priority) in enumerate(order, 1):
        threads.append(threading.Thread(target=send, args=(name, priority, HI)))
        threads[-1].start()
        _until(lambda d=depth: metric(gateway, "llmrelay_queue_depth", deployment="oa/lag-queued") == d)
    assert metric(gateway, "llmrelay_queue_oldest_wait_seconds", deployment="oa/lag-queued") > 0
    for thread in threads:
        thread.join(30)
    assert done == ["holder", "high-a", "high-b", "mid", "low-a", "low-b"]
    assert metric(gateway, "llmrelay_queue_depth", deployment="oa/lag-queued") == 0


def test_a_deployment_at_its_limit_is_passed_over_for_one_with_room(gateway: Server) -> None:
    holder = threading.Thread(
        target=lambda: openai_client(gateway).chat.completions.create(model="pair", messages=HOLD)
    )
    holder.start()
    deployments = ("oa/lag-a", "oa/lag-b")

    def busy(d: str) -> float:
        return metric(gateway, "llmrelay_deployment_in_flight", deployment=d)

    _until(lambda: sum(map(busy, deployments)) == 1)
    taken = next(d for d in deployments if busy(d) == 1)
    free = next(d for d in deployments if d != taken)
    openai_client(gateway).chat.completions.create(model="pair", messages=HI)
    assert metric(gateway, "llmrelay_upstream_attempts_total", deployment=free) == 1
    holder.join(30)
    assert metric(gateway, "llmrelay_upstream_attempts_total", deployment=taken) == 1


def test_a_queued_client_that_hangs_up_leaves_the_queue(gateway: Server) -> None:
    holder = threading.Thread(
        target=lambda: openai_client(gateway).chat.completions.create(model="queued", messages=HOLD)
    )
    holder.start()
    _until(lambda: metric(gateway, "llmrelay_deployment_in_flight", deployment="oa/lag-queued") == 1)
    attempts_before = metric(gateway, "llmrelay_upstream_attempts_total", deployment="oa/lag-queued")
    with pytest.raises(openai.APITimeoutError):
        openai_client(gateway, timeout=0.5).chat.completions.create(model="queued", messages=HI)
    _until(lambda: metric(gateway, "llmrelay_queue_depth", deployment="oa/lag-queued") == 0)
    holder.join(30)
    _until(
        lambda: (
            metric(
                gateway,
                "llmrelay_requests_total",
                status="error:ClientDisconnected",
                requested_model="queued",
            )
            == 1
        )
    )
    # Only the holder reached the upstream: the one who left never did.
    assert (
        metric(gateway, "llmrelay_upstream_attempts_total", deployment="oa/lag-queued") == attempts_before + 1
    )


def test_a_request_that_waits_too_long_gets_a_503_saying_so(sim: Server, tmp_path: Path) -> None:
    server = serve_config(config(sim, tmp_path, queue={"max_wait_s": 0.5}), tmp_path)
    try:
        holder = threading.Thread(
            target=lambda: openai_client(server).chat.completions.create(model="queued", messages=HOLD)
        )
        holder.start()
        _until(lambda: metric(server, "llmrelay_deployment_in_flight", deployment="oa/lag-queued") == 1)
        with pytest.raises(openai.InternalServerError) as caught:
            openai_client(server).chat.completions.create(model="queued", messages=HI)
        assert caught.value.status_code == 503 and caught.value.code == "queue_timeout"
        assert "oa/lag-queued" in caught.value.message
        assert caught.value.response.headers["retry-after"] == "1"
        assert metric(server, "llmrelay_queue_timeouts_total", deployment="oa/lag-queued") == 1
        holder.join(30)
    finally:
        stop_process(server)


def _until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)
