"""Token buckets in Redis, so that every gateway replica draws from the same ones.

One Lua script per check reads every bucket of the request, decides, and takes from all of them or
none, atomically (Redis runs a script alone): two replicas can never both spend the last request
of a minute. The arithmetic is ``buckets.refill`` / ``buckets.check``; Redis's own clock (``TIME``)
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

from ..errors import ConfigError, LimiterUnavailable
from .buckets import WINDOW_S, Decision, Limit
from .stats import LimitStats

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

_WARN_EVERY_S = 60.0

# ARGV: now in ms ("" = Redis TIME), the window in ms, then per bucket: per-minute, amount.
_PRELUDE = """
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local window = tonumber(ARGV[2])
local function level_of(i)
  local cap = tonumber(ARGV[1 + 2 * i])
  local s = redis.call('HMGET', KEYS[i], 'l', 't')
  if not s[1] then return cap, cap end
  local elapsed = math.max(0, now - tonumber(s[2]))
  return math.min(cap, tonumber(s[1]) + elapsed * cap / window), cap
end
local function store(i, level, cap)
  redis.call('HSET', KEYS[i], 'l', tostring(level), 't', tostring(now))
  redis.call('PEXPIRE', KEYS[i], math.ceil((cap - level) * window / cap) + 1000)
end
"""

# Returns {1|0, wait in ms, level of each bucket (after the take when admitted)} as strings
# (a Lua number would come back truncated to an integer).
_ACQUIRE = (
    _PRELUDE
    + """
local levels, caps, wait = {}, {}, 0
for i = 1, #KEYS do
  levels[i], caps[i] = level_of(i)
  local amount = tonumber(ARGV[2 + 2 * i])
  if levels[i] < amount then
    wait = math.max(wait, (amount - levels[i]) * window / caps[i])
  end
end
local out = {wait > 0 and 0 or 1, tostring(wait)}
for i = 1, #KEYS do
  if wait == 0 then
    levels[i] = levels[i] - tonumber(ARGV[2 + 2 * i])
    store(i, levels[i], caps[i])
  end
  out[#out + 1] = tostring(levels[i])
end
return out
"""
)

# Takes ``amount`` more from each bucket (negative: gives back, up to full).
_ADJUST = (
    _PRELUDE
    + """
for i = 1, #KEYS do
  local level, cap = level_of(i)
  store(i, math.min(cap, level - tonumber(ARGV[2 + 2 * i])), cap)
end
return 1
"""
)


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
        try:
            from redis.asyncio import from_url
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
            from redis.exceptions import RedisError
        except ImportError:
            raise ConfigError(
                "Rate limits use Redis (redis_url is set) but the redis package is missing: "
                "pip install 'llmrelay[redis]'"
            ) from None
        try:
            # Short timeouts and no client-side retries: a slow Redis must not become slow requests.
            self._redis: Redis = from_url(
                url,
                decode_responses=True,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                retry=Retry(NoBackoff(), 0),
            )
        except ValueError as exc:
            raise ConfigError(f"Invalid Redis URL for rate limits: {exc}") from None
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
        self._warned_at = -math.inf

    def _args(self, limits: Sequence[Limit]) -> tuple[list[str], list[Any]]:
        now = "" if self.clock is None else str(round(self.clock() * 1000, 3))
        args: list[Any] = [now, WINDOW_S * 1000]
        for limit in limits:
            args += (limit.per_minute, limit.amount)
        return [f"{self.prefix}:{limit.key}" for limit in limits], args

    async def acquire(self, limits: Sequence[Limit]) -> Decision:
        keys, args = self._args(limits)
        try:
            reply = await self._acquire(keys=keys, args=args)
        except self._down as exc:
            return self._unavailable(exc)
        allowed, wait_ms, *levels = reply
        return Decision(int(allowed) == 1, float(wait_ms) / 1000, tuple(map(float, levels)))

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
        keys, args = self._args(batch)
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
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(BaseException):
                await self._flusher
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), self.timeout_s * 2)
        with contextlib.suppress(Exception):
            await self._redis.aclose()
