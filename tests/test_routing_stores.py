"""Both call stores group by experiment variant and sum what routing saved, read from the records'
``extra`` JSON, exactly; PostgreSQL against the real server (tests/test_postgres_store.py)."""

from __future__ import annotations

import uuid

import pytest

from llmrelay.observability.sqlite_store import SqliteCallStore

from .factories import call_record
from .test_postgres_store import database, dsn  # noqa: F401  (fixtures)


@pytest.fixture
async def sqlite_store(tmp_path):
    store = SqliteCallStore(tmp_path / "calls.db")
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def postgres_store(dsn):  # noqa: F811  (the imported fixture)
    from llmrelay.observability.postgres_store import PostgresCallStore

    store = PostgresCallStore(dsn)
    await store.open()
    yield store
    await store.close()


def routed(variant: str | None, cost: str, saved: str | None, **kw):
    route = {"route": "auto", "tier": "small", "model": "m"}
    if variant is not None:
        route.update(experiment="ab", variant=variant)
    if saved is not None:
        route["saved_usd"] = saved
    return call_record(
        id=f"req_{uuid.uuid4().hex}", started_at=1_710_000_000.0, cost_usd=cost, extra={"route": route}, **kw
    )


async def test_sqlite_totals_by_variant_with_what_routing_saved(sqlite_store):
    await check_totals(sqlite_store)


async def test_postgres_totals_by_variant_with_what_routing_saved(postgres_store):
    await check_totals(postgres_store)


async def check_totals(store):
    await store.write(
        [
            routed("control", "0.1", "0.0000000000000000000000001"),  # tiny: summed exactly
            routed("control", "0.2", "0.3"),
            routed("frontier", "0.5", "0"),
            routed("frontier", "0.5", None, status="cache_hit"),  # a hit: no saving recorded
            routed(None, "0.05", "0.25"),  # routed, outside any experiment
            call_record(id=f"req_{uuid.uuid4().hex}", started_at=1_710_000_000.0, cost_usd="1"),  # not routed
        ]
    )
    rows = {r["group"]: r for r in await store.totals(by="variant")}
    assert {g: (r["requests"], r["cost_usd"], r["saved_usd"]) for g, r in rows.items()} == {
        "ab/control": (2, "0.3", "0.3000000000000000000000001"),
        "ab/frontier": (2, "1.0", "0"),
        None: (2, "1.05", "0.25"),
    }
    by_model = await store.totals(by="model")
    assert [(r["group"], r["saved_usd"]) for r in by_model] == [("m", "0.5500000000000000000000001")]
