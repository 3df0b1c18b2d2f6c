"""Worker pools: one per tier, each claiming jobs of its tier and running them, up to its concurrency.

A pool has one claiming loop (idle, it costs one query per ``poll_interval_s``, or wakes at once when
this process enqueues) and runs each claimed job as a task beside a heartbeat that extends the lease
every third of it. A heartbeat that finds the lease gone (the job was cancelled, or the lease expired
and another worker holds it now) cancels the task. A sweeper puts the jobs of dead workers back.

On stop, running jobs are cancelled and released (claimable at once, not counted as an attempt);
a worker killed outright instead leaves its jobs to the sweep, after ``lease_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
from typing import TYPE_CHECKING, Any

from ..db import PostgresUnavailable
from ..errors import GatewayError
from ..providers import openai_format
from .handlers import HANDLERS, JobFailed, RetryLater
from .queue import Job, JobQueue
from .stats import JobStats

if TYPE_CHECKING:
    from ..config import JobsSettings
    from ..relay import Relay

log = logging.getLogger(__name__)

_RETRYABLE = (429, 502, 503, 504)  # worth another try later: rate limits and upstream outages
_IDLE_FIRST_S = 0.05  # an idle pool polls this soon, then backs off to poll_interval_s


class Pool:
    """The workers of one tier."""

    def __init__(self, workers: Workers, tier: str, concurrency: int, name: str) -> None:
        self.workers = workers
        self.tier = tier
        self.slots = asyncio.Semaphore(concurrency)
        self.name = name
        self.wake = asyncio.Event()
        self.running: dict[str, asyncio.Task[None]] = {}

    async def claim_loop(self) -> None:
        w = self.workers
        idle = _IDLE_FIRST_S
        while True:
            await self.slots.acquire()
            try:
                job = await w.queue.claim([self.tier], worker=self.name, lease_s=w.settings.lease_s)
            except Exception as exc:
                self.slots.release()
                if isinstance(exc, PostgresUnavailable):  # an outage: a line, not a traceback a poll
                    log.warning("claiming a %s job failed (%s); retrying", self.tier, exc)
                else:
                    log.exception("claiming a %s job failed; retrying", self.tier)
                await asyncio.sleep(w.settings.poll_interval_s)
                continue
            if job is None:
                self.slots.release()
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), idle)
                idle = min(w.settings.poll_interval_s, idle * 2)
                continue
            idle = _IDLE_FIRST_S
            task = asyncio.create_task(self._hold(job), name=f"job {job.id}")
            self.running[job.id] = task
            task.add_done_callback(lambda _, jid=job.id: self._done(jid))

    def _done(self, job_id: str) -> None:
        self.running.pop(job_id, None)
        self.slots.release()

    async def _hold(self, job: Job) -> None:
        """Run the job while keeping its lease; settle the outcome."""
        w = self.workers
        work = asyncio.ensure_future(_run(w.relay, job))
        lost = False
        try:
            while not work.done():
                await asyncio.wait({work}, timeout=w.settings.lease_s / 3)
                if not work.done() and not await _heartbeat(w.queue, job, w.settings.lease_s):
                    lost = True  # cancelled, or another worker holds it now: stop paying for it
                    work.cancel()
                    with contextlib.suppress(BaseException):
                        await work
        except asyncio.CancelledError:  # this pool is stopping: give the job back
            work.cancel()
            with contextlib.suppress(BaseException):
                await work
            with contextlib.suppress(Exception):
                await w.queue.release(job)
            raise
        if lost:
            return
        try:
            await w.settle(job, work)
        except Exception:
            log.exception("settling job %s failed; its lease will expire and it will run again", job.id)


async def _heartbeat(queue: JobQueue, job: Job, lease_s: float) -> bool:
    try:
        return await queue.heartbeat(job, lease_s=lease_s)
    except Exception:  # the database is away: keep working, the lease may still hold
        log.warning("heartbeat for job %s failed", job.id, exc_info=True)
        return True


async def _run(relay: Relay, job: Job) -> dict[str, Any]:
    handler = HANDLERS.get(job.kind)
    if handler is None:
        raise JobFailed(_error(f"No handler for job kind {job.kind!r} in this worker.", "unknown_job_kind"))
    return await handler(relay, job)


def _error(message: str, code: str, type_: str = "api_error") -> dict[str, Any]:
    return {"message": message, "type": type_, "param": None, "code": code}


class Workers:
    """Pools for some tiers (plus webhook deliveries), with the sweeper, in one process."""

    def __init__(self, relay: Relay, queue: JobQueue, tiers: dict[str, int], stats: JobStats) -> None:
        self.relay = relay
        self.queue = queue
        self.settings: JobsSettings = relay.settings.jobs
        self.stats = stats
        prefix = f"{socket.gethostname()}:{os.getpid()}:{random.getrandbits(24):06x}"
        self.pools = {tier: Pool(self, tier, n, f"{prefix}:{tier}") for tier, n in tiers.items() if n > 0}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for pool in self.pools.values():
            self._tasks.append(asyncio.create_task(pool.claim_loop(), name=f"jobs {pool.tier}"))
        self._tasks.append(asyncio.create_task(self._sweep_loop(), name="jobs sweep"))

    def wake(self, tier: str) -> None:
        pool = self.pools.get(tier)
        if pool is not None:
            pool.wake.set()

    async def stop(self) -> None:
        tasks = self._tasks + [t for p in self.pools.values() for t in p.running.values()]
        self._tasks = []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _sweep_loop(self) -> None:
        retention = self.settings.retention_days
        while True:
            try:
                back = await self.queue.sweep(
                    max_attempts=self.settings.max_attempts,
                    retention_s=retention * 86_400 if retention else None,
                )
                if back:
                    log.warning("%d job(s) of stopped workers were put back in the queue (or failed)", back)
            except PostgresUnavailable as exc:
                log.warning("sweeping the job queue failed (%s); retrying", exc)
            except Exception:
                log.exception("sweeping the job queue failed")
            await asyncio.sleep(min(self.settings.lease_s / 2, 5.0))

    async def settle(self, job: Job, work: asyncio.Future[dict[str, Any]]) -> None:
        """Finish, retry or fail the job by what its handler did."""
        error = work.exception()
        if error is None:
            await self._finish(job, "succeeded", result=work.result())
        elif isinstance(error, RetryLater):
            if await self.queue.retry(job, delay_s=error.delay_s, error=error.error):
                self.stats.retried(job.kind)
        elif isinstance(error, JobFailed):
            await self._finish(job, "failed", error=error.error)
        elif isinstance(error, GatewayError):
            wire = openai_format.error_to_wire(error)["error"]
            if error.status in _RETRYABLE and job.attempts < self.settings.max_attempts:
                delay = self.settings.retry_base_s * 2 ** (job.attempts - 1) * random.uniform(0.5, 1.0)
                if getattr(error, "retry_after", None):
                    delay = max(delay, float(error.retry_after))  # type: ignore[attr-defined]
                if await self.queue.retry(job, delay_s=delay, error=wire):
                    self.stats.retried(job.kind)
            else:
                await self._finish(job, "failed", error=wire)
        else:
            log.error("job %s (%s) raised", job.id, job.kind, exc_info=error)
            await self._finish(
                job,
                "failed",
                error=_error("The job hit an internal error; it has been logged.", "internal_error"),
            )

    async def _finish(self, job: Job, status: str, **outcome: Any) -> None:
        follow_up = self.relay.jobs.follow_up(job)
        if await self.queue.finish(job, status, follow_up=follow_up, **outcome):
            self.stats.finished(job.kind, status)
            if follow_up is not None:
                self.wake(follow_up.tier)


__all__ = ["Pool", "Workers"]


from ..batch import local as _batch_items  # noqa: E402, F401  (registers the "batch_item" handler)
