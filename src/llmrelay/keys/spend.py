"""Spend counters for budgets: reserve an estimate atomically against every limit, settle the
actual cost after, persist what was spent.

Money is counted in integer pico-dollars (1e-12 USD): sums are exact, and every catalog price per
million tokens with up to six decimals is a whole number of them (a rare finer cost is rounded up).

Two counter backends behind one ``Ledger``:

- ``LocalCounters``: a dict, in-process (one event loop: each check-and-reserve is atomic).
- ``RedisCounters`` when ``redis_url`` is set: one Lua script checks every limit and reserves on all
  of them at once, so replicas sharing the Redis hold one budget together. Counters expire after
  their period (3 days for a day, 40 for a month).

Persistence: the ledger also adds each call's actual cost to ``budget_spend`` in the key store
(batched, in the background, never on the request path). A gateway starting without Redis reads
the current day's and month's counters from there, so a restart does not reset spend; with Redis,
Redis holds the truth, and a counter it does not have (a new period, or one it lost to a restart
or an eviction, while gateways run or not) is filled from the table when a call first needs it
(``SET NX``, before reserving). Spend recorded in the last second before a crash or a Redis loss
(the batch not yet flushed) is the bounded loss.

Redis unreachable fails open (the call goes ahead, a warning is logged at most once a minute):
a budget outage must not become a gateway outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Any, Protocol

from ..db import unless_down
from ..redis_client import redis_client
from .store import KeyStore

log = logging.getLogger(__name__)

_PICO = Decimal(10) ** 12
_DAY_TTL_MS = 3 * 86_400_000
_MONTH_TTL_MS = 40 * 86_400_000
_FLUSH_S = 1.0
_WARN_EVERY_S = 60.0


def to_pico(usd: Decimal) -> int:
    return int((usd * _PICO).to_integral_value(ROUND_CEILING))


def from_pico(pico: int) -> Decimal:
    return (Decimal(pico) / _PICO).normalize() if pico else Decimal(0)


def periods(now: datetime | None = None) -> tuple[str, str]:
    """The UTC day and month a call started in, as counter periods."""
    now = now or datetime.now(UTC)
    return f"d:{now:%Y-%m-%d}", f"m:{now:%Y-%m}"


def reset_in_s(period: str, now: datetime | None = None) -> float:
    """Seconds until the period ends (its budget starts again)."""
    now = now or datetime.now(UTC)
    if period.startswith("d:"):
        end = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
    else:
        end = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
    return max((end - now).total_seconds(), 1.0)


@dataclass(frozen=True, slots=True)
class Charge:
    """One counter a call is charged to, and its limit (None: counted, not limited)."""

    scope: str  # key:<id> | user:<key id>:<user>
    period: str  # d:YYYY-MM-DD | m:YYYY-MM
    limit: int | None  # pico-dollars
    label: str  # for the refusal message: "key key_x's daily budget"

    @property
    def counter(self) -> str:
        return f"{self.scope}|{self.period}"

    @property
    def ttl_ms(self) -> int:
        return _DAY_TTL_MS if self.period.startswith("d:") else _MONTH_TTL_MS


class Counters(Protocol):
    async def reserve(self, charges: Sequence[Charge], amount: int) -> tuple[Charge, int] | None:
        """Add ``amount`` to every counter if none would pass its limit; else the first refusing
        one and its spend, and add nothing."""
        ...

    async def add(self, charges: Sequence[Charge], delta: int) -> None: ...

    async def get(self, counter: str) -> int: ...

    # What the store remembers from before this process counted anything (``read`` it): added to
    # what the counters hold (nothing at start; this process's own calls when the database was
    # down then). Counters that fill themselves from the store on first use read nothing here.
    async def seed(self, read: Callable[[], Awaitable[dict[str, int]]]) -> None: ...

    def prune(self, keep: Sequence[str]) -> None: ...  # forget counters of periods not in ``keep``

    async def aclose(self) -> None: ...


def _over(spent: int, amount: int, limit: int | None) -> bool:
    return limit is not None and (spent >= limit or spent + amount > limit)


class LocalCounters:
    def __init__(self) -> None:
        self.values: dict[str, int] = {}

    async def reserve(self, charges: Sequence[Charge], amount: int) -> tuple[Charge, int] | None:
        values = self.values
        for c in charges:  # no await in here: check and add are one step on the event loop
            spent = values.get(c.counter, 0)
            if _over(spent, amount, c.limit):
                return c, spent
        for c in charges:
            values[c.counter] = values.get(c.counter, 0) + amount
        return None

    async def add(self, charges: Sequence[Charge], delta: int) -> None:
        for c in charges:
            self.values[c.counter] = self.values.get(c.counter, 0) + delta

    async def get(self, counter: str) -> int:
        return self.values.get(counter, 0)

    async def seed(self, read: Callable[[], Awaitable[dict[str, int]]]) -> None:
        for counter, value in (await read()).items():
            self.values[counter] = self.values.get(counter, 0) + value

    def prune(self, keep: Sequence[str]) -> None:
        self.values = {c: v for c, v in self.values.items() if c.rpartition("|")[2] in keep}

    async def aclose(self) -> None:
        pass


# KEYS: the counters. ARGV[1]: the amount; ARGV[2]: '1' to answer {-1} if a counter is missing
# (reserve nothing: it is filled from the table first); then per counter its limit (-1: none),
# then its TTL (ms).
_RESERVE = """
local amount = tonumber(ARGV[1])
local n = #KEYS
if ARGV[2] == '1' then
  for i = 1, n do
    if redis.call('EXISTS', KEYS[i]) == 0 then
      return {-1, '0'}
    end
  end
end
for i = 1, n do
  local limit = tonumber(ARGV[2 + i])
  if limit >= 0 then
    local spent = tonumber(redis.call('GET', KEYS[i]) or '0')
    if spent >= limit or spent + amount > limit then
      return {i, tostring(spent)}
    end
  end
end
for i = 1, n do
  redis.call('INCRBY', KEYS[i], amount)
  redis.call('PEXPIRE', KEYS[i], ARGV[2 + n + i])
end
return {0, '0'}
"""


# KEYS: the counters. ARGV[1]: the delta; then per counter its TTL (ms). A counter Redis has lost
# since the reservation is left missing: a delta alone would stop it being filled from the table.
_ADD = """
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('INCRBY', KEYS[i], ARGV[1])
    redis.call('PEXPIRE', KEYS[i], ARGV[1 + i])
  end
end
return 0
"""

# Reads saved spend: counter names ("<scope>|<period>") -> pico-dollars (absent: nothing saved).
SavedSpend = Callable[[Sequence[str]], Awaitable[dict[str, int]]]


class RedisCounters:
    """Counters in Redis, shared by replicas. A counter Redis does not have (a new period, or one
    it lost: restarted without persistence, evicted) is filled from the saved spend on first use,
    before anything is reserved on it, so a Redis restart does not reset budgets."""

    def __init__(
        self, redis_url: str, prefix: str, *, timeout_s: float = 0.5, saved: SavedSpend | None = None
    ) -> None:
        self.prefix = prefix
        self._redis: Any = redis_client(redis_url, timeout_s=timeout_s, what="budgets (redis_url)")
        self._reserve = self._redis.register_script(_RESERVE)
        self._add = self._redis.register_script(_ADD)
        self._saved = saved
        self._timeout_s = timeout_s
        self._warned = 0.0

    def _key(self, counter: str) -> str:
        return f"{self.prefix}:{counter}"

    async def reserve(self, charges: Sequence[Charge], amount: int) -> tuple[Charge, int] | None:
        keys = [self._key(c.counter) for c in charges]
        rules = [*(-1 if c.limit is None else c.limit for c in charges), *(c.ttl_ms for c in charges)]
        try:
            index, spent = await self._reserve(keys=keys, args=[amount, 1, *rules])
            if int(index) == -1:
                await self._fill([c.counter for c in charges])
                index, spent = await self._reserve(keys=keys, args=[amount, 0, *rules])
        except Exception as exc:  # Redis down or slow: fail open
            self._warn(exc)
            return None
        return None if int(index) == 0 else (charges[int(index) - 1], int(Decimal(spent)))

    async def _fill(self, counters: Sequence[str]) -> None:
        """Set the missing ones among ``counters`` to their saved spend (NX: a replica that filled
        one first, or a call counted on it since, wins)."""
        values: dict[str, int] = {}
        if self._saved is not None:
            try:
                async with asyncio.timeout(self._timeout_s):
                    values = await self._saved(counters)
            except Exception as exc:  # the store is down or slow: count from here, and say so
                log.warning("budgets: cannot read saved spend for %s (%s); counting from zero", counters, exc)
        async with self._redis.pipeline(transaction=False) as pipe:
            for counter in counters:
                ttl = _DAY_TTL_MS if "|d:" in counter else _MONTH_TTL_MS
                pipe.set(self._key(counter), values.get(counter, 0), nx=True, px=ttl)
            await pipe.execute()

    async def add(self, charges: Sequence[Charge], delta: int) -> None:
        if not delta:
            return
        try:
            await self._add(
                keys=[self._key(c.counter) for c in charges], args=[delta, *(c.ttl_ms for c in charges)]
            )
        except Exception as exc:
            self._warn(exc)

    async def get(self, counter: str) -> int:
        try:
            value = await self._redis.get(self._key(counter))
            if value is None:
                await self._fill([counter])
                value = await self._redis.get(self._key(counter))
            return int(value or 0)
        except Exception as exc:
            self._warn(exc)
            return 0

    async def seed(self, read: Callable[[], Awaitable[dict[str, int]]]) -> None:
        pass  # Redis holds the truth; a counter it lacks is filled from the table on first use

    def prune(self, keep: Sequence[str]) -> None:
        pass  # Redis expires them

    def _warn(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._warned > _WARN_EVERY_S:
            self._warned = now
            log.warning("budgets: Redis unavailable (%s); budgets are not enforced meanwhile", exc)

    async def aclose(self) -> None:
        await self._redis.aclose()


def saved_spend(store: KeyStore) -> SavedSpend:
    """What ``store`` has saved for some counters (the ``SavedSpend`` of ``RedisCounters``)."""

    async def read(counters: Sequence[str]) -> dict[str, int]:
        split = [c.rpartition("|") for c in counters]  # a user name may hold "|", a period never
        saved = await store.spend(sorted({p for _, _, p in split}), sorted({s for s, _, _ in split}))
        wanted = set(counters)
        return {f"{s}|{p}": v for (s, p), v in saved.items() if f"{s}|{p}" in wanted}

    return read


class Ledger:
    """Budgets' spend: counters to check and reserve on, and the store that remembers them."""

    def __init__(self, store: KeyStore, counters: Counters) -> None:
        self.store = store
        self.counters = counters
        self._pending: dict[tuple[str, str], int] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._periods = periods()
        self._seeded = False
        self._down_logged_at: float | None = None  # when the store being down was last logged

    async def start(self) -> None:
        # Down: what was spent before is added once the database is back (``flush`` tries first,
        # before this process saves any spend of its own, so never twice).
        await unless_down(self._seed(), "budgets", "spend saved before now is counted once it is back")
        self._flusher = asyncio.create_task(self._flush_loop(), name="llmrelay-budget-flush")

    async def _seed(self) -> None:
        await self.counters.seed(self._saved_now)
        self._seeded = True

    async def _saved_now(self) -> dict[str, int]:
        """Every counter the store has for the current day and month."""
        known = await self.store.spend(list(periods()))
        return {f"{scope}|{period}": v for (scope, period), v in known.items()}

    async def reserve(self, charges: Sequence[Charge], amount: int) -> tuple[Charge, int] | None:
        if charges and charges[0].period not in self._periods:  # a new day: forget the old ones
            self._periods = periods()
            self.counters.prune(self._periods)
        return await self.counters.reserve(charges, amount)

    async def settle(self, charges: Sequence[Charge], reserved: int, actual: int) -> None:
        """Replace the reservation by the actual cost, and remember the cost for the store."""
        await self.counters.add(charges, actual - reserved)
        if actual:
            for c in charges:
                self._pending[(c.scope, c.period)] = self._pending.get((c.scope, c.period), 0) + actual

    async def spent(self, scope: str, period: str) -> Decimal:
        return from_pico(await self.counters.get(f"{scope}|{period}"))

    async def flush(self) -> None:
        if not self._seeded:
            try:
                await self._seed()
            except Exception as exc:  # still down: nothing is saved before the seed
                self._store_down("could not read saved spend", exc)
                return
        pending, self._pending = self._pending, {}
        if not pending:
            return
        try:
            await self.store.add_spend(pending)
        except Exception as exc:  # the store is down: keep the deltas for the next round
            for k, v in pending.items():
                self._pending[k] = self._pending.get(k, 0) + v
            self._store_down("could not save spend", exc)
            return
        if self._down_logged_at is not None:
            log.warning("budgets: the key store is back; spend is saved again")
            self._down_logged_at = None

    def _store_down(self, what: str, exc: Exception) -> None:
        """Once a minute while the store is down, not every second the flusher tries."""
        now = time.monotonic()
        if self._down_logged_at is None or now - self._down_logged_at > _WARN_EVERY_S:
            self._down_logged_at = now
            log.warning("budgets: %s (%s); retrying every second", what, exc)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(_FLUSH_S)
            await self.flush()

    async def aclose(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        await self.flush()
        await self.counters.aclose()
