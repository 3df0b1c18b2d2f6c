"""Circuit breakers and cooldowns per upstream deployment: in-process, or shared through Redis.

A breaker is closed (requests flow), open (the deployment is skipped for ``open_s``), then
half-open (a few probes go through: a success closes it, a failure re-opens it). It opens after
``consecutive_failures`` failures in a row, or when the error rate in a sliding ``window_s`` window
reaches ``error_rate`` with at least ``min_requests`` requests in it. A cooldown is separate: "skip
this deployment for N seconds" (a 429 with Retry-After) without counting as a failure.

``allow``/``record``/``cooldown``/``state`` sit on the request hot path, so they are synchronous
and touch only memory: a dict lookup and a few comparisons (a clock read when not plainly closed).

Why not a Redis round trip per request: it would add a network hop (~0.1-1 ms, far more under
load) to every request for information that changes a few times an hour, and would make every
request depend on Redis being up. Instead ``RedisBreakers`` runs the same state machine as
``LocalBreakers`` on a local view and syncs in the background, on one task:

* push, every ``push_interval_s`` (50 ms): outcomes and transitions queued by the hot path go out
  in one pipeline, fire and forget;
* pull, every ``pull_interval_s`` (250 ms): one pipeline reads the shared state of every known
  key, so a breaker opened by one replica is honoured by the others within ~0.3 s.

Redis layout, per deployment ``<key>`` under ``<prefix>`` (default ``llmrelay:breaker``):

* ``<prefix>:<key>`` hash: ``st`` (``open``/``closed``, the last transition any replica made) and
  ``consec`` (consecutive failures across replicas); TTL ``2*(open_s+window_s)+60`` s, refreshed
  on write.
* ``<prefix>:<key>:open``: exists while open; its PTTL is the time left. Redis keeps the time,
  so replicas' clocks never need to agree. Opening from closed uses SET NX (the first opener's
  deadline wins); a failed probe overwrites it (re-open).
* ``<prefix>:<key>:cool``: exists during a cooldown; PTTL is the time left.
* ``<prefix>:<key>:w:<bucket>:r|f``: requests/failures per ``window_s/10`` bucket of wall-clock
  time (NTP-level skew only blurs window edges), each expiring after the window.

Merging: time-bound states take the most pessimistic view (a local open or cooldown deadline only
moves later on a pull); the shared counters are evaluated on every pull, so failures spread over
replicas open the breaker as if one replica had seen them all; a close (a probe succeeded
somewhere) resets the shared counters and closes the breaker on every replica. A key with local
changes not pushed yet keeps its local state until the next round (local news wins). Each replica
sends its own half-open probes (up to ``half_open_probes`` each): coordinating probes would need a
round trip on the hot path.

Redis unreachable never fails a request: decisions stay local, a warning is logged at most once a
minute, the loop backs off and reconnects by itself, and once back it re-pushes local open
breakers and cooldowns (queued outcomes from the outage are dropped, not replayed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..errors import ConfigError
from ..redis_client import redis_client

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import Pipeline

log = logging.getLogger(__name__)

_LOCAL_BUCKETS = 20  # window resolution in-process: window_s / 20
_REDIS_BUCKETS = 10  # coarser in Redis: fewer keys to read on each pull
_MAX_QUEUED = 10_000  # events waiting for Redis; beyond this (Redis down) the oldest are dropped
_WARN_EVERY_S = 60.0


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    consecutive_failures: int = 5  # open after this many failures in a row
    error_rate: float = 0.5  # ...or when failures/requests in the window reach this
    window_s: float = 30.0  # sliding window for the error rate
    min_requests: int = 10  # the error rate only counts with at least this many requests in the window
    open_s: float = 30.0  # how long an open breaker stays open before half-open
    half_open_probes: int = 1  # requests let through while half-open; success closes, failure re-opens

    def __post_init__(self) -> None:
        if self.consecutive_failures < 1 or self.min_requests < 1 or self.half_open_probes < 1:
            raise ConfigError(
                "breaker consecutive_failures, min_requests and half_open_probes must be at least 1"
            )
        if not 0 < self.error_rate <= 1:
            raise ConfigError(f"breaker error_rate must be in (0, 1], not {self.error_rate}")
        if self.window_s <= 0 or self.open_s <= 0:
            raise ConfigError("breaker window_s and open_s must be positive")


@runtime_checkable
class Breakers(Protocol):
    def allow(self, key: str) -> bool: ...
    def record(self, key: str, ok: bool) -> None: ...
    def cooldown(self, key: str, seconds: float) -> None: ...
    def track(self, keys: Iterable[str]) -> None: ...
    def state(self, key: str) -> str: ...
    def snapshot(self) -> list[dict[str, Any]]: ...
    async def start(self) -> None: ...
    async def aclose(self) -> None: ...


class _Entry:
    """One deployment's breaker. Half-open is not stored: it is ``open`` past ``opened_until``."""

    __slots__ = (
        "buckets",
        "consecutive",
        "cooldown_until",
        "failures",
        "in_flight",
        "is_open",
        "opened_until",
        "probe_at",
        "requests",
        "shared",
    )

    def __init__(self) -> None:
        self.is_open = False
        self.opened_until = 0.0
        self.in_flight = 0  # half-open probes let through and not yet recorded
        self.probe_at = 0.0
        self.cooldown_until = 0.0  # 0.0 = none (lets allow() skip the clock when plainly closed)
        self.consecutive = 0
        self.buckets: deque[list[float]] = deque()  # [start, requests, failures], oldest first
        self.requests = 0  # totals over the buckets
        self.failures = 0
        self.shared: tuple[int, int, int] | None = None  # (consecutive, requests, failures) in Redis

    def count(self, now: float, ok: bool, width: float, window_s: float) -> None:
        self.slide(now, width, window_s)
        start = now - now % width
        if not self.buckets or self.buckets[-1][0] != start:
            self.buckets.append([start, 0, 0])
        bucket = self.buckets[-1]
        bucket[1] += 1
        self.requests += 1
        if ok:
            self.consecutive = 0
        else:
            bucket[2] += 1
            self.failures += 1
            self.consecutive += 1

    def slide(self, now: float, width: float, window_s: float) -> None:
        # A bucket leaves once all of it is older than the window: the window is window_s to
        # window_s + width long, in exchange for bounded memory at any request rate.
        buckets = self.buckets
        while buckets and buckets[0][0] + width <= now - window_s:
            _, requests, failures = buckets.popleft()
            self.requests -= int(requests)
            self.failures -= int(failures)

    def reset(self) -> None:
        self.is_open = False
        self.in_flight = 0
        self.consecutive = 0
        self.buckets.clear()
        self.requests = self.failures = 0


class LocalBreakers:
    """Breakers for one process. ``clock`` is injectable so tests can move time without sleeping."""

    def __init__(self, settings: BreakerSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._width = settings.window_s / _LOCAL_BUCKETS
        self._entries: dict[str, _Entry] = {}

    def allow(self, key: str) -> bool:
        e = self._entries.get(key)
        if e is None:
            self._entries[key] = _Entry()  # known from now on: in snapshots, and synced
            return True
        if not e.is_open and not e.cooldown_until:
            return True  # the common case, without reading the clock
        now = self._clock()
        if e.cooldown_until:
            if now < e.cooldown_until:
                return False
            e.cooldown_until = 0.0
        if not e.is_open:
            return True
        if now < e.opened_until:
            return False
        if e.in_flight >= self.settings.half_open_probes:
            if now - e.probe_at < self.settings.open_s:
                return False
            # The probes never reported (a cancelled caller, say): let another through rather
            # than stay half-open for good.
            e.in_flight = 0
        e.in_flight += 1
        e.probe_at = now
        return True

    def track(self, keys: Iterable[str]) -> None:
        """Know these deployments from the start: listed in snapshots and, with Redis, kept in
        step before this replica has sent them anything (so it can skip one opened elsewhere)."""
        for key in keys:
            self._entries.setdefault(key, _Entry())

    def record(self, key: str, ok: bool) -> None:
        e = self._entries.get(key)
        if e is None:
            e = self._entries[key] = _Entry()
        now = self._clock()
        if e.is_open:
            if now < e.opened_until or not e.in_flight:
                return  # the late result of a request let through before the breaker opened
            e.in_flight -= 1
            if ok:
                e.reset()
                self._closed(key)
            else:
                self._open(key, e, now, reopen=True)
            return
        e.count(now, ok, self._width, self.settings.window_s)
        self._outcome(key, ok)
        if self._trips(e.consecutive, e.requests, e.failures):
            self._open(key, e, now, reopen=False)

    def cooldown(self, key: str, seconds: float) -> None:
        if seconds <= 0:
            return
        e = self._entries.get(key)
        if e is None:
            e = self._entries[key] = _Entry()
        until = self._clock() + seconds
        if until > e.cooldown_until:  # a shorter cooldown never cuts a longer one short
            e.cooldown_until = until
            self._cooled(key, until)

    def state(self, key: str) -> str:
        e = self._entries.get(key)
        return "closed" if e is None else self._state(e, self._clock())

    def snapshot(self) -> list[dict[str, Any]]:
        now = self._clock()
        rows = []
        for key in sorted(self._entries):
            e = self._entries[key]
            e.slide(now, self._width, self.settings.window_s)
            retry_at = max(e.opened_until if e.is_open else 0.0, e.cooldown_until)
            rows.append(
                {
                    "key": key,
                    "state": self._state(e, now),
                    "consecutive_failures": e.consecutive,
                    "window_requests": e.requests,
                    "window_failures": e.failures,
                    "half_open_in_flight": e.in_flight if e.is_open else 0,
                    "retry_in_s": round(max(0.0, retry_at - now), 3),
                }
            )
        return rows

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    def _trips(self, consecutive: int, requests: int, failures: int) -> bool:
        s = self.settings
        return consecutive >= s.consecutive_failures or (
            requests >= s.min_requests and failures >= s.error_rate * requests
        )

    def _state(self, e: _Entry, now: float) -> str:
        if e.is_open and now < e.opened_until:
            return "open"
        if (
            e.is_open
            and e.in_flight >= self.settings.half_open_probes
            and now - e.probe_at < self.settings.open_s
        ):
            return "open"  # half-open with every probe out: as unusable as open until one reports
        if e.cooldown_until > now:
            return "cooldown"
        return "half_open" if e.is_open else "closed"

    def _open(self, key: str, e: _Entry, now: float, *, reopen: bool) -> None:
        e.is_open = True
        e.opened_until = now + self.settings.open_s
        e.in_flight = 0
        self._opened(key, e.opened_until, reopen)

    # Hooks for RedisBreakers: what changed locally, to share. No-ops here.
    def _outcome(self, key: str, ok: bool) -> None:
        pass

    def _opened(self, key: str, until: float, reopen: bool) -> None:
        pass

    def _closed(self, key: str) -> None:
        pass

    def _cooled(self, key: str, until: float) -> None:
        pass


@dataclass(slots=True)
class _Tally:
    """Outcomes of one key between two pushes."""

    requests: int = 0
    failures: int = 0
    trailing: int = 0  # failures since the last success in this batch
    saw_ok: bool = False


class RedisBreakers(LocalBreakers):
    """``LocalBreakers`` deciding locally, kept in step with other replicas through Redis."""

    def __init__(
        self,
        settings: BreakerSettings,
        redis_url: str,
        *,
        prefix: str = "llmrelay:breaker",
        push_interval_s: float = 0.05,
        pull_interval_s: float = 0.25,
        io_timeout_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(settings, clock)
        try:
            from redis.asyncio.connection import parse_url
        except ImportError:
            raise ConfigError(
                "A Redis URL is configured for breakers but the redis package is missing: "
                "pip install 'llmrelay[redis]'"
            ) from None
        try:
            where = parse_url(redis_url)
        except ValueError as exc:
            raise ConfigError(f"Invalid Redis URL for breakers: {exc}") from None
        # For log lines: never the password.
        self._where = where.get("path") or f"{where.get('host', 'localhost')}:{where.get('port', 6379)}"
        self.redis_url = redis_url
        self.prefix = prefix
        self.push_interval_s = push_interval_s
        self.pull_interval_s = pull_interval_s
        self.io_timeout_s = io_timeout_s
        self.connected = False  # the last sync round succeeded
        self._events: deque[tuple[str, str, float]] = deque(maxlen=_MAX_QUEUED)
        self._pending: set[str] = set()  # keys with events not pushed yet
        self._redis: Redis | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._warned_at = -math.inf
        self._warned = False  # a warning went out since the last successful round
        self._rwidth = settings.window_s / _REDIS_BUCKETS
        self._ttl = int(2 * (settings.open_s + settings.window_s)) + 60
        self._window_ttl = math.ceil(settings.window_s + 2 * self._rwidth) + 1

    # --- hooks: queue what changed, for the next push (a deque append: no I/O here) ---

    def _outcome(self, key: str, ok: bool) -> None:
        self._events.append(("ok" if ok else "fail", key, 0.0))
        self._pending.add(key)

    def _opened(self, key: str, until: float, reopen: bool) -> None:
        self._events.append(("reopen" if reopen else "open", key, until))
        self._pending.add(key)

    def _closed(self, key: str) -> None:
        self._events.append(("close", key, 0.0))
        self._pending.add(key)

    def _cooled(self, key: str, until: float) -> None:
        self._events.append(("cool", key, until))
        self._pending.add(key)

    def snapshot(self) -> list[dict[str, Any]]:
        rows = super().snapshot()
        for row in rows:
            shared = self._entries[row["key"]].shared
            row["shared_consecutive_failures"] = shared[0] if shared else None
            row["shared_window_requests"] = shared[1] if shared else None
            row["shared_window_failures"] = shared[2] if shared else None
        return rows

    # --- the background sync ---

    async def start(self) -> None:
        if self._task is not None:
            return
        # The loop below retries, and a slow Redis must not hold up the next round.
        self._redis = redis_client(
            self.redis_url, timeout_s=self.io_timeout_s, what="shared circuit breakers"
        )
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="llmrelay-breakers-sync")

    async def aclose(self) -> None:
        if self._task is not None:
            # Stop between rounds, not in the middle of a Redis call: a call cancelled halfway
            # can leave its connection mid-reply, and closing the client then hung (under load).
            self._stopping.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), self.io_timeout_s * 2)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        if self._redis is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.io_timeout_s * 2):
                    if self.connected:  # so peers learn of a breaker opened just before shutdown
                        await self._flush()
                    await self._redis.aclose()
            self._redis = None

    async def _run(self) -> None:
        from redis.exceptions import RedisError

        loop = asyncio.get_running_loop()
        next_pull = 0.0
        failed = 0
        while not self._stopping.is_set():
            try:
                async with asyncio.timeout(self.io_timeout_s):
                    await self._flush()
                    if loop.time() >= next_pull:
                        await self._pull()
                        next_pull = loop.time() + self.pull_interval_s
                if failed:
                    if self._warned:  # at most one line per warning, however often Redis flaps
                        log.info("Redis at %s is reachable again; breakers are shared again", self._where)
                        self._warned = False
                    self._resync()
                    failed = 0
                self.connected = True
                delay = self.push_interval_s
            except (RedisError, OSError, TimeoutError) as exc:  # down or slow: go on deciding locally
                self.connected = False
                failed += 1
                self._warn(exc)
                delay = min(2.0, self.push_interval_s * 2**failed)
            except Exception:  # a bug here must not end syncing for the life of the process
                self.connected = False
                failed += 1
                self._warn(None)
                delay = min(2.0, self.push_interval_s * 2**failed)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    def _warn(self, exc: Exception | None) -> None:
        """Log at most once a minute: an outage must not flood the log at 20 rounds a second."""
        now = time.monotonic()
        if now - self._warned_at < _WARN_EVERY_S:
            return
        self._warned_at = now
        self._warned = True
        if exc is None:
            log.exception("Breaker sync with Redis at %s failed; deciding locally", self._where)
        else:
            log.warning(
                "Redis at %s unreachable for breakers (%s: %s); deciding locally until it is back",
                self._where,
                type(exc).__name__,
                exc,
            )

    def _resync(self) -> None:
        """After an outage: push what this replica still holds against deployments."""
        now = self._clock()
        for key, e in self._entries.items():
            if e.is_open and e.opened_until > now:
                self._opened(key, e.opened_until, False)
            if e.cooldown_until > now:
                self._cooled(key, e.cooldown_until)

    def _k(self, key: str) -> str:
        return f"{self.prefix}:{key}"

    def _window_keys(self, key: str) -> list[str]:
        """Bucket keys covering the window, newest last, each as its ``r`` then ``f`` key."""
        now = int(time.time() // self._rwidth)  # wall clock: buckets must line up across replicas
        base = self._k(key)
        return [f"{base}:w:{b}:{rf}" for b in range(now - _REDIS_BUCKETS, now + 1) for rf in "rf"]

    async def _flush(self) -> None:
        if not self._events or self._redis is None:
            return
        events, self._events = self._events, deque(maxlen=_MAX_QUEUED)
        self._pending = set()
        now = self._clock()
        pipe = self._redis.pipeline(transaction=False)
        tallies: dict[str, _Tally] = {}
        for kind, key, until in events:
            if kind == "ok" or kind == "fail":
                t = tallies.get(key)
                if t is None:
                    t = tallies[key] = _Tally()
                t.requests += 1
                if kind == "ok":
                    t.saw_ok, t.trailing = True, 0
                else:
                    t.failures += 1
                    t.trailing += 1
                continue
            tally = tallies.pop(key, None)  # outcomes before a transition go first: order matters
            if tally is not None:
                self._push_tally(pipe, key, tally)
            base = self._k(key)
            if kind == "open" or kind == "reopen":
                ms = int((until - now) * 1000)
                if ms > 0:
                    pipe.set(f"{base}:open", 1, px=ms, nx=kind == "open")
                pipe.hset(base, "st", "open")
                pipe.expire(base, self._ttl)
            elif kind == "close":
                pipe.delete(f"{base}:open", *self._window_keys(key))
                pipe.hset(base, mapping={"st": "closed", "consec": 0})
                pipe.expire(base, self._ttl)
            elif kind == "cool":
                ms = int((until - now) * 1000)
                if ms > 0:
                    pipe.set(f"{base}:cool", 1, px=ms)
        for key, tally in tallies.items():
            self._push_tally(pipe, key, tally)
        await pipe.execute()

    def _push_tally(self, pipe: Pipeline, key: str, t: _Tally) -> None:
        base = self._k(key)
        if t.saw_ok:
            pipe.hset(base, "consec", t.trailing)
        elif t.failures:
            pipe.hincrby(base, "consec", t.failures)
        pipe.expire(base, self._ttl)
        r_key, f_key = self._window_keys(key)[-2:]
        pipe.incrby(r_key, t.requests)
        pipe.expire(r_key, self._window_ttl)
        if t.failures:
            pipe.incrby(f_key, t.failures)
            pipe.expire(f_key, self._window_ttl)

    async def _pull(self) -> None:
        if self._redis is None:
            return
        keys = list(self._entries)
        if not keys:
            return
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            base = self._k(key)
            pipe.hmget(base, "st", "consec")
            pipe.pttl(f"{base}:open")
            pipe.pttl(f"{base}:cool")
            pipe.mget(self._window_keys(key))
        replies = await pipe.execute()
        now = self._clock()
        for i, key in enumerate(keys):
            if key in self._pending:
                continue  # local news not pushed yet wins; the next round reconciles
            (st, consec), open_ms, cool_ms, window = replies[4 * i : 4 * i + 4]
            requests = sum(int(v) for v in window[0::2] if v)
            failures = sum(int(v) for v in window[1::2] if v)
            self._merge(key, st, int(consec or 0), open_ms, cool_ms, requests, failures, now)

    def _merge(
        self,
        key: str,
        st: str | None,
        consecutive: int,
        open_ms: int,
        cool_ms: int,
        requests: int,
        failures: int,
        now: float,
    ) -> None:
        e = self._entries[key]
        e.shared = (consecutive, requests, failures)
        if cool_ms > 0:  # PTTL is -2 for no key, -1 for no expiry (never written so)
            e.cooldown_until = max(e.cooldown_until, now + cool_ms / 1000)
        if open_ms > 0:
            until = now + open_ms / 1000
            if not e.is_open or e.opened_until <= now:  # closed or half-open here: a peer opened it
                e.is_open = True
                e.opened_until = until
                e.in_flight = 0
            else:
                e.opened_until = max(e.opened_until, until)
        elif st == "closed" and e.is_open:
            e.reset()  # a probe succeeded on a peer
        elif st == "open" and not e.is_open:
            # A peer opened it and its open time passed before we looked: probe, don't trust.
            e.is_open = True
            e.opened_until = now
            e.in_flight = 0
        if not e.is_open and self._trips(consecutive, requests, failures):
            self._open(key, e, now, reopen=False)  # failures spread over replicas add up


def build_breakers(settings: BreakerSettings, redis_url: str | None) -> Breakers:
    """In-process breakers, or breakers shared through Redis when ``redis_url`` is set."""
    if not redis_url:
        return LocalBreakers(settings)
    return RedisBreakers(settings, redis_url)


__all__ = ["BreakerSettings", "Breakers", "LocalBreakers", "RedisBreakers", "build_breakers"]
