"""Prometheus metrics: counters and histograms fed by one ``observe(record)`` per call, and gauges
(breaker states, call-log queue depth) read when Prometheus scrapes.

Each ``Metrics`` owns its ``CollectorRegistry``: prometheus_client's global default registry
refuses a second metric of the same name, so two gateways (or two tests) in one process would
collide on it.

``observe`` runs once per call on the hot path. ``Counter.labels()`` validates and locks on every
call (~1 us each, and a call touches up to a dozen series), so the labelled children are cached
here in plain dicts keyed by the label tuple: after the first call of a kind, a series costs one
dict lookup plus prometheus_client's own ``inc``/``observe``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .records import CallRecord

log = logging.getLogger(__name__)

# LLM calls last from ~100 ms (a short answer from a small model) to minutes (long generations,
# reasoning models, retries with backoff): buckets spread log-like across that whole range.
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0, 300.0)
# The first token comes much sooner than the whole answer: finer below a second.
TTFT_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
# Time spent in the gateway itself should stay well under a millisecond: sub-millisecond buckets,
# with a tail wide enough to show a regression (a blocking call, a slow stage) when there is one.
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)

BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2, "cooldown": 3}
TOKEN_KINDS = ("prompt", "completion", "cached", "cache_write", "reasoning")

NONE = "none"  # label value when a field is missing (no model answered, no API key)
OTHER = "other"  # label value for a client-chosen value past the cap (see _Capped)
DEFAULT_MAX_LABEL_VALUES = 1000


class _Snapshots(Protocol):
    def snapshot(self) -> list[dict[str, Any]]: ...


class _Capped:
    """Admits the first ``limit`` distinct values of a label the client chooses (the requested model
    name, the API key id); later values read as ``other``. A client sending a new made-up model
    name per request would otherwise create a new series per request and exhaust Prometheus."""

    __slots__ = ("limit", "seen")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self.seen:
            return value
        if len(self.seen) < self.limit:
            self.seen.add(value)
            return value
        return OTHER


class _Gauges(Collector):
    """Gauges computed at scrape time, so nothing on the hot path keeps them up to date."""

    def __init__(self, breakers: _Snapshots | None, queue_depth: Callable[[], int] | None) -> None:
        self.breakers = breakers
        self.queue_depth = queue_depth

    def describe(self) -> Iterable[Metric]:
        # Names only, for the registry's duplicate-name check: without describe() the registry
        # skips the check, and with auto-describe it would call snapshot() just to learn the names.
        families: list[Metric] = []
        if self.breakers is not None:
            families.append(_breaker_family())
        if self.queue_depth is not None:
            families.append(_depth_family())
        return families

    def collect(self) -> Iterable[Metric]:
        # One failing source must not fail the whole scrape: the counters are still worth having.
        if self.breakers is not None:
            family = _breaker_family()
            try:
                for row in self.breakers.snapshot():
                    value = BREAKER_STATES.get(row.get("state", ""))
                    if value is not None:
                        family.add_metric([str(row["key"])], value)
            except Exception:
                log.exception("Reading breaker states for metrics failed")
            yield family
        if self.queue_depth is not None:
            try:
                depth = float(self.queue_depth())
            except Exception:
                log.exception("Reading the call-log queue depth for metrics failed")
            else:
                family = _depth_family()
                family.add_metric([], depth)
                yield family


def _breaker_family() -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "llmrelay_breaker_state",
        "Circuit breaker state per deployment: 0 closed, 1 half_open, 2 open, 3 cooldown.",
        labels=["deployment"],
    )


def _depth_family() -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "llmrelay_calllog_queue_depth", "Call records waiting to be written to the call log."
    )


class Metrics:
    """Prometheus metrics of one gateway. ``observe`` each finished call; ``render`` for /metrics.

    ``breakers`` (anything with ``snapshot()``, e.g. ``LocalBreakers``) and ``queue_depth`` are
    read at scrape time. ``max_label_values`` caps the distinct values of client-chosen labels.
    """

    def __init__(
        self,
        *,
        breakers: _Snapshots | None = None,
        queue_depth: Callable[[], int] | None = None,
        max_label_values: int = DEFAULT_MAX_LABEL_VALUES,
    ) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "llmrelay_requests_total",
            "Client calls, by outcome.",
            ["model", "requested_model", "api_key", "status", "api_format", "stream"],
            registry=r,
        )
        self.tokens = Counter(
            "llmrelay_tokens_total", "Tokens, by kind.", ["model", "api_key", "kind"], registry=r
        )
        self.cost = Counter(
            "llmrelay_cost_usd_total", "Cost of the calls in US dollars.", ["model", "api_key"], registry=r
        )
        self.attempts = Counter(
            "llmrelay_upstream_attempts_total",
            "Upstream attempts, by outcome.",
            ["model", "deployment", "outcome"],
            registry=r,
        )
        self.upstream_errors = Counter(
            "llmrelay_upstream_errors_total",
            "Failed upstream attempts, by error class.",
            ["deployment", "error"],
            registry=r,
        )
        self.cache_hits = Counter(
            "llmrelay_cache_hits_total", "Calls answered from the cache.", ["model", "kind"], registry=r
        )
        self.guardrail_blocks = Counter(
            "llmrelay_guardrail_blocks_total", "Calls blocked by a guardrail.", ["guardrail"], registry=r
        )
        self.latency = Histogram(
            "llmrelay_request_latency_seconds",
            "Whole-call latency as the client saw it (to the last chunk for streams).",
            ["model", "stream"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "llmrelay_gateway_overhead_seconds",
            "Time spent in the gateway itself: latency less time waiting on providers.",
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "llmrelay_time_to_first_token_seconds",
            "Time to the first streamed token.",
            ["model"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        if breakers is not None or queue_depth is not None:
            r.register(_Gauges(breakers, queue_depth))

        self._requested_model = _Capped(max_label_values)
        self._api_key = _Capped(max_label_values)
        # Label tuple -> labelled child (see the module docstring for why).
        self._requests: dict[tuple[str, ...], Any] = {}
        self._per_key: dict[tuple[str, str], tuple[Any, ...]] = {}  # 5 token kinds, then cost
        self._latency: dict[tuple[str, str], Any] = {}
        self._ttft: dict[str, Any] = {}
        self._attempts: dict[tuple[str, str, str], Any] = {}
        self._errors: dict[tuple[str, str], Any] = {}

    def observe(self, record: CallRecord) -> None:
        model = record.model or NONE
        api_key = self._api_key(record.api_key_id or NONE)
        stream = "true" if record.stream else "false"

        requested = self._requested_model(record.requested_model)
        key = (model, requested, api_key, record.status, record.api_format, stream)
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = self.requests.labels(*key)
        child.inc()

        per_key = self._per_key.get((model, api_key))
        if per_key is None:
            # All kinds at once, at zero: a series that first appears already non-zero loses
            # that first increment in rate().
            per_key = self._per_key[(model, api_key)] = (
                *(self.tokens.labels(model, api_key, kind) for kind in TOKEN_KINDS),
                self.cost.labels(model, api_key),
            )
        prompt, completion, cached, cache_write, reasoning, cost = per_key
        if record.prompt_tokens:
            prompt.inc(record.prompt_tokens)
        if record.completion_tokens:
            completion.inc(record.completion_tokens)
        if record.cached_tokens:
            cached.inc(record.cached_tokens)
        if record.cache_write_tokens:
            cache_write.inc(record.cache_write_tokens)
        if record.reasoning_tokens:
            reasoning.inc(record.reasoning_tokens)
        if record.cost_usd is not None:
            cost.inc(float(record.cost_usd))  # float() of the Decimal's text: the same double

        child = self._latency.get((model, stream))
        if child is None:
            child = self._latency[(model, stream)] = self.latency.labels(model, stream)
        child.observe(record.latency_ms / 1000)
        self.overhead.observe(record.overhead_ms / 1000)
        if record.stream and record.ttft_ms is not None:
            child = self._ttft.get(model)
            if child is None:
                child = self._ttft[model] = self.ttft.labels(model)
            child.observe(record.ttft_ms / 1000)

        for attempt in record.attempts:
            akey = (attempt.model, attempt.deployment, attempt.outcome)
            child = self._attempts.get(akey)
            if child is None:
                child = self._attempts[akey] = self.attempts.labels(*akey)
            child.inc()
            if attempt.outcome != "success":
                ekey = (attempt.deployment, attempt.outcome.removeprefix("error:"))
                child = self._errors.get(ekey)
                if child is None:
                    child = self._errors[ekey] = self.upstream_errors.labels(*ekey)
                child.inc()

        # Rare paths (a cache hit, a guardrail verdict): labels() directly, no cache needed.
        extra = record.extra
        cache = extra.get("cache") if extra else None
        if record.status == "cache_hit" or cache in ("hit", "semantic-hit"):
            self.cache_hits.labels(model, "semantic" if cache == "semantic-hit" else "exact").inc()
        blocked = False
        if extra:
            for verdict in extra.get("guardrails") or ():
                if isinstance(verdict, dict) and verdict.get("verdict") == "block":
                    self.guardrail_blocks.labels(str(verdict.get("name") or "unknown")).inc()
                    blocked = True
        if record.status == "filtered" and not blocked:
            self.guardrail_blocks.labels("unknown").inc()  # filtered, with no verdict naming by whom

    def render(self) -> tuple[bytes, str]:
        """The exposition body and its content type, for a /metrics response."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


__all__ = ["BREAKER_STATES", "Metrics"]
