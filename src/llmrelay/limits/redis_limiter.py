"""Token buckets in Redis, so that every gateway replica draws from the same ones.

One Lua script per check reads every bucket of the request, decides, and takes from all of them or
none, atomically (Redis runs a script alone): two replicas can never both spend the last request
of a minute. Checks that arrive while a call is out ride together in the next one (still each all
or nothing, in order), so under load a round trip serves many requests: redis-py spends ~100 us of
CPU per call, more than the rest of the check. The arithmetic is ``buckets.refill`` / ``buckets.check``; Redis's own clock (``TIME``)
is the time, so the replicas' clocks need not agree (tests inject one instead).

Layout: one hash per bucket, ``<prefix>:<limit key>`` = {l: level, t: updated, ms}, expiring
when it would be full again (a missing bucket reads as full), so nothing accumulates.

Redis unreachable or slow (``timeout_s``): with ``on_redis_error: allow`` (the default) the
request goes through unlimited (fail open: an outage of the limiter is not an outage of the
gateway), a warning is logged at most once a minute and ``llmrelay_ratelimit_backend_errors`` is
counted; with ``deny`` the request gets a 503 ``rate_limiter_unavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import LimiterUnavailable
from ..redis_client import redis_client
from .buckets import WINDOW_S, Decision, Limit
from .stats import LimitStats

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

_WARN_EVERY_S = 60.0

# Shared by both scripts. ARGV[1]: now in ms ("" = Redis TIME); ARGV[2]: the window in ms. Each
# bucket is read once per call and written once at its end, however many requests touch it.
_PRELUDE = """
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local window = tonumber(ARGV[2])
local state = {}
local function get(key, cap)
  local s = state[key]
  if s then return s end
  local v = redis.call('HMGET', key, 'l', 't')
  local level = cap
  if v[1] then
    level = math.min(cap, tonumber(v[1]) + math.max(0, now - tonumber(v[2])) * cap / window)
  end
  s = {level, cap, false}
  state[key] = s
  return s
end
local function save()
  for key, s in pairs(state) do
    if s[3] then
      redis.call('HSET', key, 'l', tostring(s[1]), 't', tostring(now))
      redis.call('PEXPIRE', key, math.ceil((s[2] - s[1]) * window / s[2]) + 1000)
    end
  end
end
"""

# The checks of several requests, in order, each all or nothing. ARGV[3]: how many requests; then
# per request: its bucket count n, then n pairs (per-minute, amount); KEYS: their buckets in turn.
# Returns per request {1|0, wait in ms, each bucket's level (after the take when admitted)}, as
# strings where fractional (a Lua number would come back truncated to an integer).
_ACQUIRE = (
    _PRELUDE
    + """
local out, k, a = {}, 1, 4
for r = 1, tonumber(ARGV[3]) do
  local n = tonumber(ARGV[a])
  a = a + 1
  local wait = 0
  for i = 0, n - 1 do
    local s = get(KEYS[k + i], tonumber(ARGV[a + 2 * i]))
    local amount = tonumber(ARGV[a + 2 * i + 1])
    if s[1] < amount then wait = math.max(wait, (amount - s[1]) * window / s[2]) end
  end
  out[#out + 1] = wait > 0 and 0 or 1
  out[#out + 1] = tostring(wait)
  for i = 0, n - 1 do
    local s = state[KEYS[k + i]]
    if wait == 0 then
      s[1] = s[1] - tonumber(ARGV[a + 2 * i + 1])
      s[3] = true
    end
    out[#out + 1] = tostring(s[1])
  end
  k = k + n
  a = a + 2 * n
end
save()
return out
"""
)

# Takes ``amount`` more from each bucket (negative: gives back, up to full). ARGV from 3: per bucket
# (per-minute, amount).
_ADJUST = (
    _PRELUDE
    + """
for i = 1, #KEYS do
  local s = get(KEYS[i], tonumber(ARGV[1 + 2 * i]))
  s[1] = math.min(s[2], s[1] - tonumber(ARGV[2 + 2 * i]))
  s[3] = true
end
save()
return 1
"""
)

_MAX_BATCH = 64  # checks per script call: bounds how long Redis runs one script


class RedisLimiter:
    def __init__(
        self,
        url: str,
        *,
        prefix: str = "llmrelay:rl",
        timeout_s: float = 0.25,
        fail_open: bool = True,
        stats: LimitStats | None = None,
        clock: Callable[[], float] | None = None,
        flush_interval_s: float = 0.05,
    ) -> None:
        self._redis: Redis = redis_client(url, timeout_s=timeout_s, what="rate limits (redis_url)")
        from redis.exceptions import RedisError

        self.prefix = prefix
        self.timeout_s = timeout_s
        self.fail_open = fail_open
        self.stats = stats or LimitStats()
        self.clock = clock  # seconds; None: Redis's own clock
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._adjust = self._redis.register_script(_ADJUST)
        self._down = (RedisError, OSError, TimeoutError)  # what makes the store unusable, not a bug
        self.flush_interval_s = flush_interval_s
        # Reconciliations waiting to go out: bucket key -> (its limit, the amount to take).
        self._adjustments: dict[str, tuple[Limit, float]] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._waiting: list[tuple[Sequence[Limit], asyncio.Future[Decision]]] = []  # checks to send
        self._sender: asyncio.Task[None] | None = None
        self._warned_at = -math.inf

    def _now(self) -> str:
        return "" if self.clock is None else str(round(self.clock() * 1000, 3))

    def _key(self, limit: Limit) -> str:
        return f"{self.prefix}:{limit.key}"

    async def acquire(self, limits: Sequence[Limit]) -> Decision:
        """Checks that arrive while a script call is out go together in the next one (each still
        all or nothing, in arrival order): under load, one round trip serves many requests, and
        alone a check waits for nothing but its own call."""
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._waiting.append((limits, future))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.ensure_future(self._send())
        return await future

    async def _send(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[:_MAX_BATCH], self._waiting[_MAX_BATCH:]
            keys: list[str] = []
            args: list[Any] = [self._now(), WINDOW_S * 1000, len(batch)]
            for limits, _ in batch:
                args.append(len(limits))
                for limit in limits:
                    keys.append(self._key(limit))
                    args += (limit.per_minute, limit.amount)
            try:
                reply = await self._acquire(keys=keys, args=args)
            except self._down as exc:
                for _, future in batch:
                    if not future.done():
                        try:
                            future.set_result(self._unavailable(exc))
                        except LimiterUnavailable as refused:
                            future.set_exception(refused)
                continue
            except BaseException as exc:  # a bug, or the gateway closing: nobody may wait forever
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
                raise
            at = 0
            for limits, future in batch:
                n = len(limits)
                decision = Decision(
                    int(reply[at]) == 1,
                    float(reply[at + 1]) / 1000,
                    tuple(map(float, reply[at + 2 : at + 2 + n])),
                )
                at += 2 + n
                if not future.done():
                    future.set_result(decision)
                elif decision.allowed:  # its caller left meanwhile: give back what it took
                    self.adjust([Limit(x.key, x.per_minute, -x.amount) for x in limits])

    def adjust(self, limits: Sequence[Limit]) -> None:
        """Queued, and sent within ``flush_interval_s`` together with the others: a reconciliation
        never delays the response it follows, and under load the corrections of many calls go out
        in one script call instead of one each (it halves the round trips per request)."""
        for limit in limits:
            queued = self._adjustments.get(limit.key)
            self._adjustments[limit.key] = (limit, limit.amount + (queued[1] if queued else 0.0))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self.flush_interval_s)
        await self.flush()

    async def flush(self) -> None:
        """Send the queued reconciliations now."""
        if not self._adjustments:
            return
        batch = [Limit(key, limit.per_minute, amount) for key, (limit, amount) in self._adjustments.items()]
        self._adjustments.clear()
        keys = [self._key(limit) for limit in batch]
        args: list[Any] = [self._now(), WINDOW_S * 1000]
        for limit in batch:
            args += (limit.per_minute, limit.amount)
        try:
            await self._adjust(keys=keys, args=args)
        except self._down as exc:
            self._warn(exc)  # lost: the buckets stay as reserved, the conservative side

    def _unavailable(self, exc: BaseException) -> Decision:
        self._warn(exc)
        if not self.fail_open:
            raise LimiterUnavailable(
                "Rate limits cannot be checked right now (their store is unreachable); try again shortly."
            )
        return Decision(True)

    def _warn(self, exc: BaseException) -> None:
        self.stats.backend_errors += 1
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = now
            log.warning(
                "Redis unreachable for rate limits (%s: %s); %s",
                type(exc).__name__,
                exc,
                "letting requests through unlimited (on_redis_error: allow)"
                if self.fail_open
                else "refusing requests with 503 (on_redis_error: deny)",
            )

    async def aclose(self) -> None:
        if self._sender is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(self._sender), self.timeout_s * 2)
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(BaseException):
                await self._flusher
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), self.timeout_s * 2)
        with contextlib.suppress(Exception):
            await self._redis.aclose()
