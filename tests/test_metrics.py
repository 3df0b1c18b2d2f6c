"""Prometheus metrics: what observe() records, scrape-time gauges, and what observe() costs."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmrelay.observability.metrics import Metrics
from llmrelay.observability.records import AttemptRecord, CallRecord
from llmrelay.reliability.breaker import BreakerSettings, LocalBreakers

KEY = "key_0123456789ab"


def record(**changes: Any) -> CallRecord:
    base = CallRecord(
        id="req_1",
        started_at=1000.0,
        ended_at=1001.2,
        api_format="openai",
        api_key_id=KEY,
        end_user="user-42",
        requested_model="gpt-4o",
        model="gpt-4o",
        provider="openai",
        upstream_model="gpt-4o-2024-08-06",
        stream=False,
        status="success",
        error_message=None,
        prompt_tokens=100,
        completion_tokens=20,
        cached_tokens=0,
        cache_write_tokens=0,
        reasoning_tokens=0,
        cost_usd="0.00045",
        cost_exact=True,
        latency_ms=1200.0,
        ttft_ms=None,
        upstream_ms=1199.6,
        overhead_ms=0.4,
        attempts=[AttemptRecord(1, "gpt-4o", "openai/gpt-4o-2024-08-06", "success", 200, 1199.6, 0.0)],
    )
    return replace(base, **changes)


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float | None:
    return found.get((name, frozenset(labels.items())))


def test_success_counts_requests_tokens_cost_and_latency() -> None:
    m = Metrics()
    m.observe(record())
    m.observe(record(prompt_tokens=50, completion_tokens=10, cost_usd="0.00005"))
    s = samples(m)
    assert (
        value(
            s,
            "llmrelay_requests_total",
            model="gpt-4o",
            requested_model="gpt-4o",
            api_key=KEY,
            status="success",
            api_format="openai",
            stream="false",
        )
        == 2
    )
    assert value(s, "llmrelay_tokens_total", model="gpt-4o", api_key=KEY, kind="prompt") == 150
    assert value(s, "llmrelay_tokens_total", model="gpt-4o", api_key=KEY, kind="completion") == 30
    # Every kind exists from the first call, at zero, so rate() sees its first increment.
    assert value(s, "llmrelay_tokens_total", model="gpt-4o", api_key=KEY, kind="reasoning") == 0
    assert value(s, "llmrelay_cost_usd_total", model="gpt-4o", api_key=KEY) == pytest.approx(0.0005)
    assert value(s, "llmrelay_request_latency_seconds_count", model="gpt-4o", stream="false") == 2
    assert value(s, "llmrelay_request_latency_seconds_sum", model="gpt-4o", stream="false") == pytest.approx(
        2.4
    )
    assert value(s, "llmrelay_request_latency_seconds_bucket", model="gpt-4o", stream="false", le="1.0") == 0
    assert value(s, "llmrelay_request_latency_seconds_bucket", model="gpt-4o", stream="false", le="2.0") == 2
    assert value(s, "llmrelay_gateway_overhead_seconds_bucket", le="0.0005") == 2
    assert value(s, "llmrelay_gateway_overhead_seconds_bucket", le="0.00025") == 0
    assert (
        value(
            s,
            "llmrelay_upstream_attempts_total",
            model="gpt-4o",
            deployment="openai/gpt-4o-2024-08-06",
            outcome="success",
        )
        == 2
    )
    # Not a stream: no time to first token; and the end user is never a label.
    assert not any(name.startswith("llmrelay_time_to_first_token") and labels for name, labels in s)
    assert not any("user-42" in v for _, labels in s for _, v in labels)


def test_error_with_attempts_counts_each_attempt_and_error() -> None:
    m = Metrics()
    m.observe(
        record(
            status="error:UpstreamTimeout",
            error_message="timed out",
            model="gpt-4o",
            prompt_tokens=0,
            completion_tokens=0,
            cost_usd=None,
            attempts=[
                AttemptRecord(1, "gpt-4o", "openai/gpt-4o", "error:UpstreamTimeout", None, 30000.0, 0.0),
                AttemptRecord(2, "gpt-4o", "azure/gpt-4o", "error:UpstreamTimeout", None, 30000.0, 500.0),
                AttemptRecord(3, "gpt-4o", "azure/gpt-4o", "error:UpstreamRateLimit", 429, 12.0, 0.0),
            ],
        )
    )
    s = samples(m)
    assert (
        value(
            s,
            "llmrelay_requests_total",
            model="gpt-4o",
            requested_model="gpt-4o",
            api_key=KEY,
            status="error:UpstreamTimeout",
            api_format="openai",
            stream="false",
        )
        == 1
    )
    attempts = "llmrelay_upstream_attempts_total"
    assert (
        value(s, attempts, model="gpt-4o", deployment="openai/gpt-4o", outcome="error:UpstreamTimeout") == 1
    )
    assert value(s, attempts, model="gpt-4o", deployment="azure/gpt-4o", outcome="error:UpstreamTimeout") == 1
    assert (
        value(s, attempts, model="gpt-4o", deployment="azure/gpt-4o", outcome="error:UpstreamRateLimit") == 1
    )
    errors = "llmrelay_upstream_errors_total"
    assert value(s, errors, deployment="openai/gpt-4o", error="UpstreamTimeout") == 1
    assert value(s, errors, deployment="azure/gpt-4o", error="UpstreamTimeout") == 1
    assert value(s, errors, deployment="azure/gpt-4o", error="UpstreamRateLimit") == 1
    assert value(s, "llmrelay_cost_usd_total", model="gpt-4o", api_key=KEY) == 0


def test_error_before_routing_uses_none_labels() -> None:
    m = Metrics()
    m.observe(
        record(model=None, api_key_id=None, status="error:ModelNotFoundError", attempts=[], cost_usd=None)
    )
    s = samples(m)
    assert (
        value(
            s,
            "llmrelay_requests_total",
            model="none",
            requested_model="gpt-4o",
            api_key="none",
            status="error:ModelNotFoundError",
            api_format="openai",
            stream="false",
        )
        == 1
    )


def test_stream_observes_time_to_first_token() -> None:
    m = Metrics()
    m.observe(record(stream=True, ttft_ms=350.0, latency_ms=4000.0, reasoning_tokens=7))
    m.observe(record(stream=True, ttft_ms=None))  # the stream failed before a token: nothing to observe
    s = samples(m)
    assert value(s, "llmrelay_time_to_first_token_seconds_count", model="gpt-4o") == 1
    assert value(s, "llmrelay_time_to_first_token_seconds_sum", model="gpt-4o") == pytest.approx(0.35)
    assert value(s, "llmrelay_time_to_first_token_seconds_bucket", model="gpt-4o", le="0.3") == 0
    assert value(s, "llmrelay_time_to_first_token_seconds_bucket", model="gpt-4o", le="0.5") == 1
    assert value(s, "llmrelay_request_latency_seconds_count", model="gpt-4o", stream="true") == 2
    assert value(s, "llmrelay_tokens_total", model="gpt-4o", api_key=KEY, kind="reasoning") == 7


def test_cache_hits() -> None:
    m = Metrics()
    m.observe(record(status="cache_hit", attempts=[], cached_tokens=100))
    m.observe(record(extra={"cache": "hit"}))
    m.observe(record(extra={"cache": "semantic-hit"}))
    m.observe(record(extra={"cache": "miss"}))
    s = samples(m)
    assert value(s, "llmrelay_cache_hits_total", model="gpt-4o", kind="exact") == 2
    assert value(s, "llmrelay_cache_hits_total", model="gpt-4o", kind="semantic") == 1
    assert value(s, "llmrelay_tokens_total", model="gpt-4o", api_key=KEY, kind="cached") == 100


def test_guardrail_blocks() -> None:
    m = Metrics()
    verdicts = [{"name": "pii", "verdict": "block"}, {"name": "toxicity", "verdict": "allow"}]
    m.observe(record(status="filtered", attempts=[], extra={"guardrails": verdicts}))
    m.observe(record(extra={"guardrails": [{"name": "pii", "verdict": "allow"}]}))
    m.observe(record(status="filtered", attempts=[]))  # filtered with no verdict naming the guardrail
    s = samples(m)
    assert value(s, "llmrelay_guardrail_blocks_total", guardrail="pii") == 1
    assert value(s, "llmrelay_guardrail_blocks_total", guardrail="toxicity") is None
    assert value(s, "llmrelay_guardrail_blocks_total", guardrail="unknown") == 1


def test_client_chosen_labels_are_capped() -> None:
    m = Metrics(max_label_values=2)
    for i in range(5):
        m.observe(record(requested_model=f"made-up-{i}", model=None, status="error:ModelNotFoundError"))
    s = samples(m)
    requested = {
        dict(labels)["requested_model"]: v
        for (name, labels), v in s.items()
        if name == "llmrelay_requests_total"
    }
    assert requested == {"made-up-0": 1, "made-up-1": 1, "other": 3}


def test_instances_are_independent() -> None:
    a, b = Metrics(), Metrics()  # a global registry would raise "Duplicated timeseries" here
    a.observe(record())
    a.observe(record())
    b.observe(record(model="claude", requested_model="claude"))
    sa, sb = samples(a), samples(b)
    labels = {"requested_model": "gpt-4o", "api_key": KEY, "status": "success", "api_format": "openai"}
    assert value(sa, "llmrelay_requests_total", model="gpt-4o", stream="false", **labels) == 2
    assert value(sb, "llmrelay_requests_total", model="gpt-4o", stream="false", **labels) is None
    assert value(sb, "llmrelay_tokens_total", model="claude", api_key=KEY, kind="prompt") == 100


def test_scrape_time_gauges() -> None:
    now = [0.0]
    breakers = LocalBreakers(BreakerSettings(consecutive_failures=1, open_s=10.0), clock=lambda: now[0])
    breakers.record("a/closed", True)
    breakers.record("b/open", False)
    breakers.record("c/half", False)  # b and c: open until t=10
    breakers.cooldown("d/cool", 30.0)
    now[0] = 10.5  # past open_s: c is half-open...
    assert breakers.allow("b/open")  # ...and b sends its probe, which fails: open again
    breakers.record("b/open", False)
    depth = [3]
    m = Metrics(breakers=breakers, queue_depth=lambda: depth[0])
    s = samples(m)
    state = "llmrelay_breaker_state"
    assert value(s, state, deployment="a/closed") == 0
    assert value(s, state, deployment="c/half") == 1
    assert value(s, state, deployment="b/open") == 2
    assert value(s, state, deployment="d/cool") == 3
    assert value(s, "llmrelay_calllog_queue_depth") == 3

    # Read at each scrape, not at construction.
    depth[0] = 0
    now[0] = 100.0
    s = samples(m)
    assert value(s, "llmrelay_calllog_queue_depth") == 0
    assert value(s, state, deployment="d/cool") == 0
    assert value(s, state, deployment="b/open") == 1


def test_failing_gauge_source_does_not_fail_the_scrape(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> int:
        raise RuntimeError("queue gone")

    m = Metrics(queue_depth=broken)
    m.observe(record())
    s = samples(m)
    assert value(s, "llmrelay_calllog_queue_depth") is None
    assert value(s, "llmrelay_gateway_overhead_seconds_count") == 1
    assert "queue depth" in caplog.text


def test_without_gauge_sources_no_gauges() -> None:
    s = samples(Metrics())
    assert not any(name in ("llmrelay_breaker_state", "llmrelay_calllog_queue_depth") for name, _ in s)


def test_observe_cost() -> None:
    m = Metrics()
    recs = [
        record(),
        record(stream=True, ttft_ms=300.0, model="claude", requested_model="claude"),
        record(
            status="error:UpstreamTimeout",
            attempts=[
                AttemptRecord(1, "gpt-4o", "openai/gpt-4o", "error:UpstreamTimeout", None, 30000.0, 0.0),
                AttemptRecord(2, "gpt-4o", "azure/gpt-4o", "success", 200, 900.0, 500.0),
            ],
        ),
    ]
    for r in recs:  # warm the label caches, as a running gateway has
        m.observe(r)
    n = 20_000
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for i in range(n):
            m.observe(recs[i % 3])
        best = min(best, (time.perf_counter() - start) / n)
    print(f"\nMetrics.observe(): {best * 1e6:.2f} us per record (best of 3 x {n})")
    assert best < 100e-6  # loose: catches a pathological regression, not a slow CI machine
