"""Prometheus metrics: counters and histograms fed by one ``observe(record)`` per call, and gauges
(breaker states, call-log queue depth) read when Prometheus scrapes.

Each ``Metrics`` owns its ``CollectorRegistry``: prometheus_client's global default registry
refuses a second metric of the same name, so two gateways (or two tests) in one process would
collide on it.

``observe`` runs once per call on the hot path, so it only adds to plain dicts keyed by the label
values; the metric families are built from them at scrape time (``Metrics.collect``).
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
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

    def __init__(
        self,
        breakers: _Snapshots | None,
        queue_depth: Callable[[], int] | None,
        rejected: Callable[[], int] | None = None,
    ) -> None:
        self.breakers = breakers
        self.queue_depth = queue_depth
        self.rejected = rejected

    def describe(self) -> Iterable[Metric]:
        # Names only, for the registry's duplicate-name check: without describe() the registry
        # skips the check, and with auto-describe it would call snapshot() just to learn the names.
        families: list[Metric] = []
        if self.breakers is not None:
            families.append(_breaker_family())
        if self.queue_depth is not None:
            families.append(_depth_family())
        if self.rejected is not None:
            families.append(_rejected_family())
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
        if self.rejected is not None:
            try:
                rejected = float(self.rejected())
            except Exception:
                log.exception("Counting the call log's rejected records for metrics failed")
            else:
                family = _rejected_family()
                family.add_metric([], rejected)
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


def _rejected_family() -> GaugeMetricFamily:
    # A gauge of what the files hold: it falls when an operator deals with them and removes them.
    return GaugeMetricFamily(
        "llmrelay_calllog_rejected_records",
        "Call records the store refused for their data, set aside in rejected-*.jsonl.",
    )


class _Histogram:
    """One histogram series: per-bucket counts (not cumulative) and the sum."""

    __slots__ = ("counts", "sum")

    def __init__(self, n_buckets: int) -> None:
        self.counts = [0] * (n_buckets + 1)  # the last one is +Inf
        self.sum = 0.0

    def family_buckets(self, bounds: tuple[float, ...]) -> list[tuple[str, float]]:
        cumulative, total = [], 0
        for bound, count in zip((*map(str, bounds), "+Inf"), self.counts, strict=True):
            total += count
            cumulative.append((bound, total))
        return cumulative


class Metrics(Collector):
    """Prometheus metrics of one gateway. ``observe`` each finished call; ``render`` for /metrics.

    ``breakers`` (anything with ``snapshot()``, e.g. ``LocalBreakers``), ``queue_depth`` and
    ``calllog_rejected`` are read at scrape time. ``max_label_values`` caps the distinct values of client-chosen labels.

    ``observe`` runs once per call on the event loop, so it only adds to plain dicts keyed by the
    label values (~2 us a call); the Prometheus families are built from them when scraped.
    prometheus_client's own counters lock and validate on every increment, which cost ~3x more.
    """

    def __init__(
        self,
        *,
        breakers: _Snapshots | None = None,
        queue_depth: Callable[[], int] | None = None,
        calllog_rejected: Callable[[], int] | None = None,
        max_label_values: int = DEFAULT_MAX_LABEL_VALUES,
    ) -> None:
        self._requested_model = _Capped(max_label_values)
        self._api_key = _Capped(max_label_values)
        # Label values -> count (or per-kind counts, or a histogram).
        self._requests: dict[tuple[str, ...], int] = {}
        self._tokens: dict[tuple[str, str], list[int]] = {}  # (model, key) -> TOKEN_KINDS counts
        self._cost: dict[tuple[str, str], float] = {}
        self._attempts: dict[tuple[str, str, str], int] = {}
        self._errors: dict[tuple[str, str], int] = {}
        self._cache_hits: dict[tuple[str, str], int] = {}
        self._blocks: dict[str, int] = {}
        self._latency: dict[tuple[str, str], _Histogram] = {}
        self._overhead = _Histogram(len(OVERHEAD_BUCKETS))
        self._ttft: dict[str, _Histogram] = {}
        self.registry = CollectorRegistry()
        self.registry.register(self)
        if breakers is not None or queue_depth is not None or calllog_rejected is not None:
            self.registry.register(_Gauges(breakers, queue_depth, calllog_rejected))

    def observe(self, record: CallRecord) -> None:
        model = record.model or NONE
        api_key = self._api_key(record.api_key_id or NONE)
        stream = "true" if record.stream else "false"
        key = (
            model,
            self._requested_model(record.requested_model or NONE),
            api_key,
            record.status,
            record.api_format,
            stream,
        )
        self._requests[key] = self._requests.get(key, 0) + 1

        per_key = (model, api_key)
        tokens = self._tokens.get(per_key)
        if tokens is None:
            # Every kind from the first call, at zero: a series that first appears already
            # non-zero loses that first increment in rate().
            tokens = self._tokens[per_key] = [0, 0, 0, 0, 0]
            self._cost[per_key] = 0.0
        tokens[0] += record.prompt_tokens
        tokens[1] += record.completion_tokens
        tokens[2] += record.cached_tokens
        tokens[3] += record.cache_write_tokens
        tokens[4] += record.reasoning_tokens
        if record.cost_usd is not None:
            self._cost[per_key] += float(record.cost_usd)  # float() of the Decimal's text: the same double

        latency = self._latency.get((model, stream))
        if latency is None:
            latency = self._latency[(model, stream)] = _Histogram(len(LATENCY_BUCKETS))
        _add(latency, LATENCY_BUCKETS, record.latency_ms / 1000)
        _add(self._overhead, OVERHEAD_BUCKETS, record.overhead_ms / 1000)
        if record.stream and record.ttft_ms is not None:
            ttft = self._ttft.get(model)
            if ttft is None:
                ttft = self._ttft[model] = _Histogram(len(TTFT_BUCKETS))
            _add(ttft, TTFT_BUCKETS, record.ttft_ms / 1000)

        for attempt in record.attempts:
            akey = (attempt.model, attempt.deployment, attempt.outcome)
            self._attempts[akey] = self._attempts.get(akey, 0) + 1
            if attempt.outcome != "success":
                ekey = (attempt.deployment, attempt.outcome.removeprefix("error:"))
                self._errors[ekey] = self._errors.get(ekey, 0) + 1

        extra = record.extra
        if not extra and record.status != "cache_hit" and record.status != "filtered":
            return
        cache = extra.get("cache") if extra else None
        if record.status == "cache_hit" or cache in ("hit", "semantic-hit"):
            ckey = (model, "semantic" if cache == "semantic-hit" else "exact")
            self._cache_hits[ckey] = self._cache_hits.get(ckey, 0) + 1
        blocked = False
        for verdict in (extra.get("guardrails") if extra else None) or ():
            if isinstance(verdict, dict) and verdict.get("verdict") == "block":
                name = str(verdict.get("name") or "unknown")
                self._blocks[name] = self._blocks.get(name, 0) + 1
                blocked = True
        if record.status == "filtered" and not blocked:  # filtered, with no verdict naming by whom
            self._blocks["unknown"] = self._blocks.get("unknown", 0) + 1

    # --- scrape time ------------------------------------------------------------------------------

    def describe(self) -> Iterable[Metric]:
        return list(self.collect())

    def collect(self) -> Iterable[Metric]:
        # list(): a snapshot, in case a scrape ever runs off the event loop while calls finish.
        requests = CounterMetricFamily(
            "llmrelay_requests",
            "Client calls, by outcome.",
            labels=["model", "requested_model", "api_key", "status", "api_format", "stream"],
        )
        for labels, n in list(self._requests.items()):
            requests.add_metric(labels, n)
        yield requests
        tokens = CounterMetricFamily(
            "llmrelay_tokens", "Tokens, by kind.", labels=["model", "api_key", "kind"]
        )
        cost = CounterMetricFamily(
            "llmrelay_cost_usd", "Cost of the calls in US dollars.", labels=["model", "api_key"]
        )
        for (model, api_key), counts in list(self._tokens.items()):
            for kind, n in zip(TOKEN_KINDS, counts, strict=True):
                tokens.add_metric([model, api_key, kind], n)
            cost.add_metric([model, api_key], self._cost[(model, api_key)])
        yield tokens
        yield cost
        yield _counter(
            "llmrelay_upstream_attempts",
            "Upstream attempts, by outcome.",
            ["model", "deployment", "outcome"],
            self._attempts,
        )
        yield _counter(
            "llmrelay_upstream_errors",
            "Failed upstream attempts, by error class.",
            ["deployment", "error"],
            self._errors,
        )
        yield _counter(
            "llmrelay_cache_hits", "Calls answered from the cache.", ["model", "kind"], self._cache_hits
        )
        yield _counter(
            "llmrelay_guardrail_blocks",
            "Calls blocked by a guardrail.",
            ["guardrail"],
            {(name,): n for name, n in list(self._blocks.items())},
        )
        latency = HistogramMetricFamily(
            "llmrelay_request_latency_seconds",
            "Whole-call latency as the client saw it (to the last chunk for streams).",
            labels=["model", "stream"],
        )
        for labels, hist in list(self._latency.items()):
            latency.add_metric(labels, hist.family_buckets(LATENCY_BUCKETS), hist.sum)
        yield latency
        overhead = HistogramMetricFamily(
            "llmrelay_gateway_overhead_seconds",
            "Time spent in the gateway itself: latency less time waiting on providers.",
        )
        overhead.add_metric([], self._overhead.family_buckets(OVERHEAD_BUCKETS), self._overhead.sum)
        yield overhead
        ttft = HistogramMetricFamily(
            "llmrelay_time_to_first_token_seconds", "Time to the first streamed token.", labels=["model"]
        )
        for model, hist in list(self._ttft.items()):
            ttft.add_metric([model], hist.family_buckets(TTFT_BUCKETS), hist.sum)
        yield ttft

    def render(self) -> tuple[bytes, str]:
        """The exposition body and its content type, for a /metrics response."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _add(hist: _Histogram, bounds: tuple[float, ...], value: float) -> None:
    hist.counts[bisect_left(bounds, value)] += 1  # the first bucket whose bound is >= value ("le")
    hist.sum += value


def _counter(name: str, doc: str, labels: list[str], counts: dict[Any, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for values, n in list(counts.items()):
        family.add_metric(values, n)
    return family


__all__ = ["BREAKER_STATES", "Metrics"]
