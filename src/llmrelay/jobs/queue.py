"""The durable job queue: async jobs, batch items and webhook deliveries wait and run from here.

Contract (the batch API builds on these names; keep them stable)::

    job = await queue.enqueue("chat", payload, tier="small", priority=0,
                              owner_key_id="key_...", idempotency_key=None)  # -> Job (queued)
    await queue.get(job.id)          # Job | None
    await queue.cancel(job.id)       # Job | None: queued or running -> cancelled
    await queue.depth()              # {"small": 3, ...}: queued jobs per tier
    await queue.list(owner_key_id=..., kind="chat", limit=20, after=None)

    # workers (jobs/worker.py):
    job = await queue.claim(["small"], worker="host:pid:n", lease_s=30)  # Job | None, status running
    await queue.heartbeat(job, lease_s=30)    # False: the lease is lost (expired, or cancelled)
    await queue.finish(job, "succeeded", result={...}, follow_up=...)    # False when not ours any more
    await queue.retry(job, delay_s=5, error={...})   # back to queued, claimable after the delay
    await queue.release(job)                  # give a claimed job back at once (shutdown)
    await queue.sweep(max_attempts=3)         # expired leases -> queued again (or failed)

    queue = open_queue("sqlite:///jobs.db", directory)   # or postgresql://...

A claim is a lease: ``lease_until`` and a fencing token (``Job.lease``) the worker must present to
heartbeat, finish or retry. A worker killed mid-job (SIGKILL) stops heartbeating; once its lease
expires, ``sweep`` (every worker pool runs it) puts the job back in the queue, and another worker
claims it, with the same id and idempotency key; a late ``finish`` from the old holder is refused.
So a job runs at least once and finishes exactly once. ``attempts`` counts claims; a job whose
lease expired ``max_attempts`` times (it kills its workers) is failed by ``sweep``.

``idempotency_key``: given, a second ``enqueue`` with the same key by the same owner returns the
first job instead of a new one. Not given, it is the job's id. Webhook deliveries carry it.

One implementation of the queries (``JobQueue``) over two databases (``db.py``): SQLite (the embedded default,
one file beside the call log, WAL, writes serialised by SQLite's own lock: ``BEGIN IMMEDIATE``) and
PostgreSQL (claims with ``FOR UPDATE SKIP LOCKED``, so replicas and worker processes on several
machines claim without waiting on each other). Why PostgreSQL rather than Redis streams:
docs/jobs.md.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from ulid import ULID

from ..db import Database, PostgresDatabase, SqliteDatabase, Steps, sqlite_path
from ..observability.migrations import Migrations

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINAL = ("succeeded", "failed", "cancelled")


@dataclass
class Job:
    id: str
    kind: str
    tier: str
    payload: dict[str, Any]
    status: str  # queued | running | succeeded | failed | cancelled
    attempts: int
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    created: float
    updated: float
    idempotency_key: str
    owner_key_id: str | None
    priority: int
    # What the queue keeps besides (read-only for users of the contract):
    run_after: float = 0.0  # a retried job waits until then
    started: float | None = None  # first claimed
    finished: float | None = None
    worker: str | None = None  # who holds (or last held) it
    lease: str | None = field(default=None, repr=False)  # the holder's fencing token
    lease_until: float | None = None

    @property
    def done(self) -> bool:
        return self.status in FINAL


def new_job(
    kind: str,
    payload: dict[str, Any],
    *,
    tier: str,
    priority: int = 0,
    owner_key_id: str | None = None,
    idempotency_key: str | None = None,
    job_id: str | None = None,
    run_after: float = 0.0,
) -> Job:
    """A queued job, not yet stored (``enqueue`` stores one; ``finish`` can store one as its follow-up)."""
    now = time.time()
    jid = job_id or f"job_{ULID()}"
    return Job(
        id=jid,
        kind=kind,
        tier=tier,
        payload=payload,
        status="queued",
        attempts=0,
        result=None,
        error=None,
        created=now,
        updated=now,
        idempotency_key=idempotency_key or jid,
        owner_key_id=owner_key_id,
        priority=priority,
        run_after=run_after,
    )


@dataclass(frozen=True, slots=True)
class TierStats:
    depth: int  # queued
    running: int
    oldest_age_s: float  # of the oldest queued job; 0 when none


# -- the queries -----------------------------------------------------------------------------------

_COLUMNS = (
    "id, kind, tier, payload, status, attempts, result, error, created, updated, idempotency_key,"
    " owner_key_id, priority, run_after, started, finished, worker, lease, lease_until"
)
_N_COLUMNS = _COLUMNS.count(",") + 1
_INSERT = (
    f"INSERT INTO jobs ({_COLUMNS}, dedupe) VALUES ({', '.join('?' * (_N_COLUMNS + 1))})"
    " ON CONFLICT (dedupe) DO NOTHING"
)
_SELECT = f"SELECT {_COLUMNS} FROM jobs"
# The next job of some tiers: highest priority first, then oldest (the order of the jobs_next
# index, so one tier's claim reads one index entry instead of sorting every queued job). ``{tiers}`` and ``{lock}`` are
# filled per call (the placeholders for the tiers; FOR UPDATE SKIP LOCKED on PostgreSQL).
_CLAIM = (
    "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease = ?, lease_until = ?,"
    " worker = ?, updated = ?, started = COALESCE(started, ?)"
    " WHERE id = (SELECT id FROM jobs WHERE status = 'queued' AND tier IN ({tiers}) AND run_after <= ?"
    " ORDER BY priority DESC, created LIMIT 1{lock})"
    f" AND status = 'queued' RETURNING {_COLUMNS}"
)
_HELD = " WHERE id = ? AND lease = ? AND status = 'running'"


def _schema(json_type: str, real: str) -> str:
    return f"""
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        tier TEXT NOT NULL,
        payload {json_type} NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        result {json_type},
        error {json_type},
        created {real} NOT NULL,
        updated {real} NOT NULL,
        idempotency_key TEXT NOT NULL,
        owner_key_id TEXT,
        priority INTEGER NOT NULL,
        run_after {real} NOT NULL,
        started {real},
        finished {real},
        worker TEXT,
        lease TEXT,
        lease_until {real},
        lost INTEGER NOT NULL DEFAULT 0,  -- leases that expired (its worker died)
        dedupe TEXT UNIQUE  -- owner + client idempotency key; NULL when the client gave none
    );
    CREATE INDEX jobs_next ON jobs (status, tier, priority DESC, created);
    CREATE INDEX jobs_owner ON jobs (owner_key_id, kind, id);
    CREATE INDEX jobs_finished ON jobs (finished)
    """


class JobQueue:
    """The queue: its queries, over a ``Database`` (placeholders written ``?``)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        # FOR UPDATE SKIP LOCKED where the database has it (SQLite's write lock serialises claims).
        self._lock_clause = " FOR UPDATE SKIP LOCKED" if db.dialect == "postgresql" else ""

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    # -- submitting --------------------------------------------------------------------------------

    async def enqueue(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        tier: str,
        priority: int = 0,
        owner_key_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        job = new_job(
            kind,
            payload,
            tier=tier,
            priority=priority,
            owner_key_id=owner_key_id,
            idempotency_key=idempotency_key,
        )
        dedupe = _dedupe(owner_key_id, idempotency_key)
        [inserted] = await self.db.transaction([(_INSERT, _row(job, dedupe))], durable=True)
        if inserted or dedupe is None:
            return job
        rows = await self.db.fetch(_SELECT + " WHERE dedupe = ?", (dedupe,))
        return _job(rows[0])  # the job this key already made

    async def enqueue_many(
        self,
        kind: str,
        payloads: Sequence[dict[str, Any]],
        *,
        tier: str,
        priority: int = 0,
        owner_key_id: str | None = None,
    ) -> list[Job]:
        """Many jobs in one transaction (a batch's items)."""
        jobs = [new_job(kind, p, tier=tier, priority=priority, owner_key_id=owner_key_id) for p in payloads]
        if jobs:
            await self.db.transaction([(_INSERT, _row(job, None)) for job in jobs], durable=True)
        return jobs

    # -- reading -----------------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job | None:
        rows = await self.db.fetch(_SELECT + " WHERE id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    async def list(
        self,
        *,
        owner_key_id: str | None = None,
        kind: str | None = None,
        limit: int = 20,
        after: str | None = None,
    ) -> list[Job]:
        """Newest first; ``after``: the last id of the previous page. ``owner_key_id`` None lists
        every owner's (the master key's view)."""
        where, args = [], []
        for column, value in (("owner_key_id", owner_key_id), ("kind", kind)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if after is not None:
            where.append("id < ?")
            args.append(after)
        sql = _SELECT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC LIMIT ?"
        return [_job(row) for row in await self.db.fetch(sql, (*args, limit))]

    async def depth(self) -> dict[str, int]:
        return {tier: s.depth for tier, s in (await self.stats()).items()}

    async def stats(self) -> dict[str, TierStats]:
        """Per tier: queued jobs, running jobs, age of the oldest queued one."""
        rows = await self.db.fetch(
            "SELECT tier, status, COUNT(*), MIN(created) FROM jobs"
            " WHERE status IN ('queued', 'running') GROUP BY tier, status"
        )
        now = time.time()
        found: dict[str, dict[str, tuple[int, float]]] = {}
        for tier, status, count, oldest in rows:
            found.setdefault(tier, {})[status] = (int(count), float(oldest))
        return {
            tier: TierStats(
                depth=by.get("queued", (0, now))[0],
                running=by.get("running", (0, now))[0],
                oldest_age_s=max(0.0, now - by["queued"][1]) if "queued" in by else 0.0,
            )
            for tier, by in found.items()
        }

    # -- changing ----------------------------------------------------------------------------------

    async def cancel(self, job_id: str) -> Job | None:
        """Cancel a queued or running job (its worker notices at its next heartbeat); a finished
        job stays as it is. None if there is no such job."""
        now = time.time()
        await self.db.execute(
            "UPDATE jobs SET status = 'cancelled', updated = ?, finished = ?, lease = NULL"
            " WHERE id = ? AND status IN ('queued', 'running')",
            (now, now, job_id),
        )
        return await self.get(job_id)

    async def claim(self, tiers: Sequence[str], *, worker: str, lease_s: float) -> Job | None:
        if not tiers:
            return None
        now = time.time()
        token = ULID().hex
        sql = _CLAIM.format(tiers=", ".join("?" * len(tiers)), lock=self._lock_clause)
        rows = await self.db.write_fetch(sql, (token, now + lease_s, worker, now, now, *tiers, now))
        return _job(rows[0]) if rows else None

    async def heartbeat(self, job: Job, *, lease_s: float) -> bool:
        until = time.time() + lease_s
        changed = await self.db.execute("UPDATE jobs SET lease_until = ?" + _HELD, (until, job.id, job.lease))
        if changed:
            job.lease_until = until
        return bool(changed)

    async def finish(
        self,
        job: Job,
        status: str,
        *,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        follow_up: Job | None = None,
    ) -> bool:
        """End a claimed job; ``follow_up`` (a webhook delivery) is stored in the same transaction,
        so a crash cannot finish the job and lose its delivery. False when the lease was lost."""
        if status not in FINAL:
            raise ValueError(f"finish() takes a final status, not {status!r}")
        now = time.time()
        steps: Steps = [
            (
                "UPDATE jobs SET status = ?, result = ?, error = ?, updated = ?, finished = ?, lease = NULL"
                + _HELD,
                (status, _dump(result), _dump(error), now, now, job.id, job.lease),
            )
        ]
        if follow_up is not None:
            steps.append((_INSERT, _row(follow_up, None)))
        changed = await self.db.transaction(steps, guarded=True)
        if not changed[0]:
            return False  # (the follow-up was not stored)
        job.status, job.result, job.error, job.finished, job.lease = status, result, error, now, None
        return True

    async def retry(self, job: Job, *, delay_s: float, error: dict[str, Any] | None) -> bool:
        """Back to the queue, claimable in ``delay_s`` (a failed webhook delivery, an upstream 429)."""
        now = time.time()
        changed = await self.db.execute(
            "UPDATE jobs SET status = 'queued', run_after = ?, error = ?, updated = ?, lease = NULL,"
            " lease_until = NULL" + _HELD,
            (now + delay_s, _dump(error), now, job.id, job.lease),
        )
        return bool(changed)

    async def release(self, job: Job) -> bool:
        """Give a claimed job back untouched (a worker shutting down): claimable at once, and
        this claim does not count as an attempt."""
        now = time.time()
        changed = await self.db.execute(
            "UPDATE jobs SET status = 'queued', attempts = attempts - 1, updated = ?, lease = NULL,"
            " lease_until = NULL" + _HELD,
            (now, job.id, job.lease),
        )
        return bool(changed)

    async def sweep(self, *, max_attempts: int, retention_s: float | None = None) -> int:
        """Running jobs whose lease expired (their worker died): back to the queue, or failed once
        that has happened ``max_attempts`` times (the job kills its workers). Finished jobs older than ``retention_s`` are deleted.
        Returns how many jobs were put back or failed."""
        now = time.time()
        lost = {"message": "Its worker stopped (its lease expired) on every attempt.", "type": "api_error",
                "param": None, "code": "worker_lost"}  # fmt: skip
        expired = "status = 'running' AND lease_until < ?"
        steps: Steps = [
            (
                "UPDATE jobs SET status = 'failed', error = ?, updated = ?, finished = ?, lease = NULL"
                f" WHERE {expired} AND lost + 1 >= ?",
                (_dump(lost), now, now, now, max_attempts),
            ),
            (
                "UPDATE jobs SET status = 'queued', lost = lost + 1, lease = NULL, lease_until = NULL, updated = ?"
                f" WHERE {expired}",
                (now, now),
            ),
        ]
        if retention_s is not None:
            steps.append(
                ("DELETE FROM jobs WHERE finished IS NOT NULL AND finished < ?", (now - retention_s,))
            )
        changed = await self.db.transaction(steps)
        return changed[0] + changed[1]


class SqliteJobQueue(JobQueue):
    """One file in WAL mode, its connection on one thread of our own: the event loop never waits on
    the disk. Several processes (the gateway and ``llmrelay worker`` processes on one machine) share
    the file: SQLite's write lock serialises their claims."""

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        # synchronous=NORMAL: no fsync per commit. A power cut (not a killed process) may lose the
        # last commits; FULL would cost an fsync per claim and per finish.
        super().__init__(
            SqliteDatabase(
                self.path,
                migrations=Migrations("sqlite", [("jobs_001", _schema("TEXT", "REAL"))]),
                busy_timeout_s=busy_timeout_s,
                synchronous="NORMAL",
                label="SqliteJobQueue",
            )
        )


class PostgresJobQueue(JobQueue):
    """Jobs in PostgreSQL: claims take the next row with ``FOR UPDATE SKIP LOCKED``, so workers on
    many machines claim different jobs without waiting on each other's row locks."""

    def __init__(self, dsn: str, *, pool_max: int = 8, connect_timeout: float = 10.0) -> None:
        super().__init__(
            PostgresDatabase(
                dsn,
                migrations=[("jobs_0001", _schema("JSONB", "DOUBLE PRECISION"))],
                pool_max=pool_max,
                connect_timeout=connect_timeout,
                init=_json_codecs,
                # Claims, heartbeats and results commit without waiting for the WAL's fsync (~4.5 ms
                # a commit on this machine's disk, bench/job_queue.py): a database crash can only
                # undo the last ones, and an undone claim or result just runs the job again, which
                # at-least-once allows. Submissions wait (``durable``): a 202 means the job is kept.
                server_settings={"synchronous_commit": "off"},
                label="jobs.queue",
            )
        )


async def _json_codecs(conn: Any) -> None:
    # JSONB columns travel as text both ways: we store orjson's text and parse it on the way out.
    await conn.set_type_codec("jsonb", encoder=lambda v: v, decoder=lambda v: v, schema="pg_catalog")


def open_queue(url: str, directory: Path) -> JobQueue:
    """``sqlite:///jobs.db`` (relative paths under ``directory``, the call log's) or ``postgresql://...``."""
    path = sqlite_path(url, directory, setting="jobs.queue")
    return PostgresJobQueue(url) if path is None else SqliteJobQueue(path)


# -- rows ------------------------------------------------------------------------------------------


def _dedupe(owner_key_id: str | None, idempotency_key: str | None) -> str | None:
    return None if idempotency_key is None else f"{owner_key_id or ''}\n{idempotency_key}"


def _dump(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _load(value: Any) -> Any:
    return None if value is None else orjson.loads(value)


def _row(job: Job, dedupe: str | None) -> tuple[Any, ...]:
    return (
        job.id,
        job.kind,
        job.tier,
        _dump(job.payload),
        job.status,
        job.attempts,
        _dump(job.result),
        _dump(job.error),
        job.created,
        job.updated,
        job.idempotency_key,
        job.owner_key_id,
        job.priority,
        job.run_after,
        job.started,
        job.finished,
        job.worker,
        job.lease,
        job.lease_until,
        dedupe,
    )


def _job(row: tuple[Any, ...]) -> Job:
    (jid, kind, tier, payload, status, attempts, result, error, *rest) = row
    return Job(jid, kind, tier, orjson.loads(payload), status, attempts, _load(result), _load(error), *rest)


__all__ = [
    "FINAL",
    "STATUSES",
    "Job",
    "JobQueue",
    "PostgresJobQueue",
    "SqliteJobQueue",
    "TierStats",
    "new_job",
    "open_queue",
]
