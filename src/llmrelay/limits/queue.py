"""The wait for a deployment at its limits: a priority queue per upstream deployment.

A deployment with ``max_concurrency`` (this process's in-flight cap) or the provider's ``rpm`` /
``tpm`` (token buckets, shared through Redis when configured) admits requests while it has room.
When it has none, requests wait in its queue instead of failing, and are admitted one by one as
room frees (a request finishes, the buckets refill), highest priority first.

Ageing: a request's effective priority grows by one level per ``aging_s`` seconds of waiting, so a
steady stream of high-priority work cannot starve low-priority work forever. Every waiter ages at
the same rate, so the order between two waiters never changes while they wait: priority ``p``
entered at ``t`` ranks by ``p - t / aging_s`` (the ``+ now / aging_s`` common to all cancels), a
static heap key.

A waiter leaves the queue when it is admitted, when its wait reaches ``max_wait_s`` or the
request's deadline (503 ``queue_timeout``), or when its client disconnects (``Call.gone``). The
priority of a request is its virtual key's (default 0), or the priority header's value when it
sends one, up to its key's priority (a key's priority is also its ceiling; the master key and
gateways without keys have none).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ..catalog import Deployment
from ..config import QueueSettings, UpstreamLimits
from ..errors import ClientDisconnected, GatewayError, InvalidRequestError, QueueFull, QueueTimeout
from ..pipeline import Call
from ..types import Usage
from .buckets import Limit, Limiter, reserved_tokens, too_large_error
from .stats import LimitStats, QueueView

_RECHECK_S = 1.0  # a rate-limited queue re-asks the buckets at least this often (other replicas, refunds)


def priority_of(call: Call, header: str) -> int:
    """The request's priority: its key's, or the header's value up to its key's (docs above)."""
    key = call.key
    default = key.priority if key is not None else 0
    raw = call.headers.get(header)
    if raw is None:
        return default
    try:
        wanted = int(raw)
    except ValueError:
        raise InvalidRequestError(f"The {header} header must be an integer.", param=header) from None
    if key is not None and not key.admin:
        return min(wanted, key.priority)
    return wanted


@dataclass(eq=False, slots=True)
class _Waiter:
    priority: int
    tokens: int
    entered: float
    granted: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    out: bool = False  # no longer waiting (admitted, or gave up): skipped when it reaches the head


class Ticket:
    """Room on a deployment, held for one attempt; ``release`` it with the attempt's usage."""

    __slots__ = ("gate", "released", "tokens", "waited_s")

    def __init__(self, gate: Gate, tokens: int, waited_s: float) -> None:
        self.gate = gate
        self.tokens = tokens
        self.waited_s = waited_s
        self.released = False

    def release(self, usage: Usage | None) -> None:
        if not self.released:
            self.released = True
            self.gate.release(self.tokens, usage)


class Gate:
    """One deployment's limits and queue."""

    def __init__(
        self,
        key: str,
        limits: UpstreamLimits,
        limiter: Limiter,
        settings: QueueSettings,
        stats: LimitStats,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.key = key
        self.limits = limits
        self.limiter = limiter
        self.settings = settings
        self.stats = stats
        self.clock = clock
        self.in_flight = 0
        self.waiting = 0
        self._heap: list[tuple[float, int, _Waiter]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._pump_task: asyncio.Task[None] | None = None

    # --- the buckets ---

    def _buckets(self, tokens: int, sign: int = 1) -> list[Limit]:
        buckets = []
        if self.limits.rpm is not None and sign > 0:
            buckets.append(Limit(f"d:{self.key}:r", self.limits.rpm, 1, "requests", f"deployment {self.key}"))
        if self.limits.tpm is not None:
            buckets.append(
                Limit(f"d:{self.key}:t", self.limits.tpm, sign * tokens, "tokens", f"deployment {self.key}")
            )
        return buckets

    def too_large(self, tokens: int) -> bool:
        return self.limits.tpm is not None and tokens > self.limits.tpm

    async def _take(self, tokens: int) -> tuple[bool, float]:
        buckets = self._buckets(tokens)
        if not buckets:
            return True, 0.0
        decision = await self.limiter.acquire(buckets)
        return decision.allowed, decision.retry_after

    def has_slot(self) -> bool:
        cap = self.limits.max_concurrency
        return cap is None or self.in_flight < cap

    # --- entering and leaving ---

    async def enter(self, priority: int, tokens: int, timeout_s: float, call: Call | None = None) -> Ticket:
        """Room for one attempt: at once when there is some and nobody waits, else after waiting
        (``QueueTimeout`` past ``timeout_s``; cancelled, it leaves the queue)."""
        if self.waiting == 0 and self.has_slot():
            self.in_flight += 1  # held across the await: nobody else can take this slot meanwhile
            try:
                ok, _ = await self._take(tokens)
            except BaseException:
                self.in_flight -= 1
                raise
            if ok:
                return Ticket(self, tokens, 0.0)
            self.in_flight -= 1
        if self.waiting >= self.settings.max_depth:
            raise QueueFull(
                f"{self.key} is at its limits and {self.waiting} requests already wait for it; try again later.",
                retry_after=1.0,
            )
        entered = self.clock()
        waiter = _Waiter(priority, tokens, entered)
        heapq.heappush(self._heap, (-(priority - entered / self.settings.aging_s), next(self._seq), waiter))
        self.waiting += 1
        self._kick()
        try:
            await self._wait(waiter, timeout_s, call)
        except BaseException:
            self._leave(waiter)
            raise
        return Ticket(self, tokens, self.clock() - entered)

    async def _wait(self, waiter: _Waiter, timeout_s: float, call: Call | None) -> None:
        gone = call.gone() if call is not None and call.gone is not None else None
        if gone is None:
            try:
                async with asyncio.timeout(max(timeout_s, 0)):
                    await asyncio.shield(waiter.granted)
            except TimeoutError:
                raise self._timeout(timeout_s) from None
            return
        watcher = asyncio.ensure_future(gone)
        try:
            done, _ = await asyncio.wait(
                (waiter.granted, watcher), timeout=max(timeout_s, 0), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            watcher.cancel()
            with contextlib.suppress(BaseException):
                await watcher
        if waiter.granted in done:
            waiter.granted.result()  # raises what the pump failed it with, if anything
            return
        if watcher in done:
            raise ClientDisconnected("The client disconnected while its request waited for a deployment.")
        raise self._timeout(timeout_s)

    def _timeout(self, timeout_s: float) -> QueueTimeout:
        self.stats.timed_out(self.key)
        return QueueTimeout(
            f"{self.key} stayed at its limits (concurrency or the provider's rate) for the "
            f"{timeout_s:g}s this request could wait; try again later.",
            retry_after=1.0,
        )

    def _leave(self, waiter: _Waiter) -> None:
        """The waiter gave up; if room was granted to it meanwhile, hand that room back."""
        granted = waiter.granted
        if granted.done() and not granted.cancelled() and granted.exception() is None:
            self.release(waiter.tokens, None)
        elif not waiter.out:
            waiter.out = True
            self.waiting -= 1
            waiter.granted.cancel()

    def release(self, tokens: int, usage: Usage | None) -> None:
        """An attempt is over: free its slot, and correct its reserved tokens with what it used."""
        self.in_flight -= 1
        if self.limits.tpm is not None:
            used = usage.prompt_tokens + usage.completion_tokens if usage is not None else 0
            if used != tokens:
                self.limiter.adjust(self._buckets(tokens - used, sign=-1))
        self._wake.set()

    # --- admitting the waiters, one at a time, best first ---

    def _kick(self) -> None:
        if self._pump_task is None or self._pump_task.done():
            self._pump_task = asyncio.ensure_future(self._pump())
        self._wake.set()

    def _head(self) -> _Waiter | None:
        while self._heap:
            waiter = self._heap[0][2]
            if not waiter.out:
                return waiter
            heapq.heappop(self._heap)
        return None

    async def _pump(self) -> None:
        while (head := self._head()) is not None:
            if not self.has_slot():
                self._wake.clear()
                await self._wake.wait()  # a release
                continue
            self.in_flight += 1
            try:
                ok, retry_after = await self._take(head.tokens)
            except GatewayError as error:  # the shared buckets cannot be asked (fail-closed): say so
                self.in_flight -= 1
                if not head.out:
                    head.out = True
                    self.waiting -= 1
                    head.granted.set_exception(error)
                continue
            except BaseException:
                self.in_flight -= 1
                raise
            if head.out:  # gave up while we asked: give the room back
                self.in_flight -= 1
                if ok:
                    self.limiter.adjust(self._buckets(head.tokens, sign=-1))
                continue
            if ok:
                head.out = True  # popped when next at the top (a better waiter may sit above it now)
                self.waiting -= 1
                head.granted.set_result(None)
                continue
            self.in_flight -= 1
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(retry_after, _RECHECK_S)):
                    await self._wake.wait()

    def view(self) -> QueueView:
        now = self.clock()
        live = [w.entered for _, _, w in self._heap if not w.out]
        return QueueView(self.key, len(live), now - min(live) if live else 0.0, self.in_flight)

    async def aclose(self) -> None:
        if self._pump_task is not None:
            self._pump_task.cancel()
            with contextlib.suppress(BaseException):
                await self._pump_task


class Gates:
    """The gates of every deployment with limits; the executor asks one before each attempt."""

    def __init__(self, gates: dict[str, Gate], settings: QueueSettings, default_max_tokens: int) -> None:
        self.gates = gates
        self.settings = settings
        self.default_max_tokens = default_max_tokens

    async def enter(self, call: Call, deployment: Deployment, deadline: float) -> Ticket | None:
        """Room on ``deployment`` for one attempt of ``call`` (None: it has no limits), waiting
        in its queue up to ``max_wait_s`` or the call's ``deadline`` (``time.perf_counter``)."""
        gate = self.gates.get(deployment.key)
        if gate is None:
            return None
        tokens = 0
        if gate.limits.tpm is not None:
            tokens = await reserved_tokens(call.request, deployment.upstream, self.default_max_tokens)
            if gate.too_large(tokens):
                raise too_large_error(tokens, gate.limits.tpm, f"deployment {deployment.key}")
        priority = priority_of(call, self.settings.priority_header)
        timeout_s = min(self.settings.max_wait_s, deadline - time.perf_counter())
        return await gate.enter(priority, tokens, timeout_s, call)

    def __iter__(self) -> Iterator[Gate]:
        return iter(self.gates.values())

    def get(self, deployment_key: str) -> Gate | None:
        return self.gates.get(deployment_key)

    def has_room(self, deployment_key: str) -> bool:
        """Whether a request would go straight through (as far as this process knows: its
        concurrency and its queue; the shared buckets are only asked when it tries)."""
        gate = self.gates.get(deployment_key)
        return gate is None or (gate.waiting == 0 and gate.has_slot())

    def views(self) -> list[QueueView]:
        return [gate.view() for gate in self.gates.values()]

    async def aclose(self) -> None:
        for gate in self.gates.values():
            await gate.aclose()
