"""What the limits and the queue export to Prometheus: counters kept as plain ints on the hot path,
and the queue gauges (depth, oldest wait per deployment: the scaling signal) read at scrape time.

Registered on the gateway's own registry (observability/metrics.py) when metrics are on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)


@dataclass(slots=True)
class QueueView:
    """One deployment's queue at scrape time."""

    deployment: str
    depth: int
    oldest_wait_s: float
    in_flight: int


@dataclass(slots=True)
class LimitStats:
    rejected: dict[str, int] = field(default_factory=dict)  # scope kind (key, user, model) -> 429s
    queue_timeouts: dict[str, int] = field(default_factory=dict)  # deployment -> waits that ran out
    backend_errors: int = 0  # Redis calls that failed (the check was skipped or refused)

    def reject(self, scope_kind: str) -> None:
        self.rejected[scope_kind] = self.rejected.get(scope_kind, 0) + 1

    def timed_out(self, deployment: str) -> None:
        self.queue_timeouts[deployment] = self.queue_timeouts.get(deployment, 0) + 1


class LimitsCollector(Collector):
    def __init__(self, stats: LimitStats, queues: Callable[[], Iterable[QueueView]] | None) -> None:
        self.stats = stats
        self.queues = queues

    def describe(self) -> Iterable[Metric]:
        return [family for family in self._families()]

    def collect(self) -> Iterable[Metric]:
        families = self._families()
        rejected, timeouts, errors = families[:3]
        for scope, n in list(self.stats.rejected.items()):
            rejected.add_metric([scope], n)
        for deployment, n in list(self.stats.queue_timeouts.items()):
            timeouts.add_metric([deployment], n)
        errors.add_metric([], self.stats.backend_errors)
        if self.queues is not None:
            depth, oldest, in_flight = families[3:]
            try:
                for view in self.queues():
                    depth.add_metric([view.deployment], view.depth)
                    oldest.add_metric([view.deployment], view.oldest_wait_s)
                    in_flight.add_metric([view.deployment], view.in_flight)
            except Exception:  # one failing source must not fail the whole scrape
                log.exception("Reading the queues for metrics failed")
        return families

    def _families(self) -> list[Metric]:
        families: list[Metric] = [
            CounterMetricFamily(
                "llmrelay_ratelimit_rejections",
                "Requests refused (429) by a rate limit, by scope.",
                labels=["scope"],
            ),
            CounterMetricFamily(
                "llmrelay_queue_timeouts",
                "Requests that waited for a deployment past the queue's max_wait_s.",
                labels=["deployment"],
            ),
            CounterMetricFamily(
                "llmrelay_ratelimit_backend_errors",
                "Rate-limit checks the shared store (Redis) could not answer.",
            ),
        ]
        if self.queues is not None:
            families += [
                GaugeMetricFamily(
                    "llmrelay_queue_depth",
                    "Requests waiting for a deployment (at its concurrency or rate limit).",
                    labels=["deployment"],
                ),
                GaugeMetricFamily(
                    "llmrelay_queue_oldest_wait_seconds",
                    "How long the oldest waiting request has waited.",
                    labels=["deployment"],
                ),
                GaugeMetricFamily(
                    "llmrelay_deployment_in_flight",
                    "Requests in flight on a deployment with a concurrency or rate limit.",
                    labels=["deployment"],
                ),
            ]
        return families
