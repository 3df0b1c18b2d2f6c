"""The key store on a real PostgreSQL (the call log's database when it is PostgreSQL): the same
operations as on SQLite, run against both so the two drivers cannot drift apart."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from llmrelay.config import KeyConfig, KeyFields, Settings
from llmrelay.errors import ConfigError, StoreUnavailable
from llmrelay.keys.hashing import secret_hash
from llmrelay.keys.service import KeyService
from llmrelay.keys.spend import Charge, Ledger, LocalCounters, periods
from llmrelay.keys.store import PostgresKeyStore, SqliteKeyStore

from .conftest import free_port
from .tcp_proxy import TcpProxy
from .test_postgres_store import database, query, with_query  # noqa: F401  (a fresh database)


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request, tmp_path: Path) -> Path | str:
    """A SQLite file, or the module's PostgreSQL database (skipped when there is none)."""
    return tmp_path / "calls.db" if request.param == "sqlite" else request.getfixturevalue("database")


@pytest.fixture
async def store(where: Path | str):
    if isinstance(where, Path):
        s = SqliteKeyStore(where)
    else:  # a schema of its own per test
        schema = f"k_{uuid.uuid4().hex[:12]}"
        await query(where, f"CREATE SCHEMA {schema}")
        s = PostgresKeyStore(with_query(where, search_path=schema))
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def service(store, **settings) -> KeyService:
    return KeyService(
        Settings.from_dict({"server": {"master_key": "sk-master-0123456789"}, **settings}), store
    )


async def test_create_find_rotate_revoke(store) -> None:
    keys = service(store)
    record, secret = await keys.create(
        KeyFields(
            owner="team", models=("m",), rpm=5, budget_monthly_usd=Decimal("12.345"), metadata={"a": "b"}
        )
    )
    found = await keys.resolve(secret)
    assert found == record.key and found.limits.rpm == 5 and found.budget_monthly_usd == Decimal("12.345")
    assert (await store.by_hash(secret_hash(secret))).secret_hash == secret_hash(secret)
    assert await keys.resolve(secret + "x") is None
    assert (await keys.resolve("sk-master-0123456789")).admin

    rotated, new_secret = await keys.rotate(record.key.id)
    assert rotated.key.id == record.key.id and rotated.rotated_at
    assert await keys.resolve(secret) is None and (await keys.resolve(new_secret)).id == record.key.id

    revoked = await keys.revoke(record.key.id)
    assert revoked.revoked_at and await keys.resolve(new_secret) is None
    assert await keys.rotate(record.key.id) is None  # a revoked key stays revoked
    assert [r.key.id for r in await store.list_keys()] == []
    assert [r.key.id for r in await store.list_keys(include_revoked=True)] == [record.key.id]


async def test_config_keys_are_seeded_hashed_and_revoked_when_removed(store) -> None:
    demo = KeyConfig(id="key_demo", secret="sk-llmrelay-demo-limited", owner="demo", rpm=5)
    other = KeyConfig(id="key_other", secret="sk-llmrelay-other-secret", owner="o")
    await store.seed([_rec(demo), _rec(other)])
    await store.seed([_rec(demo.model_copy(update={"rpm": 7}))])  # next start: other removed, demo changed
    active = {r.key.id: r for r in await store.list_keys()}
    assert set(active) == {"key_demo"} and active["key_demo"].key.limits.rpm == 7
    assert active["key_demo"].secret_hash == secret_hash("sk-llmrelay-demo-limited")
    clash = KeyConfig(id="key_clash", secret="sk-llmrelay-demo-limited", owner="x")
    with pytest.raises(ConfigError, match="secret of another key"):
        await store.seed([_rec(demo), _rec(clash)])


async def test_spend_adds_up_exactly(store) -> None:
    await store.add_spend({("key:a", "d:2026-01-01"): 3_600_000, ("key:a", "m:2026-01"): 3_600_000})
    await store.add_spend({("key:a", "d:2026-01-01"): 1, ("key:b", "d:2026-01-02"): 5})
    assert await store.spend(["d:2026-01-01", "m:2026-01"]) == {
        ("key:a", "d:2026-01-01"): 3_600_001,
        ("key:a", "m:2026-01"): 3_600_000,
    }


def _rec(k: KeyConfig):
    from llmrelay.keys.service import config_record

    record = config_record(k)
    assert record.created_at <= time.time()
    return record


async def test_a_database_down_at_start_is_not_an_outage(database) -> None:  # noqa: F811
    """A replica started while PostgreSQL is down: the master key works at once, a virtual key once
    the database is back (503 before, never a 500), a key already seen keeps working through a
    later outage, and budgets count what was spent before the start once they can read it."""
    schema = f"k_{uuid.uuid4().hex[:12]}"
    await query(database, f"CREATE SCHEMA {schema}")
    saved = PostgresKeyStore(with_query(database, search_path=schema))
    await saved.open()
    day, month = periods()
    await saved.add_spend({("key:key_demo", day): 700})  # spent before this start
    await saved.close()

    proxy = TcpProxy(5432, free_port())  # not up yet: refused
    dsn = with_query(database, search_path=schema).replace(":5432/", f":{proxy.port}/")
    demo = KeyConfig(id="key_demo", secret="sk-llmrelay-demo-limited", owner="demo")
    store = PostgresKeyStore(dsn)
    keys = KeyService(
        Settings.from_dict(
            {
                "server": {"master_key": "sk-master-0123456789", "key_cache_ttl_s": 0},
                "keys": [demo.model_dump()],
            }
        ),
        store,
    )
    ledger = Ledger(store, LocalCounters())
    try:
        await keys.start()
        await ledger.start()
        assert (await keys.resolve("sk-master-0123456789")).admin
        with pytest.raises(StoreUnavailable) as down:
            await keys.resolve(demo.secret)
        assert down.value.status == 503 and down.value.code == "key_store_unavailable"
        charge = Charge("key:key_demo", day, None, "demo")
        await ledger.settle([charge], 0, 50)  # a call while the database is down
        await ledger.flush()  # cannot read what was saved: saves nothing either
        assert await ledger.spent("key:key_demo", day) == Decimal(50) / 10**12

        proxy.up()
        assert (await keys.resolve(demo.secret)).id == "key_demo"  # seeded on first need
        await ledger.flush()
        assert await ledger.spent("key:key_demo", day) == Decimal(750) / 10**12
        assert (await store.spend([day]))[("key:key_demo", day)] == 750  # saved once, not twice

        proxy.down()  # again, with the key remembered: it keeps working (the TTL is 0)
        assert (await keys.resolve(demo.secret)).id == "key_demo"
        with pytest.raises(StoreUnavailable):
            await keys.resolve("sk-llmrelay-never-seen")
    finally:
        await ledger.aclose()
        await store.close()
        proxy.close()


async def test_admin_operations_after_a_start_without_the_database(database) -> None:  # noqa: F811
    """Started while PostgreSQL was down, the first thing done once it is back is an admin one:
    it sees the config's keys (the store is opened and seeded first), not an empty store."""
    schema = f"k_{uuid.uuid4().hex[:12]}"
    await query(database, f"CREATE SCHEMA {schema}")
    proxy = TcpProxy(5432, free_port())  # not up yet: refused
    dsn = with_query(database, search_path=schema).replace(":5432/", f":{proxy.port}/")
    demo = KeyConfig(id="key_demo", secret="sk-llmrelay-demo-limited", owner="demo")
    settings = {"server": {"master_key": "sk-master-0123456789"}, "keys": [demo.model_dump()]}
    for operation in ("revoke", "list"):
        store = PostgresKeyStore(dsn)
        keys = KeyService(Settings.from_dict(settings), store)
        try:
            proxy.down()
            await keys.start()
            proxy.up()
            if operation == "revoke":
                revoked = await keys.revoke("key_demo")
                assert revoked is not None and not revoked.active
            else:
                store = await keys.opened_store()
                assert [r.key.id for r in await store.list_keys(include_revoked=True)] == ["key_demo"]
        finally:
            await store.close()
    proxy.close()
