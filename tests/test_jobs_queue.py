"""The job queue's contract on both drivers: SQLite (a file) and PostgreSQL (the machine's real one,
a schema of its own per test), so the two cannot drift apart."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from pathlib import Path

import pytest
import yaml

from llmrelay.jobs.queue import PostgresJobQueue, SqliteJobQueue, new_job, open_queue

from .conftest import free_port, serve_config, stop_process
from .tcp_proxy import TcpProxy
from .test_jobs import api, chat, config, receiver, start_worker, wait  # noqa: F401  (a fixture too)
from .test_postgres_store import database, query, with_query  # noqa: F401  (a fresh database)


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request, tmp_path: Path) -> Path | str:
    return tmp_path / "jobs.db" if request.param == "sqlite" else request.getfixturevalue("database")


async def _open(where: Path | str, schema: str | None):
    if isinstance(where, Path):
        q = SqliteJobQueue(where)
    else:
        q = PostgresJobQueue(with_query(where, search_path=schema))
    await q.open()
    return q


@pytest.fixture
async def two(where: Path | str):
    """Two queues on one database: two processes' (or machines') views of the same jobs."""
    schema = None
    if not isinstance(where, Path):
        schema = f"j_{uuid.uuid4().hex[:12]}"
        await query(where, f"CREATE SCHEMA {schema}")
    a, b = await _open(where, schema), await _open(where, schema)
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


@pytest.fixture
def queue(two):
    return two[0]


async def test_enqueue_get_depth_and_idempotency(queue) -> None:
    job = await queue.enqueue("chat", {"x": 1}, tier="small", owner_key_id="key_a")
    assert job.status == "queued" and job.idempotency_key == job.id and job.attempts == 0
    got = await queue.get(job.id)
    assert (got.payload, got.tier, got.owner_key_id, got.status) == ({"x": 1}, "small", "key_a", "queued")
    first = await queue.enqueue("chat", {"n": 1}, tier="mid", owner_key_id="key_a", idempotency_key="k1")
    again = await queue.enqueue("chat", {"n": 2}, tier="mid", owner_key_id="key_a", idempotency_key="k1")
    other = await queue.enqueue("chat", {"n": 3}, tier="mid", owner_key_id="key_b", idempotency_key="k1")
    assert again.id == first.id and again.payload == {"n": 1}  # the first job, not a second
    assert other.id != first.id  # keys are per owner
    assert await queue.depth() == {"small": 1, "mid": 2}
    stats = await queue.stats()
    assert stats["mid"].depth == 2 and stats["mid"].running == 0 and stats["mid"].oldest_age_s >= 0
    assert await queue.get("job_nope") is None


async def test_claims_by_priority_then_age_within_tiers(queue) -> None:
    low = await queue.enqueue("chat", {}, tier="small")
    high = await queue.enqueue("chat", {}, tier="small", priority=5)
    elsewhere = await queue.enqueue("chat", {}, tier="frontier", priority=9)
    later = await queue.enqueue("chat", {}, tier="small")
    order = [await queue.claim(["small"], worker="w", lease_s=30) for _ in range(4)]
    assert [j.id if j else None for j in order] == [high.id, low.id, later.id, None]
    assert order[0].status == "running" and order[0].attempts == 1 and order[0].worker == "w"
    claimed = await queue.claim(["small", "frontier"], worker="w", lease_s=30)
    assert claimed.id == elsewhere.id
    assert (await queue.stats())["small"].running == 3


async def test_two_claimers_never_share_a_job(two) -> None:
    a, b = two
    jobs = await a.enqueue_many("item", [{"i": i} for i in range(60)], tier="small")

    async def drain(q, name):
        got = []
        while (job := await q.claim(["small"], worker=name, lease_s=30)) is not None:
            got.append(job.id)
            assert await q.finish(job, "succeeded", result={"i": job.payload["i"]})
        return got

    results = await asyncio.gather(drain(a, "a"), drain(a, "a2"), drain(b, "b"), drain(b, "b2"))
    claimed = [jid for r in results for jid in r]
    assert sorted(claimed) == sorted(j.id for j in jobs)  # every one, once
    assert await a.depth() == {}


async def test_an_expired_lease_is_claimed_again_and_the_old_holder_is_fenced(two) -> None:
    a, b = two
    job = await a.enqueue("chat", {}, tier="small", idempotency_key="same-key")
    held = await a.claim(["small"], worker="dead", lease_s=0.2)
    assert await b.claim(["small"], worker="alive", lease_s=30) is None  # leased: not claimable
    assert await b.sweep(max_attempts=3) == 0
    await asyncio.sleep(0.3)
    assert await b.sweep(max_attempts=3) == 1
    again = await b.claim(["small"], worker="alive", lease_s=30)
    assert again.id == job.id and again.attempts == 2 and again.idempotency_key == "same-key"
    assert not await a.heartbeat(held, lease_s=30)  # the dead one's token no longer counts
    assert not await a.finish(held, "succeeded", result={"late": True})
    assert await b.heartbeat(again, lease_s=30)
    assert await b.finish(again, "succeeded", result={"ok": True})
    done = await a.get(job.id)
    assert (done.status, done.result, done.worker) == ("succeeded", {"ok": True}, "alive")


async def test_a_job_whose_workers_keep_dying_fails(queue) -> None:
    job = await queue.enqueue("chat", {}, tier="small")
    for _ in range(2):
        assert await queue.claim(["small"], worker="w", lease_s=0.05)
        await asyncio.sleep(0.1)
        assert await queue.sweep(max_attempts=2) == 1
    failed = await queue.get(job.id)
    assert failed.status == "failed" and failed.error["code"] == "worker_lost"


async def test_cancel_queued_and_running(queue) -> None:
    queued = await queue.enqueue("chat", {}, tier="small")
    assert (await queue.cancel(queued.id)).status == "cancelled"
    assert await queue.claim(["small"], worker="w", lease_s=30) is None
    running = await queue.enqueue("chat", {}, tier="small")
    held = await queue.claim(["small"], worker="w", lease_s=30)
    assert (await queue.cancel(running.id)).status == "cancelled"
    assert not await queue.heartbeat(held, lease_s=30)  # the worker learns it at its next beat
    assert not await queue.finish(held, "succeeded", result={})
    assert (await queue.get(running.id)).status == "cancelled"
    finished = await queue.get(running.id)
    assert (await queue.cancel(finished.id)).status == "cancelled"  # again: unchanged
    assert await queue.cancel("job_nope") is None


async def test_finish_stores_its_follow_up_only_when_it_finishes(queue) -> None:
    job = await queue.enqueue("chat", {}, tier="small")
    held = await queue.claim(["small"], worker="w", lease_s=30)
    await queue.cancel(job.id)
    lost = new_job("webhook", {"job_id": job.id}, tier="webhook", job_id=job.id + ".webhook")
    assert not await queue.finish(held, "succeeded", result={}, follow_up=lost)
    assert await queue.get(lost.id) is None  # rolled back with the refused finish
    job2 = await queue.enqueue("chat", {}, tier="small", idempotency_key="idem")
    held2 = await queue.claim(["small"], worker="w", lease_s=30)
    hook = new_job(
        "webhook", {"job_id": job2.id}, tier="webhook", idempotency_key="idem", job_id=job2.id + ".webhook"
    )
    assert await queue.finish(held2, "failed", error={"message": "x"}, follow_up=hook)
    stored = await queue.get(hook.id)
    assert stored.status == "queued" and stored.idempotency_key == "idem" and stored.tier == "webhook"


async def test_retry_waits_and_release_does_not_count(queue) -> None:
    job = await queue.enqueue("webhook", {}, tier="webhook")
    held = await queue.claim(["webhook"], worker="w", lease_s=30)
    assert await queue.retry(held, delay_s=0.3, error={"message": "HTTP 500"})
    waiting = await queue.get(job.id)
    assert waiting.status == "queued" and waiting.error == {"message": "HTTP 500"}
    assert await queue.claim(["webhook"], worker="w", lease_s=30) is None  # not before its time
    await asyncio.sleep(0.35)
    held = await queue.claim(["webhook"], worker="w", lease_s=30)
    assert held.attempts == 2
    assert await queue.release(held)
    again = await queue.claim(["webhook"], worker="w2", lease_s=30)
    assert again.attempts == 2  # a release gives the claim back


async def test_list_pages_by_owner_and_kind(queue) -> None:
    mine = [await queue.enqueue("chat", {"i": i}, tier="small", owner_key_id="key_a") for i in range(3)]
    await queue.enqueue("chat", {}, tier="small", owner_key_id="key_b")
    await queue.enqueue("webhook", {}, tier="webhook", owner_key_id="key_a")
    page = await queue.list(owner_key_id="key_a", kind="chat", limit=2)
    assert [j.id for j in page] == [mine[2].id, mine[1].id]
    rest = await queue.list(owner_key_id="key_a", kind="chat", limit=2, after=page[-1].id)
    assert [j.id for j in rest] == [mine[0].id]
    assert len(await queue.list(kind="chat")) == 4


async def test_retention_deletes_old_finished_jobs(queue) -> None:
    job = await queue.enqueue("chat", {}, tier="small")
    held = await queue.claim(["small"], worker="w", lease_s=30)
    await queue.finish(held, "succeeded", result={})
    kept = await queue.enqueue("chat", {}, tier="small")
    await asyncio.sleep(0.05)
    await queue.sweep(max_attempts=3, retention_s=0.01)
    assert await queue.get(job.id) is None and await queue.get(kept.id) is not None


def test_open_queue_urls(tmp_path: Path) -> None:
    assert isinstance(open_queue("sqlite:///jobs.db", tmp_path), SqliteJobQueue)
    assert open_queue("sqlite:///jobs.db", tmp_path).path == tmp_path / "jobs.db"
    assert isinstance(open_queue("postgresql://u@127.0.0.1/db", tmp_path), PostgresJobQueue)
    from llmrelay.errors import ConfigError

    with pytest.raises(ConfigError, match="jobs.queue"):
        open_queue("mysql://x", tmp_path)
    assert time.time() > 0


def test_gateway_and_worker_share_a_postgresql_queue(simulator, tmp_path: Path, request) -> None:
    """The distributed queue on the machine's real PostgreSQL: a gateway without workers takes the
    jobs, a ``llmrelay worker`` process runs them and delivers their webhooks."""
    db = request.getfixturevalue("database")  # skipped when there is no PostgreSQL
    hooks = request.getfixturevalue("receiver")
    schema = f"jobs_{uuid.uuid4().hex[:10]}"
    asyncio.run(query(db, f"CREATE SCHEMA {schema}"))
    settings = config(simulator, tmp_path, in_gateway=False, queue=with_query(db, search_path=schema))
    gateway = serve_config(settings, tmp_path)
    gateway.config = tmp_path / "worker.yaml"  # type: ignore[attr-defined]
    gateway.config.write_text(yaml.safe_dump(settings))  # type: ignore[attr-defined]
    try:
        with api(gateway) as client:
            jobs = [
                client.post(
                    "/jobs", json={"request": chat(f"pg {i}"), "webhook": {"url": hooks.url + f"/pg{i}"}}
                ).json()
                for i in range(4)
            ]
            worker = start_worker(gateway, "small", tmp_path / "pg.log")
            try:
                done = [
                    wait(client, j["id"], lambda j: j.get("webhook", {}).get("status") == "delivered")
                    for j in jobs
                ]
            finally:
                worker.send_signal(signal.SIGTERM)
                worker.wait(timeout=15)
        assert [d["result"]["choices"][0]["message"]["content"] for d in done] == [
            f"You said: pg {i}" for i in range(4)
        ]
        assert all(len(hooks.at(f"/pg{i}")) == 1 for i in range(4))
        rows = asyncio.run(query(db, f"SELECT status, count(*) FROM {schema}.jobs GROUP BY status"))
        assert {r["status"]: r["count"] for r in rows} == {"succeeded": 8}  # 4 jobs + 4 deliveries
    finally:
        stop_process(gateway)


def test_a_gateway_started_while_the_job_database_is_down_takes_jobs_once_it_is_back(
    simulator, tmp_path: Path, request
) -> None:
    db = request.getfixturevalue("database")  # skipped when there is no PostgreSQL
    schema = f"jobs_{uuid.uuid4().hex[:10]}"
    asyncio.run(query(db, f"CREATE SCHEMA {schema}"))
    proxy = TcpProxy(5432, free_port())  # not up: refused
    queue = with_query(db, search_path=schema).replace(":5432/", f":{proxy.port}/")
    gateway = serve_config(config(simulator, tmp_path, queue=queue), tmp_path)  # workers in the gateway
    try:
        with api(gateway) as client:
            down = client.post("/jobs", json={"request": chat("while down")})
            assert down.status_code == 503 and down.json()["error"]["code"] == "store_unavailable"
            proxy.up()
            accepted = client.post("/jobs", json={"request": chat("once back")})
            assert accepted.status_code == 202, accepted.text
            done = wait(client, accepted.json()["id"])
        assert done["status"] == "succeeded" and done["result"]["choices"][0]["message"]["content"] == (
            "You said: once back"
        )
    finally:
        stop_process(gateway)
        proxy.close()
    assert "Traceback" not in gateway.log().split("llmrelay gateway on", 1)[0]  # start-up: warnings only
