"""The PostgreSQL call log through the gateway: the database stopped mid-run and restarted loses
nothing (a TCP proxy in front of the machine's PostgreSQL is what "stops")."""

from __future__ import annotations

import os
import time
import uuid

import httpx
import openai
import orjson
import pytest
import yaml

from llmrelay.observability.records import RejectedRecord

from .conftest import free_port, start_process, stop_process
from .tcp_proxy import TcpProxy

asyncpg = pytest.importorskip("asyncpg")

ADMIN_DSN = os.environ.get("LLMRELAY_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture
async def database():
    try:
        admin = await asyncpg.connect(ADMIN_DSN, timeout=3)
    except (OSError, asyncpg.PostgresError) as exc:
        if os.environ.get("LLMRELAY_REQUIRE_SERVICES") == "1":
            raise
        pytest.skip(f"PostgreSQL not reachable at {ADMIN_DSN}: {exc}")
    name = f"llmrelay_test_{uuid.uuid4().hex[:12]}"
    await admin.execute(f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


async def test_database_down_mid_run_then_back_loses_nothing(simulator, database, tmp_path):
    proxy = TcpProxy(5432, free_port())
    proxy.up()
    server = _gateway_through(proxy, simulator, database, tmp_path)
    ids = []
    try:
        with openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as client:
            call = _asking(client, ids)
            for _ in range(10):
                call()
            proxy.down()  # the database goes away: the gateway must not notice
            for _ in range(15):
                call()
            time.sleep(0.5)
            proxy.up()  # back: the journal is replayed
            for _ in range(5):
                call()
            deadline = time.monotonic() + 30  # the writer retries a down store every <= 5 s
            while time.monotonic() < deadline:
                conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:5432/{database}")
                stored = {r["id"] for r in await conn.fetch("SELECT id FROM calls")}
                await conn.close()
                if set(ids) <= stored:
                    break
                time.sleep(0.2)
    finally:
        stop_process(server)
        proxy.close()
    assert len(ids) == 30 and set(ids) <= stored and len(stored) == 30


async def test_a_gateway_starts_and_serves_while_the_database_is_down(simulator, database, tmp_path):
    # A replica (re)started during a database outage must serve, not refuse to start: records wait
    # in the journal, and the dashboard says the call log is unavailable (503) until it is back.
    proxy = TcpProxy(5432, free_port())  # not up: connections are refused
    server = _gateway_through(proxy, simulator, database, tmp_path, server={"master_key": "sk-admin"})
    admin = {"authorization": "Bearer sk-admin"}
    ids = []
    try:
        with openai.OpenAI(base_url=server.url + "/v1", api_key="sk-admin", max_retries=0) as client:
            call = _asking(client, ids)
            for _ in range(5):
                call()
            down = httpx.get(server.url + "/dashboard/api/recent", headers=admin)
            assert down.status_code == 503, down.text
            assert down.json()["error"]["code"] == "calllog_unavailable"
            assert "records wait in the journal" in down.json()["error"]["message"]
            proxy.up()
            call()
            deadline = time.monotonic() + 30  # the writer retries a down store every <= 5 s
            while time.monotonic() < deadline:
                recent = httpx.get(server.url + "/dashboard/api/recent", headers=admin)
                if recent.status_code == 200 and len(recent.json()["calls"]) == len(ids):
                    break
                time.sleep(0.2)
            assert {c["id"] for c in recent.json()["calls"]} == set(ids)
            proxy.down()  # gone again while the dashboard's connections are open: 503, not 500
            again = httpx.get(server.url + "/dashboard/api/summary", headers=admin)
            assert again.status_code == 503 and again.json()["error"]["code"] == "calllog_unavailable"
            call()
    finally:
        stop_process(server)
        proxy.close()
    assert len(ids) == 7
    log = server.log()
    assert "unexpected error" not in log and "Exception in ASGI application" not in log


def _asking(client: openai.OpenAI, ids: list[str]):
    """A function that makes one call and keeps its request id."""

    def call() -> None:
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HELLO)
        ids.append(raw.headers["x-llmrelay-request-id"])

    return call


def _gateway_through(proxy: TcpProxy, simulator, database: str, tmp_path, **settings):
    """A gateway whose call log's PostgreSQL is reached through ``proxy``."""
    config = {
        **settings,
        "calllog": {
            "directory": str(tmp_path / "home"),
            "store": f"postgresql://postgres@127.0.0.1:{proxy.port}/{database}",
            "flush_interval_s": 0.05,
        },
        "providers": {"oa": {"kind": "openai", "base_url": simulator.url + "/v1"}},
        "models": [{"name": "gpt-4o-mini", "provider": "oa"}],
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return start_process(["serve", "--config", str(path)], free_port(), tmp_path, ready_path="/healthz")


def _line(i: int, **fields) -> bytes:
    from .factories import call_record

    base = orjson.loads(orjson.dumps(call_record(id=f"req_{i:026d}", started_at=1_700_000_000.0 + i)))
    return orjson.dumps({**base, **fields})


async def test_records_postgresql_refuses_are_set_aside_and_a_database_down_keeps_them(database, tmp_path):
    from llmrelay.observability.journal import Appender
    from llmrelay.observability.postgres_store import PostgresCallStore
    from llmrelay.observability.writer import JournalWriter

    home = tmp_path / "home"
    home.mkdir()
    bad = {
        3: _line(3, prompt_tokens=2**40),  # over the 32-bit integer column
        4: _line(4, id="req_\x00nul"),  # text cannot hold NUL
        5: _line(5, started_at=1e20, ended_at=1e20),  # no timestamptz that far out
        90: _line(90, cached_tokens="7"),  # a string where a number goes
        91: _line(91, attempts=[{"n": 1}]),  # an attempt missing its fields
        92: _line(92, region="eu"),  # a field this version does not know
    }
    journal = Appender(home)
    for i in range(100):
        journal.append(bad.get(i, _line(i)) + b"\n")
    proxy = TcpProxy(5432, free_port())
    proxy.up()
    store = PostgresCallStore(f"postgresql://postgres@127.0.0.1:{proxy.port}/{database}")
    await store.open()
    writer = JournalWriter(store, home, batch_size=40, flush_interval_s=0.05)
    try:
        proxy.down()  # down: nothing is written, nothing is set aside, every record waits
        with pytest.raises(Exception) as down:
            await writer.drain()
        assert not isinstance(down.value, RejectedRecord)
        assert journal.uncommitted() == 100 and writer.rejected == 0
        proxy.up()
        assert await writer.drain() == 100
        assert journal.uncommitted() == 0
    finally:
        journal.close()
        await store.close()
        proxy.close()
    conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:5432/{database}")
    try:
        stored = {r["id"] for r in await conn.fetch("SELECT id FROM calls")}
        attempts = await conn.fetchval("SELECT count(*) FROM attempts")
    finally:
        await conn.close()
    assert stored == {f"req_{i:026d}" for i in range(100) if i not in bad} and attempts == 100 - len(bad)
    assert writer.rejected == len(bad)
    assert sorted(b"".join(p.read_bytes() for p in home.glob("rejected-*.jsonl")).splitlines()) == sorted(
        bad.values()
    )


async def test_an_outage_logs_asyncpg_retries_as_one_line(database, caplog):
    """asyncpg retries a lost pool connection in the background, logging a traceback each time:
    through our filter, each retry is one line naming the error."""
    import asyncio
    import logging

    from llmrelay.db import PostgresDatabase

    proxy = TcpProxy(5432, free_port())
    proxy.up()
    db = PostgresDatabase(
        f"postgresql://postgres@127.0.0.1:{proxy.port}/{database}", migrations=[], label="test"
    )
    try:
        await db.open()
        assert await db.fetch("SELECT 1") == [(1,)]
        with caplog.at_level(logging.WARNING, logger="asyncpg.pool"):
            proxy.down()  # the pool's idle connection is cut, and reconnecting is refused
            for _ in range(50):
                retries = [r for r in caplog.records if r.name == "asyncpg.pool"]
                if retries:
                    break
                await asyncio.sleep(0.1)
        assert retries, "asyncpg did not try to restore its pool within 5 s"
        assert retries[0].exc_info is None and "retrying" in retries[0].getMessage()
        assert "Error" in retries[0].getMessage()  # the exception, named on the same line
    finally:
        await db.close()
        proxy.close()
