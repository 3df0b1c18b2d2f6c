"""``JobService`` (``relay.jobs``): the queue of one ``Relay``, what submitting an async job checks,
how a job looks to its owner, webhook deliveries, and the worker pools of this process.

The queue opens on first use (a library ``Relay`` that never submits a job never opens it); the
gateway opens it at start-up and, with ``jobs.in_gateway``, runs a pool per tier of
``jobs.workers`` plus one for webhook deliveries. ``llmrelay worker`` runs pools without a gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from ..db import unless_down
from ..errors import ConflictError, InvalidRequestError, ModelNotFoundError
from ..keys.model import VirtualKey
from .handlers import JobFailed, RetryLater
from .queue import Job, JobQueue, new_job, open_queue
from .stats import JobStats
from .webhooks import IDEMPOTENCY, Sender, backoff_s, check_target, key_secret, parse_target, root_secret
from .worker import Workers

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from ..relay import Relay

log = logging.getLogger(__name__)

WEBHOOK_TIER = "webhook"  # deliveries have a pool of their own: a slow receiver never holds a model slot
_STATS_EVERY_S = 1.0


def webhook_job_id(job_id: str) -> str:
    """The id of a job's webhook delivery (one per job): its GET finds the delivery by it."""
    return f"{job_id}.webhook"


class JobService:
    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.settings = relay.settings.jobs
        self.stats = JobStats()
        self.queue: JobQueue | None = None
        self.workers: Workers | None = None
        self._open_lock = asyncio.Lock()
        self._sender: Sender | None = None
        self._root: str | None = None
        self._refresher: asyncio.Task[None] | None = None

    @property
    def _directory(self) -> Path:
        return Path(self.relay.settings.calllog.directory).expanduser()

    async def open(self) -> JobQueue:
        async with self._open_lock:
            if self.queue is None:
                queue = open_queue(self.settings.queue, self._directory)
                # PostgreSQL down: its first query opens it; until then claims wait, submissions 503.
                await unless_down(queue.open(), "jobs", "jobs are taken once it is back")
                self.queue = queue
        return self.queue

    async def start_workers(self, tiers: dict[str, int] | None = None, *, webhooks: bool = True) -> Workers:
        """Run pools in this process: ``tiers`` (default ``jobs.workers``), plus webhook deliveries."""
        queue = await self.open()
        if tiers is None:  # the configured pools of the tiers this catalog has models in
            served = {entry.settings.tier for entry in self.relay.catalog}
            tiers = {tier: n for tier, n in self.settings.workers.items() if tier in served}
        pools = dict(tiers)
        if webhooks:
            pools[WEBHOOK_TIER] = self.settings.webhooks.concurrency
        self.workers = Workers(self.relay, queue, pools, self.stats)
        self.workers.start()
        return self.workers

    def register(self, registry: CollectorRegistry) -> None:
        """Job metrics on ``registry``, their gauges refreshed from the queue every second."""
        registry.register(self.stats)
        if self._refresher is None:
            self._refresher = asyncio.create_task(self._refresh_stats(), name="jobs stats")

    async def _refresh_stats(self) -> None:
        while True:
            try:
                if self.queue is not None:  # a library Relay that never submits never opens it
                    self.stats.tiers = await self.queue.stats()
            except Exception:
                log.warning("reading job queue stats failed", exc_info=True)
            await asyncio.sleep(_STATS_EVERY_S)

    async def aclose(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
        if self.workers is not None:
            await self.workers.stop()
            self.workers = None
        if self._sender is not None:
            await self._sender.close()
            self._sender = None
        if self.queue is not None:
            await self.queue.close()
            self.queue = None

    # -- submitting ----------------------------------------------------------------------------------

    def tier_of(self, model: str) -> str:
        """The worker pool a model's jobs wait for: its catalog tier; a route's, its frontier model's."""
        for route in self.relay.settings.routes:
            if model in route.names:
                frontier = next(t for t in route.tiers if t.name == route.frontier_tier)
                model = frontier.model
                break
        try:
            return self.relay.catalog.get(model).settings.tier
        except ModelNotFoundError:
            raise ModelNotFoundError(
                f"The model '{model}' does not exist: GET /v1/models lists the models served.",
                param="request.model",
            ) from None

    async def submit(
        self,
        request: dict[str, Any],
        *,
        webhook: str | None,
        key: VirtualKey | None,
        idempotency_key: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> Job:
        """Enqueue an async chat job (its request already parsed once: ``server/jobs.py``)."""
        model = request["model"]
        tier = self.tier_of(model)
        if webhook is not None:
            await check_target(webhook, self.settings.webhooks.allow)
        payload: dict[str, Any] = {"request": request, "model": model}
        if webhook is not None:
            payload["webhook"] = {"url": webhook}
        if metadata:
            payload["metadata"] = metadata
        queue = await self.open()
        job = await queue.enqueue(
            "chat",
            payload,
            tier=tier,
            owner_key_id=key.id if key is not None else None,
            idempotency_key=idempotency_key,
        )
        if idempotency_key is not None and job.payload != payload:
            # The key names an earlier submission of something else: returning that job would
            # hide that this request was never queued (Stripe's rule for idempotency keys too).
            raise ConflictError(
                f"Idempotency-Key {idempotency_key!r} was already used for a different request "
                f"(job {job.id}); send a new key for a new request.",
                param="idempotency-key",
                code="idempotency_key_reused",
            )
        if self.workers is not None:
            self.workers.wake(tier)
        return job

    def follow_up(self, job: Job) -> Job | None:
        """The webhook delivery of a job that is finishing, when it asked for one."""
        hook = job.payload.get("webhook")
        if not hook:
            return None
        return new_job(
            "webhook",
            {"job_id": job.id, "url": hook["url"]},
            tier=WEBHOOK_TIER,
            owner_key_id=job.owner_key_id,
            idempotency_key=job.idempotency_key,
            job_id=webhook_job_id(job.id),
        )

    # -- reading -------------------------------------------------------------------------------------

    async def view(self, job: Job) -> dict[str, Any]:
        """A job as its owner sees it: ``GET /v1/jobs/{id}`` and the webhook's ``data``."""
        body = _public(job)
        if job.payload.get("webhook"):
            queue = await self.open()
            body["webhook"] = _delivery(
                job.payload["webhook"]["url"], await queue.get(webhook_job_id(job.id))
            )
        return body

    async def owner_key(self, job: Job) -> VirtualKey | None:
        """The key that submitted ``job`` (None for an open gateway's, or a revoked key's), cached
        like the gateway's own lookups (``server.key_cache_ttl_s``)."""
        return await self.relay.keys.by_id(job.owner_key_id)

    # -- webhooks ------------------------------------------------------------------------------------

    def webhook_secret(self, owner_key_id: str | None) -> str:
        if self._root is None:
            self._root = root_secret(self.settings.webhooks.secret, self._directory)
        return key_secret(self._root, owner_key_id)

    async def deliver(self, delivery: Job) -> dict[str, Any]:
        """One attempt at POSTing a finished job to its webhook (the ``webhook`` job handler)."""
        cfg = self.settings.webhooks
        queue = await self.open()
        job = await queue.get(delivery.payload["job_id"])
        if job is None:
            raise JobFailed({"message": "The job was deleted before its webhook was delivered.",
                             "type": "api_error", "param": None, "code": "job_gone"})  # fmt: skip
        event = {
            "id": job.idempotency_key,
            "object": "event",
            "type": f"job.{job.status}",
            "created": int(job.finished or time.time()),
            "data": _public(job),
        }
        body = orjson.dumps(event)
        if self._sender is None:
            self._sender = Sender(cfg.allow, cfg.timeout_s)
        headers = {
            IDEMPOTENCY: job.idempotency_key,
            "x-llmrelay-job-id": job.id,
            "x-llmrelay-delivery-attempt": str(delivery.attempts),
        }
        outcome = await self._sender.post(
            delivery.payload["url"], body, self.webhook_secret(job.owner_key_id), headers
        )
        if outcome.ok:
            self.stats.delivery("delivered")
            return {"status_code": outcome.status, "delivered_at": time.time()}
        error = {
            "message": f"The webhook delivery failed: {outcome.error}.",
            "type": "api_error",
            "param": None,
            "code": "webhook_failed",
            "status_code": outcome.status,
        }
        delay = backoff_s(delivery.attempts, cfg.backoff_base_s, cfg.backoff_max_s)
        if time.time() + delay > delivery.created + cfg.max_elapsed_s:
            self.stats.delivery("gave_up")
            raise JobFailed(error)
        self.stats.delivery("failed")
        raise RetryLater(delay, error)


def check_webhook(value: Any) -> str | None:
    """``webhook`` of a job request: absent, or ``{"url": "https://..."}``."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequestError('webhook must be an object: {"url": "https://..."}.', param="webhook")
    unknown = sorted(set(value) - {"url"})
    if unknown:
        raise InvalidRequestError(f"Unknown field webhook.{unknown[0]}.", param=f"webhook.{unknown[0]}")
    parse_target(value.get("url"))
    return value["url"]


def _public(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "object": "job",
        "status": job.status,
        "model": job.payload.get("model"),
        "created_at": job.created,
        "started_at": job.started,
        "finished_at": job.finished,
        "attempts": job.attempts,
        "idempotency_key": job.idempotency_key,
        "metadata": job.payload.get("metadata") or {},
        "result": job.result,
        "error": job.error,
    }


_DELIVERY_STATUS = {"queued": "pending", "running": "delivering", "succeeded": "delivered"}


def _delivery(url: str, delivery: Job | None) -> dict[str, Any]:
    if delivery is None:  # the job has not finished
        return {"url": url, "status": "waiting", "attempts": 0}
    body: dict[str, Any] = {
        "url": url,
        "status": _DELIVERY_STATUS.get(delivery.status, delivery.status),
        "attempts": delivery.attempts,
        "last_error": delivery.error,
    }
    if delivery.status == "queued" and delivery.attempts:
        body["next_attempt_at"] = delivery.run_after
    if delivery.result:
        body["delivered_at"] = delivery.result.get("delivered_at")
        body["status_code"] = delivery.result.get("status_code")
    return body


__all__ = ["WEBHOOK_TIER", "JobService", "check_webhook", "webhook_job_id"]
