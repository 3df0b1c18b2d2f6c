"""The SQLite call store: every field back as written, idempotent writes, queries, exact totals."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from llmrelay.observability.migrations import TABLE, Migrations, apply_sqlite
from llmrelay.observability.records import AttemptRecord, CallRecord
from llmrelay.observability.sqlite_store import _CALL_COLUMNS, MIGRATIONS, SqliteCallStore, percentile

from .factories import call_record

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
DAY = 86_400.0


def record(n: int, **changes: Any) -> CallRecord:
    return call_record(
        **{
            "id": f"req_{n:08d}",
            "started_at": T0 + n,
            "ended_at": T0 + n + 0.25,
            "api_key_id": "key_aaa",
            "end_user": "alice",
            "requested_model": "gpt-4o-mini",
            "model": "gpt-4o-mini",
            "provider": "openai",
            "upstream_model": "gpt-4o-mini-2024-07-18",
            "cost_usd": "0.000015",
            "latency_ms": 250.0,
            "upstream_ms": 240.0,
            "overhead_ms": 10.0,
            "attempts": [],
            **changes,
        }
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteCallStore]:
    s = SqliteCallStore(tmp_path / "calls.db")
    await s.open()
    yield s
    await s.close()


def test_every_scalar_field_has_a_column() -> None:
    scalars = [f.name for f in dataclasses.fields(CallRecord) if f.name != "attempts"]
    assert sorted(scalars) == sorted(_CALL_COLUMNS)


async def test_round_trip_of_every_field(store: SqliteCallStore) -> None:
    full = record(
        1,
        api_format="anthropic",
        stream=True,
        status="error:UpstreamTimeout",
        error_message="upstream timed out after 30s",
        cached_tokens=7,
        cache_write_tokens=3,
        reasoning_tokens=2,
        cost_usd="0.000123456789012345678901234567890",  # more digits than a float or Decimal's 28
        cost_exact=False,
        ttft_ms=12.5,
        attempts=[
            AttemptRecord(
                1, "gpt-4o-mini", "openai/gpt-4o-mini", "error:UpstreamTimeout", None, 30000.0, 0.0
            ),
            AttemptRecord(2, "sonnet", "anthropic/claude-sonnet-4-5", "success", 200, 812.5, 120.0),
        ],
        extra={"route": {"rule": "cheap", "tags": ["a", "b"]}, "cache": "miss", "n": 3, "ok": True},
        request_body={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "héllo ;'\""}]},
        response_body={"choices": [{"message": {"content": "hi"}}], "usage": None},
    )
    bare = record(
        2, api_key_id=None, end_user=None, model=None, provider=None, upstream_model=None, cost_usd=None
    )
    await store.write([full, bare])

    assert await store.get(full.id) == full
    got = await store.get(bare.id)
    assert got == bare
    assert got is not None and got.request_body is None and got.response_body is None and got.extra == {}
    assert await store.get("req_missing") is None


async def test_json_of_odd_extra_values(store: SqliteCallStore) -> None:
    from decimal import Decimal

    r = record(1, extra={"price": Decimal("0.10"), "ids": {2, 1}, 5: "int key"}, request_body=["a", 1])
    await store.write([r])
    got = await store.get(r.id)
    assert got is not None
    assert got.extra == {"price": "0.10", "ids": [1, 2], "5": "int key"}
    assert got.request_body == ["a", 1]


async def test_rewriting_a_record_does_not_duplicate_it(store: SqliteCallStore) -> None:
    attempts = [AttemptRecord(1, "m", "p/m", "success", 200, 10.0, 0.0)]
    first = [record(n, attempts=attempts) for n in range(5)]
    await store.write(first)
    # Replayed after a crash: same ids, possibly alongside new ones.
    await store.write(first + [record(5)])
    await store.write(first[:2])
    recent = await store.recent(limit=100)
    assert [r.id for r in recent] == [record(n).id for n in reversed(range(6))]
    assert all(len(r.attempts) == 1 for r in recent[1:])
    totals = await store.totals(by="model")
    assert totals[0]["requests"] == 6


async def test_recent_order_and_filters(store: SqliteCallStore) -> None:
    await store.write(
        [
            record(1, model="a", status="success"),
            record(2, model="b", status="error:UpstreamTimeout", api_key_id="key_bbb"),
            record(3, model="a", status="error:RateLimited"),
            record(4, model="b", status="cache_hit"),
            record(5, model="a", status="errors_are_not_a_prefix_match"),
            record(6, model="a", status="filtered", started_at=T0 + 3),  # same second as 3: id breaks the tie
        ]
    )

    def ids(records: list[CallRecord]) -> list[int]:
        return [int(r.id.removeprefix("req_")) for r in records]

    assert ids(await store.recent()) == [5, 4, 6, 3, 2, 1]
    assert ids(await store.recent(limit=2)) == [5, 4]
    assert ids(await store.recent(limit=0)) == []
    assert ids(await store.recent(since=T0 + 3)) == [5, 4, 6, 3]
    assert ids(await store.recent(model="a")) == [5, 6, 3, 1]
    assert ids(await store.recent(api_key_id="key_bbb")) == [2]
    assert ids(await store.recent(status="error")) == [3, 2]
    assert ids(await store.recent(status="error:RateLimited")) == [3]
    assert ids(await store.recent(status="cache_hit")) == [4]
    assert ids(await store.recent(model="a", status="error", since=T0 + 2)) == [3]


async def test_recent_brings_each_calls_attempts(store: SqliteCallStore) -> None:
    def attempts(n: int) -> list[AttemptRecord]:
        return [AttemptRecord(i, f"m{i}", f"d{i}", "success", 200, float(i), 0.0) for i in range(1, n + 1)]

    await store.write([record(n, attempts=attempts(n % 4)) for n in range(1, 40)])
    page = await store.recent(limit=30)
    assert len(page) == 30
    for r in page:
        assert r.attempts == attempts(int(r.id.removeprefix("req_")) % 4)


async def test_totals_sum_costs_exactly(store: SqliteCallStore) -> None:
    await store.write(
        [
            record(1, cost_usd="0.1"),
            record(2, cost_usd="0.2"),
            record(3, cost_usd="0.3"),
            record(4, cost_usd=None),  # unpriced: counted, costs nothing
        ]
    )
    [row] = await store.totals(by="model")
    assert row["cost_usd"] == "0.6"  # float addition gives 0.6000000000000001
    assert row["requests"] == 4

    await store.write(
        [record(10 + n, model="tiny", cost_usd="0.000000000000000000000000001") for n in range(3)]
    )
    tiny = {r["group"]: r for r in await store.totals(by="model")}["tiny"]
    assert tiny["cost_usd"] == "3E-27"


async def test_totals_by_each_group(store: SqliteCallStore) -> None:
    await store.write(
        [
            record(1, model="a", api_key_id="k1", end_user="u1", cost_usd="1.5", prompt_tokens=100),
            record(2, model="a", api_key_id="k2", end_user="u1", cost_usd="0.5", status="error:Timeout"),
            record(3, model="b", api_key_id="k1", end_user=None, cost_usd="3", status="cache_hit"),
            record(4, model=None, api_key_id=None, end_user="u2", cost_usd=None, status="filtered"),
            record(5, model="b", api_key_id="k2", end_user="u2", cost_usd="0.25", started_at=T0 + DAY),
        ]
    )
    by_model = await store.totals(by="model")
    assert [(r["group"], r["requests"], r["errors"], r["cost_usd"]) for r in by_model] == [
        ("b", 2, 0, "3.25"),
        ("a", 2, 1, "2.0"),
        (None, 1, 1, "0"),
    ]
    assert by_model[1]["prompt_tokens"] == 110 and by_model[1]["completion_tokens"] == 10

    assert [(r["group"], r["cost_usd"]) for r in await store.totals(by="key")] == [
        ("k1", "4.5"),
        ("k2", "0.75"),
        (None, "0"),
    ]
    assert [(r["group"], r["requests"]) for r in await store.totals(by="user")] == [
        (None, 1),
        ("u1", 2),
        ("u2", 2),
    ]
    assert [(r["group"], r["requests"], r["errors"]) for r in await store.totals(by="status")] == [
        ("cache_hit", 1, 0),
        ("success", 2, 0),
        ("error:Timeout", 1, 1),
        ("filtered", 1, 1),
    ]
    by_day = await store.totals(by="day")
    assert [(r["group"], r["requests"], r["cost_usd"]) for r in by_day] == [
        ("2023-11-14", 4, "5.0"),
        ("2023-11-15", 1, "0.25"),
    ]
    assert [r["group"] for r in await store.totals(by="day", since=T0 + 10)] == ["2023-11-15"]
    assert await store.totals(by="model", since=T0 + 2 * DAY) == []
    with pytest.raises(ValueError, match="totals by 'provider'"):
        await store.totals(by="provider")


async def test_day_is_the_utc_date(store: SqliteCallStore) -> None:
    midnight = 1_700_006_400.0  # 2023-11-15T00:00:00Z
    await store.write([record(1, started_at=midnight - 0.5), record(2, started_at=midnight)])
    assert [r["group"] for r in await store.totals(by="day")] == ["2023-11-14", "2023-11-15"]


async def test_latency_percentiles(store: SqliteCallStore) -> None:
    await store.write([record(n, latency_ms=float(n)) for n in range(1, 101)])  # 1..100 ms
    [row] = await store.totals(by="model")
    assert row["latency_p50_ms"] == pytest.approx(50.5)
    assert row["latency_p95_ms"] == pytest.approx(95.05)

    assert percentile([7.0], 0.95) == 7.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 1.0) == 4.0


async def test_prune(store: SqliteCallStore) -> None:
    attempts = [AttemptRecord(1, "m", "d", "success", 200, 1.0, 0.0)]
    await store.write([record(n, attempts=attempts) for n in range(10)])
    assert await store.prune(T0 + 4) == 4
    assert await store.prune(T0 + 4) == 0
    assert [r.id for r in await store.recent(limit=100)][-1] == record(4).id
    assert await store.get(record(0).id) is None
    await store.write([record(0, attempts=attempts)])  # the id is free again; no stale attempts left
    got = await store.get(record(0).id)
    assert got is not None and got.attempts == attempts


async def test_prune_in_several_chunks(store: SqliteCallStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("llmrelay.observability.sqlite_store._PRUNE_CHUNK", 3)
    await store.write([record(n) for n in range(20)])
    assert await store.prune(T0 + 10) == 10
    assert len(await store.recent(limit=100)) == 10


async def test_reopened_file_keeps_data_and_migrates_once(tmp_path: Path) -> None:
    path = tmp_path / "deeper" / "calls.db"  # the directory is created
    store = SqliteCallStore(path)
    await store.open()
    await store.write([record(1, attempts=[AttemptRecord(1, "m", "d", "success", 200, 1.0, 0.0)])])
    await store.close()
    await store.close()  # a second close is harmless

    again = SqliteCallStore(path)
    await again.open()
    await again.open()  # so is a second open
    try:
        got = await again.get(record(1).id)
        assert got is not None and len(got.attempts) == 1
    finally:
        await again.close()

    with sqlite3.connect(path) as conn:
        applied = [name for (name,) in conn.execute(f"SELECT name FROM {TABLE} ORDER BY name")]
        assert applied == MIGRATIONS.names
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()


async def test_a_closed_store_refuses_work(tmp_path: Path) -> None:
    store = SqliteCallStore(tmp_path / "calls.db")
    with pytest.raises(RuntimeError, match="not open"):
        await store.get("x")
    await store.open()
    await store.close()
    with pytest.raises(RuntimeError, match="not open"):
        await store.write([record(1)])


async def test_concurrent_writes_from_two_tasks(store: SqliteCallStore) -> None:
    async def writer(start: int) -> None:
        for batch in range(10):
            base = start + batch * 50
            await store.write([record(base + i) for i in range(50)])

    await asyncio.gather(writer(0), writer(100_000))
    assert len(await store.recent(limit=10_000)) == 1_000


async def test_the_event_loop_thread_never_touches_the_connection(tmp_path: Path) -> None:
    store = SqliteCallStore(tmp_path / "calls.db")
    threads: set[str] = set()
    original = store._write

    def spy(records: list[CallRecord]) -> None:
        threads.add(threading.current_thread().name)
        original(records)

    store._write = spy  # type: ignore[method-assign]
    await store.open()
    try:
        await asyncio.gather(*(store.write([record(n)]) for n in range(5)))
    finally:
        await store.close()
    assert len(threads) == 1 and threads != {threading.current_thread().name}


# The migrations helper on its own.


def test_migrations_apply_in_order_once(tmp_path: Path) -> None:
    ran: list[str] = []
    migrations = Migrations("sqlite", [("001_t", "CREATE TABLE t (x TEXT); INSERT INTO t VALUES ('a;b');")])

    @migrations.step("002_backfill")
    def backfill(conn: sqlite3.Connection) -> None:
        ran.append("002")
        conn.execute("INSERT INTO t VALUES ('c')")

    conn = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    try:
        assert apply_sqlite(conn, migrations) == ["001_t", "002_backfill"]
        assert apply_sqlite(conn, migrations) == []
        assert ran == ["002"]
        assert [x for (x,) in conn.execute("SELECT x FROM t ORDER BY x")] == ["a;b", "c"]

        migrations.add("003_more", "ALTER TABLE t ADD COLUMN y INTEGER")
        assert apply_sqlite(conn, migrations) == ["003_more"]
        assert migrations.pending({"001_t"}) == list(migrations)[1:]
    finally:
        conn.close()


def test_a_failed_migration_changes_nothing(tmp_path: Path) -> None:
    migrations = Migrations(
        "sqlite", [("001_bad", "CREATE TABLE t (x TEXT); INSERT INTO nowhere VALUES (1)")]
    )
    conn = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    try:
        with pytest.raises(sqlite3.OperationalError, match="no such table: nowhere"):
            apply_sqlite(conn, migrations)
        assert not conn.in_transaction
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 't'").fetchone() is None
        assert conn.execute(f"SELECT COUNT(*) FROM {TABLE}").fetchone() == (0,)
    finally:
        conn.close()


def test_migration_names_are_unique_and_dialects_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="already defined"):
        Migrations("sqlite", [("001", "SELECT 1"), ("001", "SELECT 2")])
    conn = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    try:
        with pytest.raises(ValueError, match="postgresql"):
            apply_sqlite(conn, Migrations("postgresql"))
    finally:
        conn.close()
