"""The PostgreSQL call store against a real PostgreSQL: a database of its own for this module (dropped at
the end), a schema of its own for each test. Sessions run in a non-UTC TimeZone on purpose, so a day
taken from the session's clock instead of UTC shows up as a failure."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

REQUIRE = os.environ.get("LLMRELAY_REQUIRE_SERVICES") == "1"
ADMIN_DSN = os.environ.get("LLMRELAY_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")

if not REQUIRE:
    pytest.importorskip("asyncpg", reason="asyncpg is not installed (pip install -e '.[dev]')")

import asyncpg  # noqa: E402

from llmrelay.observability.postgres_store import (  # noqa: E402
    CALL_COLUMNS,
    MIGRATIONS,
    PostgresCallStore,
    PostgresUnavailable,
    apply_migrations,
)
from llmrelay.observability.records import AttemptRecord, CallRecord  # noqa: E402

from .factories import call_record  # noqa: E402  (after the importorskip above)


def ts(day: str, clock: str = "12:00:00") -> float:
    return datetime.fromisoformat(f"{day}T{clock}+00:00").timestamp()


def record(i: int, *, started_at: float | None = None, **kw) -> CallRecord:
    start = started_at if started_at is not None else ts("2024-03-10") + i
    return call_record(**{"id": f"req_{uuid.uuid4().hex}", "started_at": start, "api_key_id": "key_a", **kw})


def with_query(dsn: str, *, path: str | None = None, **params: str) -> str:
    parts = urlsplit(dsn)
    query = urlencode([*parse_qsl(parts.query), *params.items()])
    return urlunsplit(parts._replace(path=path if path is not None else parts.path, query=query))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A fresh database for the module (sync, so it outlives each test's event loop)."""
    name = f"llmrelay_test_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(ADMIN_DSN, timeout=3)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        asyncio.run(admin(f"CREATE DATABASE {name}"))
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        reason = f"no usable PostgreSQL at {ADMIN_DSN} (set LLMRELAY_TEST_POSTGRES_DSN): {exc}"
        if REQUIRE:
            pytest.fail(f"LLMRELAY_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(reason)
    try:
        yield with_query(ADMIN_DSN, path=f"/{name}")
    finally:
        asyncio.run(admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
async def dsn(database: str) -> str:
    """A fresh schema of the module's database, first on the search path, in a UTC+05:30 session."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(database)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
    finally:
        await conn.close()
    return with_query(database, search_path=schema, timezone="Asia/Kolkata")


@pytest.fixture
async def store(dsn: str) -> AsyncIterator[PostgresCallStore]:
    store = PostgresCallStore(dsn)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def query(dsn: str, sql: str, *args) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def partitions(dsn: str, table: str) -> list[str]:
    rows = await query(
        dsn,
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = $1::regclass ORDER BY 1",
        table,
    )
    return [r["relname"] for r in rows]


# -- round trip ----------------------------------------------------------------------------------


async def test_every_field_round_trips(store: PostgresCallStore, dsn: str) -> None:
    full = record(
        1,
        started_at=1_709_900_000.123456,
        ended_at=1_709_900_001.654321,
        api_format="anthropic",
        api_key_id="key_0123456789ab",
        end_user="user-ü",
        requested_model="claude-x",
        model="claude-x-fallback",
        provider="anthropic",
        upstream_model="claude-x-2025",
        stream=True,
        status="error:UpstreamTimeout",
        error_message="timed out after 30 s",
        prompt_tokens=1234,
        completion_tokens=567,
        cached_tokens=89,
        cache_write_tokens=12,
        reasoning_tokens=34,
        cost_usd="0.000123450",  # trailing zero kept: exact, digit for digit
        cost_exact=False,
        latency_ms=1530.864,
        ttft_ms=212.5,
        upstream_ms=1500.25,
        overhead_ms=30.614,
        attempts=[
            AttemptRecord(1, "claude-x", "anthropic/claude-x", "error:UpstreamTimeout", None, 1000.5, 0.0),
            AttemptRecord(2, "claude-x-fallback", "anthropic/claude-x-2025", "success", 200, 500.25, 12.5),
        ],
        extra={"route": {"strategy": "fallback", "tried": ["a", "b"]}, "cache": "miss", "n": 1.5, "ok": True},
        request_body={"model": "claude-x", "messages": [{"role": "user", "content": "héllo ✓"}]},
        response_body=[{"text": "hi"}, None, 3],
    )
    sparse = record(2, api_key_id=None, model=None, provider=None, upstream_model=None, cost_usd=None)
    sparse.attempts = []
    await store.write([full, sparse])

    assert (await store.get(full.id)).to_dict() == full.to_dict()
    assert (await store.get(sparse.id)).to_dict() == sparse.to_dict()
    assert {f.name for f in dataclasses.fields(CallRecord)} - {"attempts"} == set(CALL_COLUMNS)

    # Stored as what they are, not as text: exact money, queryable JSON, real timestamps.
    [row] = await query(
        dsn,
        "SELECT cost_usd, pg_typeof(cost_usd)::text AS t, extra->'route'->>'strategy' AS strategy,"
        " jsonb_typeof(response_body) AS body, started_at FROM calls WHERE id = $1",
        full.id,
    )
    assert (row["cost_usd"], row["t"]) == (Decimal("0.000123450"), "numeric")
    assert (row["strategy"], row["body"]) == ("fallback", "array")
    assert row["started_at"] == datetime(2024, 3, 8, 12, 13, 20, 123456, tzinfo=UTC)


async def test_nul_characters_do_not_wedge_a_batch(store: PostgresCallStore) -> None:
    # PostgreSQL text and jsonb refuse NUL; the writer retries a failed batch forever.
    r = record(1, end_user="a\x00b", request_body={"messages": [{"content": "x\x00y"}]})
    await store.write([r])
    got = await store.get(r.id)
    assert got.end_user == "a\ufffdb"
    assert got.request_body == {"messages": [{"content": "x\ufffdy"}]}


async def test_a_tiny_cost_is_written_in_plain_digits(store: PostgresCallStore) -> None:
    r = record(1, cost_usd="1.5E-7")
    await store.write([r])
    assert (await store.get(r.id)).cost_usd == "0.00000015"


async def test_rewriting_is_idempotent(store: PostgresCallStore, dsn: str) -> None:
    batch = [record(i) for i in range(5)]
    await store.write(batch)
    await store.write(batch)  # a replayed batch
    await store.write([*batch[:2], record(99), batch[0]])  # replayed, new, and repeated in one batch
    [counts] = await query(
        dsn, "SELECT (SELECT count(*) FROM calls) AS c, (SELECT count(*) FROM attempts) AS a"
    )
    assert (counts["c"], counts["a"]) == (6, 6)
    assert [len(r.attempts) for r in await store.recent()] == [1] * 6


async def test_each_day_gets_its_partitions(store: PostgresCallStore, dsn: str) -> None:
    records = [
        record(1, started_at=ts("2024-01-01", "23:59:59.999999")),
        record(2, started_at=ts("2024-01-02", "00:00:00")),
        record(3, started_at=ts("2024-01-02", "18:30:00")),  # the next day in Asia/Kolkata
        record(4, started_at=ts("2024-01-03", "05:00:00")),
    ]
    await store.write(records)
    expected = ["calls_p20240101", "calls_p20240102", "calls_p20240103"]
    assert await partitions(dsn, "calls") == expected
    assert await partitions(dsn, "attempts") == [p.replace("calls", "attempts") for p in expected]
    rows = await query(dsn, "SELECT id, tableoid::regclass::text AS part FROM calls")
    placed = {r["id"]: r["part"] for r in rows}
    assert [placed[r.id] for r in records] == [expected[0], expected[1], expected[1], expected[2]]
    rows = await query(dsn, "SELECT call_id, tableoid::regclass::text AS part FROM attempts")
    assert {r["call_id"]: r["part"].replace("attempts", "calls") for r in rows} == placed


async def test_todays_write_prepares_tomorrow(store: PostgresCallStore, dsn: str) -> None:
    now = datetime.now(UTC).timestamp()
    await store.write([record(1, started_at=now)])
    names = await partitions(dsn, "calls")
    today = datetime.fromtimestamp(now, UTC)
    tomorrow = datetime.fromtimestamp(now + 86400, UTC)
    assert names == [f"calls_p{today:%Y%m%d}", f"calls_p{tomorrow:%Y%m%d}"]


# -- reading -------------------------------------------------------------------------------------


async def test_recent_is_newest_first_and_filters(store: PostgresCallStore) -> None:
    t = ts("2024-03-10")
    records = [
        record(0, started_at=t - 86400, model="a", status="success"),  # the day before
        record(1, started_at=t + 1, model="a", status="error:UpstreamTimeout", api_key_id="key_b"),
        record(2, started_at=t + 2, model="b", status="cache_hit"),
        record(3, started_at=t + 3, model="a", status="error:RateLimited"),
        record(4, started_at=t + 4, model="b", status="errorish"),  # not an "error:" status
        record(5, started_at=t + 5, model="a", status="filtered", api_key_id="key_b"),
    ]
    records[3].attempts = [
        AttemptRecord(1, "a", "p/a", "error:RateLimited", 429, 10.0, 0.0),
        AttemptRecord(2, "a", "q/a", "error:RateLimited", 429, 11.0, 250.0),
    ]
    await store.write(records[::-1])

    def ids(rs: list[CallRecord]) -> list[str]:
        return [r.id for r in rs]

    newest_first = ids(records[::-1])
    assert ids(await store.recent()) == newest_first
    assert ids(await store.recent(limit=2)) == newest_first[:2]
    assert ids(await store.recent(since=t)) == newest_first[:5]
    assert ids(await store.recent(model="b")) == [records[4].id, records[2].id]
    assert ids(await store.recent(api_key_id="key_b")) == [records[5].id, records[1].id]
    assert ids(await store.recent(status="error")) == [records[3].id, records[1].id]
    assert ids(await store.recent(status="error:RateLimited")) == [records[3].id]
    assert ids(await store.recent(status="filtered", api_key_id="key_b", model="a")) == [records[5].id]
    assert ids(await store.recent(status="err%")) == []  # LIKE characters are literal
    assert await store.recent(limit=0) == []

    by_id = {r.id: r for r in await store.recent()}
    assert by_id == {r.id: r for r in records}  # attempts and all


async def test_get(store: PostgresCallStore) -> None:
    r = record(1)
    await store.write([r, record(2)])
    assert await store.get(r.id) == r
    assert await store.get("req_missing") is None


def percentile(values: list[float], p: float) -> float:
    """PostgreSQL's percentile_cont: linear interpolation between the two nearest ranks."""
    s = sorted(values)
    pos = p * (len(s) - 1)
    low = int(pos)
    high = min(low + 1, len(s) - 1)
    return s[low] + (s[high] - s[low]) * (pos - low)


async def test_totals_are_exact_and_grouped(store: PostgresCallStore) -> None:
    d1, d2 = ts("2024-03-10", "23:00:00"), ts("2024-03-11", "01:00:00")  # one UTC day each
    a_latencies = [100.0, 200.0, 400.0]
    records = [
        record(1, started_at=d1, model="a", cost_usd="0.1", latency_ms=a_latencies[0], end_user="u1"),
        record(
            2, started_at=d1 + 1, model="a", cost_usd="0.2", latency_ms=a_latencies[1], status="cache_hit"
        ),
        record(3, started_at=d2, model="a", cost_usd="0.3", latency_ms=a_latencies[2], status="error:X"),
        record(4, started_at=d2 + 1, model="b", cost_usd="0.05", status="filtered", api_key_id="key_b"),
        record(5, started_at=d2 + 2, model="c", cost_usd=None, prompt_tokens=7, completion_tokens=0),
    ]
    await store.write(records)

    by_model = await store.totals(by="model")
    assert [row["group"] for row in by_model] == ["a", "b", "c"]  # most expensive first
    a = by_model[0]
    assert a == {
        "group": "a",
        "requests": 3,
        "errors": 1,  # success and cache_hit are not errors
        "prompt_tokens": 30,
        "completion_tokens": 15,
        "cost_usd": "0.6",  # 0.1 + 0.2 + 0.3, exactly
        "saved_usd": "0",  # by routing: none of these was routed
        "latency_p50_ms": pytest.approx(percentile(a_latencies, 0.5)),
        "latency_p95_ms": pytest.approx(percentile(a_latencies, 0.95)),
    }
    assert (by_model[1]["errors"], by_model[1]["cost_usd"]) == (1, "0.05")  # filtered counts as an error
    assert (by_model[2]["cost_usd"], by_model[2]["prompt_tokens"]) == ("0", 7)  # no cost known: zero

    by_day = await store.totals(by="day")
    assert [(r["group"], r["requests"], r["cost_usd"]) for r in by_day] == [
        ("2024-03-10", 2, "0.3"),  # UTC days, oldest first (Asia/Kolkata would call both the 11th)
        ("2024-03-11", 3, "0.35"),
    ]
    by_key = {r["group"]: r["requests"] for r in await store.totals(by="key")}
    assert by_key == {"key_a": 4, "key_b": 1}
    by_user = {r["group"]: r["requests"] for r in await store.totals(by="user")}
    assert by_user == {"u1": 1, None: 4}
    by_status = {r["group"]: r["errors"] for r in await store.totals(by="status")}
    assert by_status == {"success": 0, "cache_hit": 0, "error:X": 1, "filtered": 1}
    since = await store.totals(by="model", since=d2)
    assert [(r["group"], r["requests"], r["cost_usd"]) for r in since] == [
        ("a", 1, "0.3"),
        ("b", 1, "0.05"),
        ("c", 1, "0"),
    ]
    with pytest.raises(ValueError, match="by="):
        await store.totals(by="provider")


# -- retention -----------------------------------------------------------------------------------


async def test_prune_drops_whole_days_and_trims_the_partial_one(store: PostgresCallStore, dsn: str) -> None:
    days = ["2024-01-01", "2024-01-02", "2024-01-03"]
    records = [
        record(i, started_at=ts(day, clock))
        for i, day in enumerate(days)
        for clock in ("06:00:00", "18:00:00")
    ]
    await store.write(records)
    assert len(await partitions(dsn, "calls")) == 3

    removed = await store.prune(ts("2024-01-03", "12:00:00"))

    assert removed == 5  # two whole days, and the morning of the third
    assert await partitions(dsn, "calls") == ["calls_p20240103"]
    assert await partitions(dsn, "attempts") == ["attempts_p20240103"]
    assert [r.id for r in await store.recent()] == [records[-1].id]
    [row] = await query(dsn, "SELECT count(*) AS n FROM attempts")
    assert row["n"] == 1
    assert await store.prune(ts("2024-01-03", "12:00:00")) == 0  # nothing left to remove

    # A late record for a dropped day (a replayed journal) recreates its partition.
    late = record(9, started_at=ts("2024-01-01"))
    await store.write([late])
    assert await store.get(late.id) == late


async def test_a_replica_writes_after_another_pruned_its_day(store: PostgresCallStore, dsn: str) -> None:
    other = PostgresCallStore(dsn)
    await other.open()
    try:
        await other.write([record(1, started_at=ts("2024-01-01"))])  # `other` now knows the day exists
        assert await store.prune(ts("2024-01-02", "00:00:00")) == 1  # and `store` drops it
        late = record(2, started_at=ts("2024-01-01"))
        await other.write([late])
        assert await store.get(late.id) == late
    finally:
        await other.close()


# -- migrations and connections ------------------------------------------------------------------


async def test_migrations_apply_once_even_when_replicas_start_together(dsn: str) -> None:
    stores = [PostgresCallStore(dsn) for _ in range(3)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        rows = await query(dsn, "SELECT name FROM _llmrelay_migrations ORDER BY name")
        assert [r["name"] for r in rows] == [name for name, _ in MIGRATIONS]
        conn = await asyncpg.connect(dsn)
        try:
            assert await apply_migrations(conn) == []  # already there: nothing to do
        finally:
            await conn.close()
        # The first write of a new day from all of them at once: one set of partitions, every record.
        day = ts("2024-05-05")
        await asyncio.gather(*(s.write([record(i, started_at=day + i)]) for i, s in enumerate(stores)))
        assert await partitions(dsn, "calls") == ["calls_p20240505"]
        assert len(await stores[0].recent()) == 3
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_open_names_the_host_when_postgresql_is_unreachable() -> None:
    port = free_port()
    store = PostgresCallStore(f"postgresql://llmrelay:secret@127.0.0.1:{port}/calls", connect_timeout=2)
    with pytest.raises(PostgresUnavailable, match=f"127.0.0.1:{port}") as info:
        await store.open()
    assert "secret" not in str(info.value)
    assert isinstance(info.value, ConnectionError)


class Proxy:
    """A TCP relay to PostgreSQL that can be cut and restored, like a network partition."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self.server: asyncio.Server | None = None
        self.transports: list[asyncio.WriteTransport] = []

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for transport in self.transports:
            transport.abort()
        self.transports.clear()
        await self.server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.transports += [writer.transport, up_writer.transport]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def test_write_raises_while_postgresql_is_unreachable_and_recovers(dsn: str) -> None:
    target = urlsplit(dsn)
    proxy = Proxy(target.hostname or "127.0.0.1", target.port or 5432)
    await proxy.start()
    store = PostgresCallStore(
        urlunsplit(target._replace(netloc=f"{target.username}@127.0.0.1:{proxy.port}")), connect_timeout=2
    )
    await store.open()
    try:
        await store.write([record(1)])
        await proxy.cut()
        for _ in range(2):  # the pooled connection is dead, and so is a new one
            with pytest.raises((OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError)):
                await store.write([record(2)])
        await proxy.start()  # same port: the network is back
        kept = record(3)
        for attempt in range(3):  # what the call log's writer does: retry the batch
            try:
                await store.write([kept])
                break
            except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError):
                assert attempt < 2
        assert await store.get(kept.id) == kept
    finally:
        await store.close()
        await proxy.cut()
