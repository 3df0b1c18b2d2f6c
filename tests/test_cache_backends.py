"""The cache's stores: the in-memory LRU (bounded in bytes), SQLite and Redis (the machine's real
Redis: skipped when it is absent, failing instead under LLMRELAY_REQUIRE_SERVICES=1). TTLs are
seconds in all three. Then the cache as deployed: the embedded default has it on, two replicas
share entries through Redis, and a store that is down costs hits, never calls."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from llmrelay import Relay
from llmrelay.cache import MemoryBackend, RedisBackend, SqliteBackend
from llmrelay.cache.backends import _cost
from llmrelay.config import Settings
from llmrelay.pipeline import Call
from llmrelay.providers import openai_format

from .conftest import REDIS_URL, free_port, gateway_config, redis_or_skip


def open_backend(kind: str, tmp_path):
    if kind == "memory":
        return MemoryBackend(1 << 20)
    if kind == "sqlite":
        return SqliteBackend(tmp_path / "cache.db")
    redis_or_skip()
    return RedisBackend(REDIS_URL, prefix=f"llmrelay-test:{uuid.uuid4().hex}:")


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def backend(request, tmp_path) -> AsyncIterator:
    store = open_backend(request.param, tmp_path)
    yield store
    await store.aclose()


@pytest.fixture(params=["sqlite", "redis"])
async def shared_backend(request, tmp_path) -> AsyncIterator:
    """The stores whose TTL runs on the wall clock (the memory one's is tested with a fake clock)."""
    store = open_backend(request.param, tmp_path)
    yield store
    await store.aclose()


async def test_get_set_delete(backend):
    assert await backend.get("k") is None
    await backend.set("k", b"\x00value", 60)
    assert await backend.get("k") == b"\x00value"
    await backend.set("k", b"newer", 60)
    assert await backend.get("k") == b"newer"
    await backend.delete("k")
    assert await backend.get("k") is None


async def test_ttl_is_in_seconds(shared_backend):
    await shared_backend.set("short", b"v", 1)
    await asyncio.sleep(0.3)
    assert await shared_backend.get("short") == b"v"  # read as milliseconds it would be long gone
    await asyncio.sleep(1.0)
    assert await shared_backend.get("short") is None


async def test_redis_entries_carry_their_ttl():
    redis_or_skip()
    import redis.asyncio

    prefix = f"llmrelay-test:{uuid.uuid4().hex}:"
    store = RedisBackend(REDIS_URL, prefix=prefix)
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        await store.set("k", b"v", 90)
        assert 89_000 < await client.pttl(prefix + "k") <= 90_000  # 90 s, not 90 ms nor 90 min
    finally:
        await store.delete("k")
        await store.aclose()
        await client.aclose()


async def test_memory_ttl_is_in_seconds():
    now = [1000.0]
    store = MemoryBackend(1 << 20, clock=lambda: now[0])
    await store.set("k", b"v", 2)
    now[0] += 1.9
    assert await store.get("k") == b"v"
    now[0] += 0.2
    assert await store.get("k") is None and store.size == 0  # expired, and its bytes given back


async def test_memory_lru_stays_within_its_byte_bound():
    value = b"x" * 1000
    one = _cost("k00", value)
    store = MemoryBackend(max_bytes=10 * one)
    for i in range(10):
        await store.set(f"k{i:02}", value, 60)
    assert len(store) == 10 and store.size == 10 * one
    assert await store.get("k00") == value  # now the most recently used
    await store.set("k10", value, 60)  # evicts the least recently used: k01, not k00
    assert len(store) == 10 and store.size <= store.max_bytes
    assert await store.get("k01") is None and await store.get("k00") == value
    await store.set("big", b"y" * (5 * one - _cost("big", b"")), 60)  # makes room for itself: five go
    assert store.size <= store.max_bytes and len(store) == 6
    await store.set("huge", b"z" * (11 * one), 60)  # larger than the whole cache: not stored
    assert await store.get("huge") is None and await store.get("big") is not None


async def test_sqlite_persists_across_restarts_in_wal_mode(tmp_path):
    first = SqliteBackend(tmp_path / "c.db")
    await first.set("k", b"v", 60)
    await first.aclose()
    second = SqliteBackend(tmp_path / "c.db", sweep_every=1)
    try:
        assert await second.get("k") == b"v"
        await second.set("gone", b"v", 0.01)
        await asyncio.sleep(0.02)
        await second.set("sweeps", b"v", 60)  # every write sweeps here: the expired row goes
        rows = await second._run(lambda: second._conn().execute("SELECT key FROM llmrelay_cache").fetchall())
        mode = await second._run(lambda: second._conn().execute("PRAGMA journal_mode").fetchone()[0])
        assert sorted(r[0] for r in rows) == ["k", "sweeps"] and mode == "wal"
    finally:
        await second.aclose()


async def test_the_embedded_default_caches_in_memory():
    settings = Settings.embedded({})
    assert "cache" in settings.pipeline and settings.cache.backend == "memory" and settings.cache.enabled
    async with Relay(settings) as relay:
        ask = dict(model="sim/gpt-4o-mini", temperature=0, messages=[{"role": "user", "content": "hi"}])
        first, second = await relay.complete(**ask), await relay.complete(**ask)
        assert second.id == first.id  # the simulator numbers its answers: the second was not asked
        sampled = dict(ask, temperature=1)
        assert (await relay.complete(**sampled)).id != (await relay.complete(**sampled)).id


async def test_a_store_that_is_down_costs_hits_not_calls(simulator, caplog):
    config = gateway_config(simulator.url)
    config["cache"] = {"backend": "redis", "redis_url": f"redis://127.0.0.1:{free_port()}/0"}
    async with Relay(config) as relay:
        for _ in range(2):
            call = Call(
                openai_format.parse_request(
                    {"model": "gpt-4o-mini", "temperature": 0, "messages": [{"role": "user", "content": "x"}]}
                )
            )
            response = await relay.handle(call)
            assert response.choices[0].message.content == "You said: x"
            assert call.response_headers["x-llmrelay-cache"] == "miss" and call.status == "success"
    warnings = [r for r in caplog.records if "response cache unavailable" in r.getMessage()]
    assert len(warnings) == 1  # once, not once per request


async def test_replicas_share_entries_through_redis(simulator):
    """Two gateways' pipelines (in-process here: what is shared goes only through Redis)."""
    redis_or_skip()
    config = gateway_config(simulator.url)
    config["cache"] = {"backend": "redis", "redis_url": REDIS_URL, "ttl_s": 30}  # nothing lingers
    body = {
        "model": "gpt-4o-mini",
        "temperature": 0,
        "messages": [{"role": "user", "content": uuid.uuid4().hex}],
    }
    async with Relay(config) as a, Relay(config) as b:
        seen = []
        for replica in (a, b):
            call = Call(openai_format.parse_request(body), principal="sk-k")
            response = await replica.handle(call)
            seen.append((call.response_headers["x-llmrelay-cache"], response.id))
    assert [s[0] for s in seen] == ["miss", "hit"] and seen[0][1] == seen[1][1]


async def test_entries_outlive_a_restart_but_not_a_change_of_upstream(simulator, tmp_path):
    """SQLite keeps entries across restarts; pointing the model at another upstream retires them."""
    config = gateway_config(simulator.url)
    config["cache"] = {"backend": "sqlite", "sqlite_path": str(tmp_path / "cache.db")}
    body = {"model": "gpt-4o-mini", "temperature": 0, "messages": [{"role": "user", "content": "restart"}]}

    async def status(cfg: dict) -> str:
        async with Relay(cfg) as relay:
            call = Call(openai_format.parse_request(body))
            await relay.handle(call)
            return call.response_headers["x-llmrelay-cache"]

    assert await status(config) == "miss"
    assert await status(config) == "hit"
    config["models"][0]["upstream"] = "gpt-4o"
    assert await status(config) == "miss"
