"""Token buckets for per-minute limits: the arithmetic, and the in-process limiter.

A limit of N per minute is a bucket holding up to N, refilled continuously at N/60 per second, so
a full bucket allows a burst of N and then N per minute. A request takes 1 from each requests
bucket and its reserved tokens (prompt + max output) from each tokens bucket; after the call the
tokens are reconciled with the usage (``adjust``), so a bucket may go below zero (a debt the refill
pays off first) when a call used more than it reserved.

Every check covers all the buckets of a request at once and takes from none unless all allow it:
a request refused by its key's limit must not eat into its model's. The Redis limiter
(redis_limiter.py) runs the same arithmetic in one Lua script; ``refill`` here is the reference.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from ..errors import RateLimitError
from ..tokens import count_messages_off_loop
from ..types import ChatRequest

WINDOW_S = 60.0  # limits are per minute
_SWEEP_EVERY_S = 60.0  # how often the local limiter forgets buckets that have refilled

Kind = Literal["requests", "tokens"]


@dataclass(frozen=True, slots=True)
class Limit:
    """One bucket to check and take from: ``amount`` out of ``per_minute``."""

    key: str  # the bucket's identity, e.g. "k:key_01J...:r" (scope, id, r|t)
    per_minute: int
    amount: float
    kind: Kind = "requests"
    scope: str = ""  # who it limits, for messages: "API key key_01J...", "model gpt-4o"

    @property
    def rate(self) -> float:
        """Refill per second."""
        return self.per_minute / WINDOW_S

    def reset_s(self, level: float) -> float:
        """Seconds until a bucket at ``level`` is full again."""
        return max(0.0, (self.per_minute - level) / self.rate)


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one check: admitted or not, and each bucket's level afterwards (taken from
    when admitted). ``levels`` is None when the limiter could not tell (its store was down)."""

    allowed: bool
    retry_after: float = 0.0  # seconds until every bucket would hold its amount (0 when allowed)
    levels: tuple[float, ...] | None = None


class Limiter(Protocol):
    async def acquire(self, limits: Sequence[Limit]) -> Decision: ...
    def adjust(self, limits: Sequence[Limit]) -> None: ...
    async def aclose(self) -> None: ...


def refill(level: float, updated: float, now: float, limit: Limit) -> float:
    """The bucket's level at ``now``, from ``level`` at ``updated`` (seconds)."""
    return min(float(limit.per_minute), level + max(0.0, now - updated) * limit.rate)


def check(levels: Sequence[float], limits: Sequence[Limit]) -> Decision:
    """Admit when every bucket holds its amount; else how long until they all would."""
    wait = 0.0
    for level, limit in zip(levels, limits, strict=True):
        if level < limit.amount:
            wait = max(wait, (limit.amount - level) / limit.rate)
    if wait > 0:
        return Decision(False, wait, tuple(levels))
    return Decision(
        True, 0.0, tuple(level - limit.amount for level, limit in zip(levels, limits, strict=True))
    )


async def reserved_tokens(request: ChatRequest, model: str, default_max_tokens: int) -> int:
    """What a request may spend before it is sent: its prompt, counted with ``model``'s tokenizer,
    plus its output cap (``max_tokens``, else the configured default)."""
    prompt = await count_messages_off_loop(request.messages, model)
    return prompt + (request.output_limit or default_max_tokens)


def too_large_error(tokens: int, per_minute: int, scope: str) -> RateLimitError:
    """A request no waiting can admit: it needs more tokens than a whole minute of the limit."""
    return RateLimitError(
        f"Request too large for the tokens per minute (TPM) of {scope}: limit {per_minute}, requested "
        f"{tokens} (prompt + max_tokens). Lower max_tokens or shorten the input.",
        code="request_too_large",
    )


class LocalLimiter:
    """Buckets in this process's memory: exact for one gateway process, N times too generous with
    N replicas (configure ``redis_url`` for those). ``clock`` returns seconds (monotonic)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._buckets: dict[str, tuple[float, float, float]] = {}  # key -> (level, updated, full at)
        self._swept = clock()

    def levels(self, limits: Sequence[Limit], now: float) -> list[float]:
        levels = []
        for limit in limits:
            state = self._buckets.get(limit.key)
            levels.append(
                float(limit.per_minute) if state is None else refill(state[0], state[1], now, limit)
            )
        return levels

    async def acquire(self, limits: Sequence[Limit]) -> Decision:
        now = self.clock()
        decision = check(self.levels(limits, now), limits)
        if decision.allowed:
            assert decision.levels is not None
            for limit, level in zip(limits, decision.levels, strict=True):
                self._store(limit, level, now)
        if now - self._swept > _SWEEP_EVERY_S:
            self._sweep(now)
        return decision

    def adjust(self, limits: Sequence[Limit]) -> None:
        """Take ``amount`` more from each bucket (a negative amount gives back, up to full)."""
        now = self.clock()
        for limit, level in zip(limits, self.levels(limits, now), strict=True):
            self._store(limit, min(float(limit.per_minute), level - limit.amount), now)

    def _store(self, limit: Limit, level: float, now: float) -> None:
        self._buckets[limit.key] = (level, now, now + limit.reset_s(level))

    def _sweep(self, now: float) -> None:
        """Forget the buckets that are full again: a missing bucket reads as full, and forgetting
        them keeps one-off end users from piling up in memory."""
        self._swept = now
        stale = [key for key, (_, _, full_at) in self._buckets.items() if full_at <= now]
        for key in stale:
            del self._buckets[key]

    async def aclose(self) -> None:
        self._buckets.clear()
