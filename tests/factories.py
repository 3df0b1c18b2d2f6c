"""One way to build a ``CallRecord`` in tests; each test module overrides only what it cares about."""

from __future__ import annotations

from typing import Any

from llmrelay.observability.records import AttemptRecord, CallRecord


def call_record(**fields: Any) -> CallRecord:
    started = fields.get("started_at", 1_700_000_000.0)
    latency = fields.get("latency_ms", 500.0)
    base: dict[str, Any] = dict(
        id="req_0",
        started_at=started,
        ended_at=started + latency / 1000,
        api_format="openai",
        api_key_id=None,
        end_user=None,
        requested_model="m",
        model="m",
        provider="p",
        upstream_model="u",
        stream=False,
        status="success",
        error_message=None,
        prompt_tokens=10,
        completion_tokens=5,
        cached_tokens=0,
        cache_write_tokens=0,
        reasoning_tokens=0,
        cost_usd="0.000001",
        cost_exact=True,
        latency_ms=latency,
        ttft_ms=None,
        upstream_ms=latency - 1.0,
        overhead_ms=1.0,
        attempts=[AttemptRecord(1, "m", "p/u", "success", 200, latency - 1.0, 0.0)],
    )
    return CallRecord(**{**base, **fields})
