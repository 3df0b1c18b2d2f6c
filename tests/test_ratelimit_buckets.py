"""Token-bucket arithmetic with an injected clock, the same on the in-process limiter and on the
Redis one (the machine's real Redis, the clock passed to the Lua script), plus Redis going away."""

from __future__ import annotations

import pytest

from llmrelay.errors import LimiterUnavailable
from llmrelay.limits import Limit, LocalLimiter, ratelimit_headers
from llmrelay.limits.redis_limiter import RedisLimiter
from llmrelay.limits.stats import LimitStats

from .conftest import REDIS_URL, free_port, redis_or_skip, redis_prefix_that_expires


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["local", "redis"])
async def limiter(request: pytest.FixtureRequest):
    clock = Clock()
    if request.param == "local":
        yield LocalLimiter(clock), clock
        return
    with redis_prefix_that_expires("buckets") as prefix:
        redis = RedisLimiter(REDIS_URL, prefix=prefix, clock=clock)
        yield redis, clock
        await redis.aclose()


def rpm(n: int, key: str = "k:a:r") -> Limit:
    return Limit(key, n, 1, "requests", "API key a")


def tpm(n: int, amount: float, key: str = "k:a:t") -> Limit:
    return Limit(key, n, amount, "tokens", "API key a")


async def settle(limiter) -> None:
    """Send the Redis limiter's queued reconciliations (it batches them)."""
    if isinstance(limiter, RedisLimiter):
        await limiter.flush()


async def test_a_full_bucket_allows_its_burst_then_refills_one_per_period(limiter) -> None:
    limiter, clock = limiter
    for i in range(6):
        decision = await limiter.acquire([rpm(6)])
        assert decision.allowed, i
        assert decision.levels == pytest.approx((5 - i,))
    refused = await limiter.acquire([rpm(6)])
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(10.0)  # 6 per minute: one every 10 s
    clock.now += 9.9
    assert not (await limiter.acquire([rpm(6)])).allowed
    clock.now += 0.1
    assert (await limiter.acquire([rpm(6)])).allowed
    assert not (await limiter.acquire([rpm(6)])).allowed


async def test_refill_stops_at_the_limit(limiter) -> None:
    limiter, clock = limiter
    assert (await limiter.acquire([rpm(60)])).allowed
    clock.now += 3600  # an hour idle refills one minute's worth, not sixty
    for _ in range(60):
        assert (await limiter.acquire([rpm(60)])).allowed
    assert not (await limiter.acquire([rpm(60)])).allowed


async def test_all_buckets_or_none(limiter) -> None:
    limiter, clock = limiter
    key, model = rpm(10, "k:a:r"), rpm(2, "m:gpt:r")
    assert (await limiter.acquire([key, model])).allowed
    assert (await limiter.acquire([key, model])).allowed
    refused = await limiter.acquire([key, model])
    assert not refused.allowed and refused.retry_after == pytest.approx(30.0)
    # The refusal by the model's bucket took nothing from the key's: 8 left, not 7.
    assert refused.levels == pytest.approx((8.0, 0.0))
    assert (await limiter.acquire([key])).levels == pytest.approx((7.0,))


async def test_the_longest_wait_is_the_retry_after(limiter) -> None:
    limiter, clock = limiter
    assert (await limiter.acquire([rpm(60), tpm(600, 600)])).allowed
    refused = await limiter.acquire([rpm(60), tpm(600, 300)])
    # requests: 59 left, fine; tokens: 0 left, 300 needed at 10/s -> 30 s
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(30.0)


async def test_tokens_are_reconciled_after_the_call(limiter) -> None:
    limiter, clock = limiter
    assert (await limiter.acquire([tpm(1000, 800)])).allowed  # reserved 800
    assert not (await limiter.acquire([tpm(1000, 300)])).allowed
    limiter.adjust([tpm(1000, -700)])  # it used 100: give 700 back
    await settle(limiter)
    decision = await limiter.acquire([tpm(1000, 300)])
    assert decision.allowed and decision.levels == pytest.approx((600.0,))


async def test_a_call_that_used_more_than_reserved_leaves_a_debt(limiter) -> None:
    limiter, clock = limiter
    assert (await limiter.acquire([tpm(600, 600)])).allowed
    limiter.adjust([tpm(600, 300)])  # it used 900: 300 more than reserved
    await settle(limiter)
    refused = await limiter.acquire([tpm(600, 100)])
    assert not refused.allowed
    assert refused.levels == pytest.approx((-300.0,))
    assert refused.retry_after == pytest.approx(40.0)  # 400 tokens at 10/s
    clock.now += 40
    assert (await limiter.acquire([tpm(600, 100)])).allowed


async def test_giving_back_never_overfills(limiter) -> None:
    limiter, clock = limiter
    assert (await limiter.acquire([tpm(100, 10)])).allowed
    limiter.adjust([tpm(100, -500)])
    await settle(limiter)
    assert (await limiter.acquire([tpm(100, 100)])).levels == pytest.approx((0.0,))


async def test_buckets_are_independent(limiter) -> None:
    limiter, clock = limiter
    assert (await limiter.acquire([rpm(1, "k:a:r")])).allowed
    assert not (await limiter.acquire([rpm(1, "k:a:r")])).allowed
    assert (await limiter.acquire([rpm(1, "k:b:r")])).allowed


def test_the_local_limiter_forgets_full_buckets() -> None:
    import asyncio

    clock = Clock()
    limiter = LocalLimiter(clock)
    for user in range(100):
        asyncio.run(limiter.acquire([rpm(10, f"u:-:{user}:r")]))
    assert len(limiter._buckets) == 100
    clock.now += 61  # each was one request short of full: 6 s to refill; the sweep runs each minute
    asyncio.run(limiter.acquire([rpm(10, "u:-:new:r")]))
    assert list(limiter._buckets) == ["u:-:new:r"]


def test_headers_name_the_bucket_with_the_least_left() -> None:
    limits = [rpm(100, "k:a:r"), rpm(10, "m:x:r"), tpm(10_000, 500, "k:a:t")]
    headers = ratelimit_headers(limits, [90.0, 4.0, 9_000.5])
    assert headers == {
        "x-ratelimit-limit-requests": "10",
        "x-ratelimit-remaining-requests": "4",
        "x-ratelimit-reset-requests": "36s",  # 6 requests at one per 6 s
        "x-ratelimit-limit-tokens": "10000",
        "x-ratelimit-remaining-tokens": "9000",
        "x-ratelimit-reset-tokens": "5.997s",
    }
    assert ratelimit_headers([tpm(600, 1)], [-3000.0])["x-ratelimit-reset-tokens"] == "6m0s"
    assert ratelimit_headers([rpm(6000)], [5999.9])["x-ratelimit-reset-requests"] == "1ms"


async def test_redis_down_fails_open_by_default_and_is_counted() -> None:
    redis_or_skip()  # the redis package is needed; the server is not
    stats = LimitStats()
    limiter = RedisLimiter(f"redis://127.0.0.1:{free_port()}/0", stats=stats, timeout_s=0.2)
    try:
        decision = await limiter.acquire([rpm(1)])
        assert decision.allowed and decision.levels is None  # unlimited, and no headers to send
        assert (await limiter.acquire([rpm(1)])).allowed
        assert stats.backend_errors == 2
    finally:
        await limiter.aclose()


async def test_redis_down_fails_closed_when_configured() -> None:
    redis_or_skip()
    limiter = RedisLimiter(f"redis://127.0.0.1:{free_port()}/0", fail_open=False, timeout_s=0.2)
    try:
        with pytest.raises(LimiterUnavailable) as caught:
            await limiter.acquire([rpm(1)])
        assert caught.value.status == 503 and caught.value.code == "rate_limiter_unavailable"
    finally:
        await limiter.aclose()


async def test_reconciliations_queued_together_all_count(limiter) -> None:
    limiter, clock = limiter
    for _ in range(3):
        assert (await limiter.acquire([tpm(900, 300), rpm(10)])).allowed
    for _ in range(3):  # three calls each used 100 of their 300 (the Redis limiter sends them as one)
        limiter.adjust([tpm(900, -200)])
    await settle(limiter)
    assert (await limiter.acquire([tpm(900, 600)])).levels == pytest.approx((0.0,))


async def test_concurrent_checks_of_one_bucket_admit_exactly_its_level(limiter) -> None:
    import asyncio

    limiter, clock = limiter
    decisions = await asyncio.gather(*(limiter.acquire([rpm(10), tpm(10_000, 100)]) for _ in range(25)))
    assert sum(d.allowed for d in decisions) == 10
    admitted = sorted(d.levels[0] for d in decisions if d.allowed)
    assert admitted == pytest.approx([float(n) for n in range(10)])  # each took its own one
    assert all(d.retry_after == pytest.approx(6.0) for d in decisions if not d.allowed)
