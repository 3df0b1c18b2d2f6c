"""Job metrics for Prometheus: queue depth, running jobs and oldest queued age per tier (read from
the queue, so every replica reports the shared queue), and what this process's workers finished.

The gauges come from a snapshot the job service refreshes every second: a scrape is synchronous and
the queue is a database.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .queue import TierStats


class JobStats(Collector):
    def __init__(self) -> None:
        self.tiers: dict[str, TierStats] = {}
        self._finished: dict[tuple[str, str], int] = {}  # (kind, status)
        self._retried: dict[str, int] = {}
        self._deliveries: dict[str, int] = {}  # outcome

    def finished(self, kind: str, status: str) -> None:
        self._finished[(kind, status)] = self._finished.get((kind, status), 0) + 1

    def retried(self, kind: str) -> None:
        self._retried[kind] = self._retried.get(kind, 0) + 1

    def delivery(self, outcome: str) -> None:
        """``delivered``, ``failed`` (an attempt the receiver failed; retried) or ``gave_up``."""
        self._deliveries[outcome] = self._deliveries.get(outcome, 0) + 1

    def describe(self) -> Iterable[Metric]:
        return list(self.collect())

    def collect(self) -> Iterable[Metric]:
        queued = GaugeMetricFamily(
            "llmrelay_jobs_queued", "Jobs waiting in the queue, per tier.", labels=["tier"]
        )
        running = GaugeMetricFamily(
            "llmrelay_jobs_running", "Jobs held by a worker, per tier.", labels=["tier"]
        )
        oldest = GaugeMetricFamily(
            "llmrelay_jobs_oldest_queued_age_seconds",
            "Age of the oldest queued job, per tier.",
            labels=["tier"],
        )
        for tier, stats in sorted(self.tiers.items()):
            queued.add_metric([tier], stats.depth)
            running.add_metric([tier], stats.running)
            oldest.add_metric([tier], stats.oldest_age_s)
        yield queued
        yield running
        yield oldest
        finished = CounterMetricFamily(
            "llmrelay_jobs_finished",
            "Jobs this process's workers finished, by status.",
            labels=["kind", "status"],
        )
        for (kind, status), n in list(self._finished.items()):
            finished.add_metric([kind, status], n)
        yield finished
        retried = CounterMetricFamily("llmrelay_jobs_retried", "Jobs put back to run later.", labels=["kind"])
        for kind, n in list(self._retried.items()):
            retried.add_metric([kind], n)
        yield retried
        deliveries = CounterMetricFamily(
            "llmrelay_webhook_deliveries", "Webhook delivery attempts, by outcome.", labels=["outcome"]
        )
        for outcome, n in list(self._deliveries.items()):
            deliveries.add_metric([outcome], n)
        yield deliveries


__all__ = ["JobStats"]
