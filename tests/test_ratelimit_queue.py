"""The priority queue of a deployment at its limits, driven directly (no server): order, ageing,
the maximum wait, leaving it (cancelled, client gone), rate-limited admission, and priorities."""

from __future__ import annotations

import asyncio

import pytest

from llmrelay.config import QueueSettings, UpstreamLimits
from llmrelay.errors import ClientDisconnected, InvalidRequestError, QueueFull, QueueTimeout
from llmrelay.keys import VirtualKey
from llmrelay.limits import Gate, LocalLimiter, priority_of
from llmrelay.limits.stats import LimitStats
from llmrelay.pipeline import Call
from llmrelay.types import ChatRequest, Usage


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def gate(clock: Clock, **limits: int) -> Gate:
    return Gate(
        "up/model",
        UpstreamLimits(**limits),
        LocalLimiter(clock),
        QueueSettings(aging_s=10, max_depth=5),
        LimitStats(),
        clock=clock,
    )


async def until(predicate, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.001)


async def test_waiters_are_admitted_highest_priority_first_then_in_arrival_order() -> None:
    clock = Clock()
    g = gate(clock, max_concurrency=1)
    holder = await g.enter(0, 0, 5)
    admitted: list[str] = []

    async def wait(name: str, priority: int) -> None:
        ticket = await g.enter(priority, 0, 5)
        admitted.append(name)
        await asyncio.sleep(0)
        ticket.release(None)

    tasks = []
    for n, (name, priority) in enumerate(
        [("low", 0), ("high-1", 5), ("mid", 1), ("high-2", 5), ("mid-3", 3)], 1
    ):
        tasks.append(asyncio.create_task(wait(name, priority)))
        await until(lambda n=n: g.waiting == n)
    assert g.view().depth == 5
    holder.release(None)
    await asyncio.gather(*tasks)
    assert admitted == ["high-1", "high-2", "mid-3", "mid", "low"]
    assert g.in_flight == 0 and g.waiting == 0


async def test_ageing_lets_a_long_wait_overtake_a_newer_higher_priority() -> None:
    clock = Clock()
    g = gate(clock, max_concurrency=1)
    holder = await g.enter(0, 0, 5)
    admitted: list[str] = []

    async def wait(name: str, priority: int) -> None:
        (await g.enter(priority, 0, 5)).release(None)
        admitted.append(name)

    old = asyncio.create_task(wait("old-low", 0))
    await until(lambda: g.waiting == 1)
    clock.now += 60  # six aging periods: effective priority 6
    new = asyncio.create_task(wait("new-5", 5))
    newer = asyncio.create_task(wait("new-7", 7))
    await until(lambda: g.waiting == 3)
    assert g.view().oldest_wait_s == 60
    holder.release(None)
    await asyncio.gather(old, new, newer)
    assert admitted == ["new-7", "old-low", "new-5"]


async def test_the_wait_has_a_maximum_and_then_the_waiter_is_gone() -> None:
    clock = Clock()
    g = gate(clock, max_concurrency=1)
    holder = await g.enter(0, 0, 5)
    with pytest.raises(QueueTimeout) as caught:
        await g.enter(0, 0, 0.05)
    assert caught.value.status == 503 and caught.value.code == "queue_timeout"
    assert caught.value.headers() == {"retry-after": "1"}
    assert g.waiting == 0 and g.stats.queue_timeouts == {"up/model": 1}
    holder.release(None)
    assert (await g.enter(0, 0, 5)) is not None  # the slot is free again, nothing leaked
    assert g.in_flight == 1


async def test_a_cancelled_waiter_leaves_and_the_next_one_gets_the_room() -> None:
    clock = Clock()
    g = gate(clock, max_concurrency=1)
    holder = await g.enter(0, 0, 5)
    first = asyncio.create_task(g.enter(9, 0, 5))
    await until(lambda: g.waiting == 1)
    second = asyncio.create_task(g.enter(0, 0, 5))
    await until(lambda: g.waiting == 2)
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    assert g.waiting == 1
    holder.release(None)
    ticket = await second
    assert g.in_flight == 1 and g.waiting == 0
    ticket.release(None)
    assert g.in_flight == 0


async def test_a_client_that_disconnects_leaves_the_queue() -> None:
    clock = Clock()
    g = gate(clock, max_concurrency=1)
    holder = await g.enter(0, 0, 5)
    hung_up = asyncio.Event()

    async def gone() -> None:
        await hung_up.wait()

    call = Call(ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}]), gone=gone)
    waiting = asyncio.create_task(g.enter(0, 0, 5, call))
    await until(lambda: g.waiting == 1)
    hung_up.set()
    with pytest.raises(ClientDisconnected):
        await waiting
    assert g.waiting == 0 and g.view().depth == 0
    holder.release(None)
    assert g.in_flight == 0


async def test_a_full_queue_refuses_at_once() -> None:
    clock = Clock()
    g = gate(clock, max_concurrency=1)
    holder = await g.enter(0, 0, 5)
    tasks = [asyncio.create_task(g.enter(0, 0, 5)) for _ in range(5)]
    await until(lambda: g.waiting == 5)
    with pytest.raises(QueueFull) as caught:
        await g.enter(0, 0, 5)
    assert caught.value.code == "queue_full" and caught.value.status == 503
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    holder.release(None)
    assert g.waiting == 0 and g.in_flight == 0


async def test_a_rate_limited_deployment_admits_waiters_as_its_bucket_refills() -> None:
    clock = Clock()
    g = gate(clock, rpm=2)
    for _ in range(2):
        (await g.enter(0, 0, 5)).release(None)
    admitted: list[int] = []

    async def wait(priority: int) -> None:
        (await g.enter(priority, 0, 5)).release(None)
        admitted.append(priority)

    tasks = [asyncio.create_task(wait(p)) for p in (1, 2)]
    await until(lambda: g.waiting == 2)
    clock.now += 30  # one request's worth
    g._wake.set()
    await until(lambda: len(admitted) == 1)
    assert admitted == [2] and g.waiting == 1
    clock.now += 30
    g._wake.set()
    await asyncio.gather(*tasks)
    assert admitted == [2, 1]


async def test_tokens_reserved_on_a_deployment_are_reconciled_with_usage() -> None:
    clock = Clock()
    g = gate(clock, tpm=1000)
    ticket = await g.enter(0, 900, 5)
    ticket.release(Usage(prompt_tokens=50, completion_tokens=50))  # 800 given back
    ticket = await g.enter(0, 900, 0.05)  # fits only because of the refund
    ticket.release(None)  # failed without usage: all of it given back
    assert (await g.enter(0, 900, 0.05)) is not None  # 100 spent by the first, 900 left
    with pytest.raises(QueueTimeout):
        await g.enter(0, 1, 0.05)


def call_with(headers: dict[str, str], key: VirtualKey | None = None) -> Call:
    request = ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}])
    return Call(request, headers=headers, key=key)


def test_priority_comes_from_the_key_or_the_header_up_to_the_key() -> None:
    header = "x-llmrelay-priority"
    key = VirtualKey(id="key_1", owner="team", priority=5)
    assert priority_of(call_with({}), header) == 0
    assert priority_of(call_with({}, key), header) == 5
    assert priority_of(call_with({header: "2"}, key), header) == 2  # lower: always allowed
    assert priority_of(call_with({header: "-3"}, key), header) == -3
    assert priority_of(call_with({header: "9"}, key), header) == 5  # higher: capped at the key's
    admin = VirtualKey(id="master", owner="admin", admin=True)
    assert priority_of(call_with({header: "9"}, admin), header) == 9
    assert priority_of(call_with({header: "9"}), header) == 9  # no keys on this gateway
    with pytest.raises(InvalidRequestError) as caught:
        priority_of(call_with({header: "high"}), header)
    assert caught.value.param == header and caught.value.status == 400


async def test_a_waiter_gets_the_limiters_error_when_the_shared_buckets_are_down() -> None:
    pytest.importorskip("redis")
    from llmrelay.errors import LimiterUnavailable
    from llmrelay.limits.redis_limiter import RedisLimiter

    from .conftest import free_port

    limiter = RedisLimiter(f"redis://127.0.0.1:{free_port()}/0", fail_open=False, timeout_s=0.2)
    g = Gate("up/model", UpstreamLimits(rpm=10, max_concurrency=1), limiter, QueueSettings(), LimitStats())
    try:
        with pytest.raises(LimiterUnavailable):  # straight through: refused at once
            await g.enter(0, 0, 5)
        assert g.in_flight == 0
        g.in_flight = 1  # as if an attempt were in flight (its check predates the outage)
        waiting = asyncio.create_task(g.enter(0, 0, 5))
        await until(lambda: g.waiting == 1)
        g.release(0, None)
        with pytest.raises(LimiterUnavailable):  # refused from the queue, not left to time out
            await waiting
        assert g.waiting == 0 and g.in_flight == 0
    finally:
        await g.aclose()
        await limiter.aclose()
