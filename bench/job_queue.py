"""Claims per second of the job queue's backends, with 1 and 2 worker processes (docs/jobs.md,
"Choosing the distributed queue").

Each worker process loops claim -> finish (the queue's whole per-job cost; the job itself does
nothing) until the queue is empty. Backends:

- ``sqlite``: ``SqliteJobQueue`` (the embedded default), one file shared by the processes;
- ``postgresql``: ``PostgresJobQueue`` (``FOR UPDATE SKIP LOCKED``), a fresh schema;
- ``redis-streams``: a minimal prototype of the alternative, for comparison only: the job in a
  hash, its id in a stream per tier, claimed with ``XREADGROUP`` by a consumer group, finished
  with ``HSET`` + ``XACK`` in one pipeline (leases would be ``XAUTOCLAIM``; depth per tier, get,
  cancel and list would need more structures, not built here).

    .venv/bin/python bench/job_queue.py                    # ~1 min; needs PostgreSQL and Redis
    .venv/bin/python bench/job_queue.py --jobs 1000 --backends sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import tempfile
import time
import uuid
from pathlib import Path

from llmrelay.jobs.queue import PostgresJobQueue, SqliteJobQueue

PG_ADMIN = os.environ.get("PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")


def _sql_queue(backend: str, where: str):
    return SqliteJobQueue(Path(where)) if backend == "sqlite" else PostgresJobQueue(where, pool_max=2)


async def _sql_worker(backend: str, where: str, name: str) -> int:
    queue = _sql_queue(backend, where)
    await queue.open()
    done = 0
    try:
        while (job := await queue.claim(["small"], worker=name, lease_s=30)) is not None:
            await queue.finish(job, "succeeded", result={"ok": True})
            done += 1
    finally:
        await queue.close()
    return done


async def _sql_fill(backend: str, where: str, n: int) -> None:
    queue = _sql_queue(backend, where)
    await queue.open()
    try:
        for start in range(0, n, 500):
            await queue.enqueue_many(
                "item", [{"i": i} for i in range(start, min(n, start + 500))], tier="small"
            )
    finally:
        await queue.close()


# -- the Redis streams prototype -----------------------------------------------------------------


async def _redis_fill(prefix: str, n: int) -> None:
    import redis.asyncio as redis

    r = redis.Redis.from_url(REDIS_URL)
    stream = f"{prefix}:stream:small"
    await r.xgroup_create(stream, "workers", id="0", mkstream=True)
    for start in range(0, n, 500):
        pipe = r.pipeline(transaction=False)
        for i in range(start, min(n, start + 500)):
            jid = f"job_{i}"
            pipe.hset(f"{prefix}:job:{jid}", mapping={"status": "queued", "payload": f'{{"i": {i}}}'})
            pipe.xadd(stream, {"id": jid})
        await pipe.execute()
    await r.aclose()


async def _redis_worker(prefix: str, name: str) -> int:
    import redis.asyncio as redis

    r = redis.Redis.from_url(REDIS_URL)
    stream = f"{prefix}:stream:small"
    done = 0
    while True:
        got = await r.xreadgroup("workers", name, {stream: ">"}, count=1)
        if not got:
            break
        [(_, [(entry, fields)])] = got
        jid = fields[b"id"].decode()
        await r.hset(f"{prefix}:job:{jid}", mapping={"status": "running", "worker": name})
        pipe = r.pipeline(transaction=True)
        pipe.hset(f"{prefix}:job:{jid}", mapping={"status": "succeeded", "result": '{"ok": true}'})
        pipe.xack(stream, "workers", entry)
        await pipe.execute()
        done += 1
    await r.aclose()
    return done


async def _redis_clean(prefix: str) -> None:
    import redis.asyncio as redis

    r = redis.Redis.from_url(REDIS_URL)
    keys = [k async for k in r.scan_iter(f"{prefix}:*", count=1000)]
    for i in range(0, len(keys), 1000):
        await r.delete(*keys[i : i + 1000])
    await r.aclose()


# -- running -------------------------------------------------------------------------------------


def _work(backend: str, where: str, name: str, out: mp.Queue) -> None:
    if backend == "redis-streams":
        out.put(asyncio.run(_redis_worker(where, name)))
    else:
        out.put(asyncio.run(_sql_worker(backend, where, name)))


async def _pg_schema() -> tuple[str, str]:
    import asyncpg

    schema = f"bench_jobs_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(PG_ADMIN)
    await conn.execute(f"CREATE SCHEMA {schema}")
    await conn.close()
    sep = "&" if "?" in PG_ADMIN else "?"
    return schema, f"{PG_ADMIN}{sep}options=-c%20search_path%3D{schema}"


async def _pg_drop(schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN)
    await conn.execute(f"DROP SCHEMA {schema} CASCADE")
    await conn.close()


def run(backend: str, workers: int, n: int) -> float:
    """Claims (claim + finish) per second with ``workers`` processes draining ``n`` jobs."""
    tmp = tempfile.mkdtemp(prefix="bench-jobs-")
    schema = None
    if backend == "sqlite":
        where = str(Path(tmp) / "jobs.db")
        asyncio.run(_sql_fill(backend, where, n))
    elif backend == "postgresql":
        schema, where = asyncio.run(_pg_schema())
        asyncio.run(_sql_fill(backend, where, n))
    else:
        where = f"bench-jobs:{uuid.uuid4().hex[:8]}"
        asyncio.run(_redis_fill(where, n))
    out: mp.Queue = mp.Queue()
    procs = [mp.Process(target=_work, args=(backend, where, f"w{i}", out)) for i in range(workers)]
    started = time.perf_counter()
    for p in procs:
        p.start()
    counts = [out.get() for _ in procs]
    elapsed = time.perf_counter() - started
    for p in procs:
        p.join()
    if sum(counts) != n:
        raise SystemExit(f"{backend}: {sum(counts)} jobs finished of {n}")
    if schema:
        asyncio.run(_pg_drop(schema))
    if backend == "redis-streams":
        asyncio.run(_redis_clean(where))
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql", "redis-streams"])
    args = parser.parse_args()
    print(f"{args.jobs} jobs, claim + finish per job; process start-up included in the time")
    print(f"{'backend':<15} {'1 worker':>12} {'2 workers':>12}")
    for backend in args.backends:
        one, two = run(backend, 1, args.jobs), run(backend, 2, args.jobs)
        print(f"{backend:<15} {one:>10.0f}/s {two:>10.0f}/s")


if __name__ == "__main__":
    main()
