"""Where cache entries live: in this process (an LRU bounded in bytes, the default), in a SQLite
file (one host, survives restarts), or in Redis (shared by every replica). TTLs are in seconds."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import CacheSettings
from ..errors import ConfigError
from ..redis_client import redis_client
from .base import CacheBackend

if TYPE_CHECKING:
    from redis.asyncio import Redis

# What an entry costs beyond its key and value bytes (the dict slot, the tuple, two objects'
# headers), so a cache of many small entries stays within its bound too.
_ENTRY_OVERHEAD = 120


class MemoryBackend:
    """An LRU of at most ``max_bytes`` (keys and values); expired entries go when they are read
    or when they are the least recently used."""

    def __init__(self, max_bytes: int, clock: Any = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._clock = clock

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        item = self._entries.get(key)
        if item is None:
            return None
        if item[1] <= self._clock():
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return item[0]

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        cost = _cost(key, value)
        if cost > self.max_bytes:
            return  # would evict everything and still not fit
        self._remove(key)
        while self.size + cost > self.max_bytes:
            self._remove(next(iter(self._entries)))
        self._entries[key] = (value, self._clock() + ttl_s)
        self.size += cost

    async def delete(self, key: str) -> None:
        self._remove(key)

    def _remove(self, key: str) -> None:
        item = self._entries.pop(key, None)
        if item is not None:
            self.size -= _cost(key, item[0])

    async def aclose(self) -> None:
        self._entries.clear()
        self.size = 0


def _cost(key: str, value: bytes) -> int:
    return len(key) + len(value) + _ENTRY_OVERHEAD


class SqliteBackend:
    """One table in a SQLite file (WAL), used from one worker thread so the event loop never waits
    on the disk. Expired rows read as missing and are swept every ``sweep_every`` writes."""

    def __init__(self, path: str | Path, *, sweep_every: int = 1000) -> None:
        self.path = Path(path).expanduser()
        self.sweep_every = sweep_every
        self._writes = 0
        self._db: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmrelay-cache-sqlite")

    def _run(self, fn: Any, *args: Any) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def _conn(self) -> sqlite3.Connection:  # worker thread only
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # a lost last write costs one upstream call
            db.execute(
                "CREATE TABLE IF NOT EXISTS llmrelay_cache"
                " (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires_at REAL NOT NULL)"
            )
            self._db = db
        return self._db

    async def get(self, key: str) -> bytes | None:
        return await self._run(self._get, key, time.time())

    def _get(self, key: str, now: float) -> bytes | None:
        row = (
            self._conn()
            .execute("SELECT value FROM llmrelay_cache WHERE key = ? AND expires_at > ?", (key, now))
            .fetchone()
        )
        return None if row is None else bytes(row[0])

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._run(self._set, key, value, time.time() + ttl_s)

    def _set(self, key: str, value: bytes, expires_at: float) -> None:
        db = self._conn()
        db.execute("INSERT OR REPLACE INTO llmrelay_cache VALUES (?, ?, ?)", (key, value, expires_at))
        self._writes += 1
        if self._writes % self.sweep_every == 0:
            db.execute("DELETE FROM llmrelay_cache WHERE expires_at <= ?", (time.time(),))

    async def delete(self, key: str) -> None:
        await self._run(lambda: self._conn().execute("DELETE FROM llmrelay_cache WHERE key = ?", (key,)))

    async def aclose(self) -> None:
        def close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await self._run(close)
        self._thread.shutdown(wait=True)


class RedisBackend:
    """Entries as Redis strings with a TTL (``PX``, from seconds), under ``prefix``: every replica
    pointed at the same Redis shares them."""

    def __init__(self, url: str, *, prefix: str = "llmrelay:cache:", timeout_s: float = 0.5) -> None:
        self.prefix = prefix
        # A slow Redis is a cache miss, not a slow request. Values are bytes: no decoding.
        self._redis: Redis = redis_client(
            url, timeout_s=timeout_s, what="the cache (cache.backend)", decode_responses=False
        )

    async def get(self, key: str) -> bytes | None:
        value = await self._redis.get(self.prefix + key)
        return bytes(value) if value is not None else None

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._redis.set(self.prefix + key, value, px=max(1, round(ttl_s * 1000)))

    async def delete(self, key: str) -> None:
        await self._redis.delete(self.prefix + key)

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self._redis.aclose()


def build_backend(settings: CacheSettings, redis_url: str | None) -> CacheBackend:
    """The backend ``cache.backend`` names (Redis at ``cache.redis_url``, else the top-level one)."""
    if settings.backend == "sqlite":
        return SqliteBackend(settings.sqlite_path)
    if settings.backend == "redis":
        url = settings.redis_url or redis_url
        if not url:
            raise ConfigError(
                "cache.backend is redis but no Redis URL is set: set cache.redis_url or redis_url."
            )
        return RedisBackend(url, timeout_s=settings.timeout_s)
    return MemoryBackend(settings.max_bytes)
