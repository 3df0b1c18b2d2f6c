"""The shared semantic index for several replicas: entries in Redis, a local ANN mirror per replica.

Redis 7.0 (Debian's) has no vector search and Debian has no pgvector, so Redis holds the entries
(question, entry key, vector, expiry) and a change stream, and every replica keeps its own
in-process index (``ScopedIndex``) in sync by tailing that stream. A lookup never leaves the
process (sub-millisecond, no network hop); an add is one atomic script: store the entry with its
TTL, append it to the stream, and evict the soonest-to-expire entries past ``max_entries``,
announcing each eviction on the stream. A replica that starts, or loses its connection, reloads
the live entries and tails the stream from where the snapshot ended.

Keys, under ``{prefix}:{embedder name}`` (vectors of two embedders never mix):
    :e:<id>   hash  scope, key, text, exp (epoch ms), vec (float32 bytes); expires at exp
    :z        zset  id -> exp; the live ids, for start-up and eviction
    :log      stream of {op: add|del, id, ...}; trimmed to about max_entries events
The zset and the stream expire with their longest-lived entry, so nothing outlives the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import numpy as np

from ..base import Confirm
from .embedders import Embedder
from .engine import LocalSemanticIndex
from .index import Entry

log = logging.getLogger("llmrelay.cache.semantic")

_ADD = """
local entry, zset, stream = KEYS[1], KEYS[2], KEYS[3]
local id, exp, max_entries, now, maxlen = ARGV[1], ARGV[5], tonumber(ARGV[7]), ARGV[8], ARGV[9]
redis.call('HSET', entry, 'scope', ARGV[2], 'key', ARGV[3], 'text', ARGV[4], 'exp', exp, 'vec', ARGV[6])
redis.call('PEXPIREAT', entry, exp)
redis.call('ZADD', zset, exp, id)
redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'op', 'add', 'id', id, 'scope', ARGV[2],
           'key', ARGV[3], 'text', ARGV[4], 'exp', exp, 'vec', ARGV[6])
redis.call('ZREMRANGEBYSCORE', zset, '-inf', now)
local over = redis.call('ZCARD', zset) - max_entries
if over > 0 then
  local gone = redis.call('ZPOPMIN', zset, over)
  for i = 1, #gone, 2 do
    redis.call('DEL', ARGV[10] .. gone[i])
    redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'op', 'del', 'id', gone[i])
  end
end
local last = redis.call('ZRANGE', zset, -1, -1, 'WITHSCORES')
if last[2] then
  redis.call('PEXPIREAT', zset, last[2])
  redis.call('PEXPIREAT', stream, last[2])
end
return over
"""


class RedisSemanticIndex(LocalSemanticIndex):
    """``LocalSemanticIndex`` whose entries live in Redis, shared by every replica."""

    def __init__(
        self,
        embedder: Embedder,
        redis_url: str,
        *,
        prefix: str = "llmrelay:semantic",
        **options: Any,  # LocalSemanticIndex's: max_entries, verifier, candidates, margin, ...
    ) -> None:
        import redis.asyncio as redis

        super().__init__(embedder, **options)
        self.prefix = f"{prefix}:{embedder.name}"
        # Bounded waits: an unreachable Redis must cost a lookup a miss, not a hang.
        self._redis = redis.Redis.from_url(redis_url, socket_connect_timeout=2.0, socket_timeout=5.0)
        self._add_script = self._redis.register_script(_ADD)
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._synced = asyncio.Event()
        self._own: set[int] = set()  # added here, not yet seen on the stream (skip that echo)

    async def start(self, wait_s: float = 1.0) -> None:
        """Load the live entries and follow the stream (idempotent). Waits up to ``wait_s`` for
        the first load; a large one goes on in the background (lookups miss until it lands)."""
        if self._task is None:
            self._task = asyncio.create_task(self._follow(), name="llmrelay-semantic-follow")
        if not self._synced.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._synced.wait(), wait_s)

    async def ready(self) -> None:
        await self.start()
        await super().ready()

    async def search(
        self,
        scope: str,
        query: str,
        threshold: float,
        confirm: Confirm | None = None,
    ) -> tuple[str, float] | None:
        await self.start()
        return await super().search(scope, query, threshold, confirm)

    async def _store(self, entry: Entry, vector: np.ndarray) -> None:
        await self.start()
        exp_ms = int(entry.expires_at * 1000)
        vec = np.asarray(vector, "<f4").tobytes()
        keys = [f"{self.prefix}:e:{entry.label}", f"{self.prefix}:z", f"{self.prefix}:log"]
        args: list[Any] = [entry.label, entry.scope, entry.entry_key, entry.text, exp_ms, vec]
        args += [self.max_entries, int(self.clock() * 1000), max(1000, self.max_entries), f"{self.prefix}:e:"]
        self._own.add(entry.label)  # before the write: the echo may arrive before the reply
        try:
            await self._add_script(keys=keys, args=args)
        except (OSError, self._redis_errors()) as exc:
            self._own.discard(entry.label)
            self.stats["errors"] += 1
            log.warning("semantic cache: Redis add failed, entry kept locally only: %s", exc)
        self._apply_add(entry, vector)  # read-your-writes; the stream's echo is skipped

    def _redis_errors(self) -> type[Exception]:
        import redis

        return redis.RedisError

    def _apply_add(self, entry: Entry, vector: np.ndarray) -> None:
        index = self._index_for(vector)
        if entry.label not in index.entries and entry.expires_at > self.clock():
            index.add(entry, vector)

    def _apply(self, fields: dict[bytes, bytes]) -> None:
        label = int(fields[b"id"])
        if fields.get(b"op", b"add") == b"del":
            if self.index is not None:
                self.index.discard(label)
            return
        if label in self._own:
            self._own.discard(label)
            return
        entry = Entry(
            label,
            fields[b"scope"].decode(),
            fields[b"key"].decode(),
            fields[b"text"].decode(),
            int(fields[b"exp"]) / 1000,
        )
        self._apply_add(entry, np.frombuffer(fields[b"vec"], "<f4"))

    async def _snapshot(self) -> bytes:
        """Load every live entry; returns the stream position the snapshot is consistent with."""
        last = await self._redis.xrevrange(f"{self.prefix}:log", count=1)
        position = last[0][0] if last else b"0-0"
        ids = await self._redis.zrangebyscore(f"{self.prefix}:z", int(self.clock() * 1000), "+inf")
        for start in range(0, len(ids), 500):
            pipe = self._redis.pipeline(transaction=False)
            for label in ids[start : start + 500]:
                pipe.hgetall(f"{self.prefix}:e:{label.decode()}")
            for label, fields in zip(ids[start : start + 500], await pipe.execute(), strict=True):
                if fields:  # expired between the two reads
                    self._apply({b"id": label, **fields})
        return position

    async def _follow(self) -> None:
        stream = f"{self.prefix}:log"
        position: bytes | None = None
        retry_s = 0.5
        while not self._closing:
            try:
                if position is None:
                    if self._synced.is_set():  # a reload: evictions may have been missed
                        self.index = None
                    position = await self._snapshot()
                    self._synced.set()
                # A short block: closing waits for this read instead of cancelling it mid-reply.
                replies = await self._redis.xread({stream: position}, count=500, block=200)
                for _, messages in replies:
                    for message_id, fields in messages:
                        self._apply(fields)
                        position = message_id
                retry_s = 0.5
            except Exception as exc:  # never let the mirror die: reload and carry on
                retry_s = min(30.0, retry_s * 2)
                log.warning("semantic cache: lost the Redis stream, reloading in %.0f s: %r", retry_s, exc)
                self._synced.set()  # serve from what we have meanwhile
                position = None
                deadline = asyncio.get_running_loop().time() + retry_s
                while not self._closing and asyncio.get_running_loop().time() < deadline:
                    await asyncio.sleep(0.2)

    async def aclose(self) -> None:
        self._closing = True
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=2.0)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        await self._redis.aclose()
        await super().aclose()
