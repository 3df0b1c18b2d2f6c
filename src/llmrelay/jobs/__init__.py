"""Async jobs, their durable queue, webhook deliveries and worker pools (docs/jobs.md)."""

from .handlers import HANDLERS, JobFailed, RetryLater, register
from .queue import Job, JobQueue, TierStats, new_job, open_queue
from .service import JobService

__all__ = [
    "HANDLERS",
    "Job",
    "JobFailed",
    "JobQueue",
    "JobService",
    "RetryLater",
    "TierStats",
    "new_job",
    "open_queue",
    "register",
]
