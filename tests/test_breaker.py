"""Circuit breakers: the state machine on a fake clock, and sharing between replicas through a real Redis."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from llmrelay.errors import ConfigError
from llmrelay.reliability.breaker import (
    Breakers,
    BreakerSettings,
    LocalBreakers,
    RedisBreakers,
    build_breakers,
)

from .conftest import REDIS_URL, redis_prefix_that_expires


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


def breakers(clock: Clock, **settings: float) -> LocalBreakers:
    return LocalBreakers(BreakerSettings(**settings), clock=clock)  # type: ignore[arg-type]


def fail(b: Breakers, key: str, n: int = 1) -> None:
    for _ in range(n):
        b.record(key, False)


# --- LocalBreakers ---------------------------------------------------------------------------


def test_unknown_key_is_closed_and_allowed(clock: Clock) -> None:
    b = breakers(clock)
    assert b.state("x") == "closed"
    assert b.allow("x")
    assert isinstance(b, Breakers)


def test_opens_after_consecutive_failures_and_a_success_resets_the_count(clock: Clock) -> None:
    b = breakers(clock, consecutive_failures=3, min_requests=1000)
    fail(b, "d", 2)
    b.record("d", True)
    fail(b, "d", 2)
    assert b.state("d") == "closed" and b.allow("d")
    fail(b, "d")
    assert b.state("d") == "open"
    assert not b.allow("d")
    assert b.allow("other")  # per deployment


def test_error_rate_needs_min_requests_in_the_window(clock: Clock) -> None:
    b = breakers(clock, consecutive_failures=100, error_rate=0.5, window_s=10, min_requests=4)
    b.record("d", False)
    b.record("d", True)
    b.record("d", False)
    assert b.state("d") == "closed"  # 2/3 failed, but only 3 requests
    b.record("d", True)
    assert b.state("d") == "open"  # 2/4 = 0.5 with 4 requests


def test_error_rate_window_slides(clock: Clock) -> None:
    b = breakers(clock, consecutive_failures=100, error_rate=0.5, window_s=10, min_requests=4)
    fail(b, "d", 2)
    clock.advance(6)
    b.record("d", True)
    clock.advance(5)  # the 2 failures are now older than the window; the first success is not
    b.record("d", True)
    assert b.state("d") == "closed"  # 2 of 4 failed, if the window did not slide
    (row,) = b.snapshot()
    assert (row["window_requests"], row["window_failures"]) == (2, 0)
    b.record("d", False)
    assert b.state("d") == "closed"  # 1/3
    b.record("d", False)
    assert b.state("d") == "open"  # 2/4


def test_open_then_half_open_and_a_successful_probe_closes(clock: Clock) -> None:
    b = breakers(clock, consecutive_failures=2, open_s=30)
    fail(b, "d", 2)
    clock.advance(29.9)
    assert b.state("d") == "open" and not b.allow("d")
    clock.advance(0.1)
    assert b.state("d") == "half_open"
    assert b.allow("d")  # the probe
    assert not b.allow("d")  # only one
    b.record("d", True)
    assert b.state("d") == "closed"
    assert b.allow("d") and b.allow("d")
    (row,) = b.snapshot()
    assert row["consecutive_failures"] == row["window_failures"] == 0  # a fresh start


def test_failed_probe_reopens_for_open_s(clock: Clock) -> None:
    b = breakers(clock, consecutive_failures=1, open_s=30)
    fail(b, "d")
    clock.advance(30)
    assert b.allow("d")
    b.record("d", False)
    assert b.state("d") == "open"
    clock.advance(29.9)
    assert not b.allow("d")
    clock.advance(0.1)
    assert b.state("d") == "half_open" and b.allow("d")


def test_half_open_lets_only_the_configured_probes_through(clock: Clock) -> None:
    b = breakers(clock, consecutive_failures=1, open_s=5, half_open_probes=2)
    fail(b, "d")
    clock.advance(5)
    assert [b.allow("d") for _ in range(4)] == [True, True, False, False]
    assert b.snapshot()[0]["half_open_in_flight"] == 2
    b.record("d", True)
    assert b.state("d") == "closed"


def test_a_probe_that_never_reports_does_not_wedge_half_open(clock: Clock) -> None:
    b = breakers(clock, consecutive_failures=1, open_s=5)
    fail(b, "d")
    clock.advance(5)
    assert b.allow("d")  # its caller is cancelled and never records
    clock.advance(4.9)
    assert not b.allow("d")
    clock.advance(0.1)
    assert b.allow("d")


def test_late_results_while_open_change_nothing(clock: Clock) -> None:
    b = breakers(clock, consecutive_failures=1, open_s=5)
    assert b.allow("d") and b.allow("d")
    b.record("d", False)
    b.record("d", True)  # the other request, let through before the breaker opened
    assert b.state("d") == "open"
    clock.advance(5)
    b.record("d", True)  # still not a probe: none was let through
    assert b.state("d") == "half_open"


def test_cooldown_skips_then_expires_without_touching_the_breaker(clock: Clock) -> None:
    b = breakers(clock, consecutive_failures=3)
    fail(b, "d", 2)
    b.cooldown("d", 10)
    b.cooldown("d", 2)  # a shorter one does not cut it short
    assert b.state("d") == "cooldown"
    assert not b.allow("d")
    clock.advance(9.9)
    assert not b.allow("d")
    clock.advance(0.1)
    assert b.state("d") == "closed" and b.allow("d")
    assert b.snapshot()[0]["consecutive_failures"] == 2
    b.cooldown("d", 0)
    assert b.state("d") == "closed"


def test_open_outranks_cooldown_in_state_and_cooldown_blocks_probes(clock: Clock) -> None:
    b = breakers(clock, consecutive_failures=1, open_s=5)
    fail(b, "d")
    b.cooldown("d", 8)
    assert b.state("d") == "open"
    clock.advance(5)
    assert b.state("d") == "cooldown" and not b.allow("d")
    clock.advance(3)
    assert b.state("d") == "half_open" and b.allow("d")


def test_snapshot(clock: Clock) -> None:
    b = breakers(clock, consecutive_failures=2, open_s=30)
    b.allow("a")
    b.record("a", True)
    fail(b, "b", 2)
    b.cooldown("c", 7)
    clock.advance(10)
    assert b.snapshot() == [
        {
            "key": "a",
            "state": "closed",
            "consecutive_failures": 0,
            "window_requests": 1,
            "window_failures": 0,
            "half_open_in_flight": 0,
            "retry_in_s": 0.0,
        },
        {
            "key": "b",
            "state": "open",
            "consecutive_failures": 2,
            "window_requests": 2,
            "window_failures": 2,
            "half_open_in_flight": 0,
            "retry_in_s": 20.0,
        },
        {
            "key": "c",
            "state": "closed",
            "consecutive_failures": 0,
            "window_requests": 0,
            "window_failures": 0,
            "half_open_in_flight": 0,
            "retry_in_s": 0.0,
        },
    ]


@pytest.mark.parametrize(
    "bad",
    [{"consecutive_failures": 0}, {"error_rate": 0}, {"error_rate": 1.5}, {"window_s": 0}, {"open_s": -1}],
)
def test_nonsense_settings_are_a_config_error(bad: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        BreakerSettings(**bad)  # type: ignore[arg-type]


# --- build_breakers --------------------------------------------------------------------------


def test_build_breakers_local_without_url() -> None:
    assert type(build_breakers(BreakerSettings(), None)) is LocalBreakers


def test_build_breakers_redis_with_url() -> None:
    assert type(build_breakers(BreakerSettings(), "redis://127.0.0.1:6379/0")) is RedisBreakers


def test_build_breakers_says_how_to_install_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "redis" or m.startswith("redis.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "redis", None)  # import redis -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'llmrelay\[redis\]'"):
        build_breakers(BreakerSettings(), "redis://127.0.0.1:6379/0")


def test_build_breakers_rejects_a_bad_redis_url() -> None:
    with pytest.raises(ConfigError, match="Redis URL"):
        build_breakers(BreakerSettings(), "http://127.0.0.1:6379")


# --- RedisBreakers against a real Redis ------------------------------------------------------


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    with redis_prefix_that_expires("breaker") as prefix:
        yield prefix


@pytest.fixture
async def replicas(redis_prefix: str) -> AsyncIterator[Callable[..., Awaitable[RedisBreakers]]]:
    started: list[RedisBreakers] = []

    async def replica(**settings: float) -> RedisBreakers:
        b = RedisBreakers(
            BreakerSettings(**settings),  # type: ignore[arg-type]
            REDIS_URL,
            prefix=redis_prefix,
            push_interval_s=0.02,
            pull_interval_s=0.1,
        )
        await b.start()
        started.append(b)
        return b

    yield replica
    for b in started:
        await b.aclose()


async def eventually(check: Callable[[], bool], within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "not within the time limit"
        await asyncio.sleep(0.02)


async def test_redis_failures_on_one_replica_open_the_breaker_on_another(replicas) -> None:
    a = await replicas(consecutive_failures=3, open_s=30)
    b = await replicas(consecutive_failures=3, open_s=30)
    assert b.allow("d")
    fail(a, "d", 3)
    assert a.state("d") == "open"
    started = time.monotonic()
    await eventually(lambda: b.state("d") == "open")
    assert time.monotonic() - started < 1.5
    assert not b.allow("d")
    assert 25 < b.snapshot()[0]["retry_in_s"] <= 30


async def test_redis_failures_spread_over_replicas_add_up(replicas) -> None:
    a = await replicas(consecutive_failures=4, min_requests=1000)
    b = await replicas(consecutive_failures=4, min_requests=1000)
    fail(a, "d", 2)
    fail(b, "d", 2)  # neither replica alone has seen 4 in a row
    await eventually(lambda: a.state("d") == "open" and b.state("d") == "open")
    row = a.snapshot()[0]
    assert row["consecutive_failures"] == 2 and row["shared_consecutive_failures"] == 4


async def test_redis_recovery_by_one_replica_closes_it_on_both(replicas) -> None:
    a = await replicas(consecutive_failures=2, open_s=0.5)
    b = await replicas(consecutive_failures=2, open_s=0.5)
    b.allow("d")
    fail(a, "d", 2)
    await eventually(lambda: b.state("d") == "open")
    await eventually(lambda: a.state("d") == "half_open")
    assert a.allow("d")
    a.record("d", True)
    assert a.state("d") == "closed"
    await eventually(lambda: b.state("d") == "closed")  # without a probe of its own
    assert b.allow("d")
    await asyncio.sleep(0.3)  # and it stays closed: the shared counters were reset too
    assert a.state("d") == b.state("d") == "closed"


async def test_redis_cooldown_is_shared(replicas) -> None:
    a = await replicas()
    b = await replicas()
    b.allow("d")
    a.cooldown("d", 20)
    await eventually(lambda: b.state("d") == "cooldown")
    assert not b.allow("d")
    assert 15 < b.snapshot()[0]["retry_in_s"] <= 20


async def test_redis_unreachable_still_decides_locally(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: connections are refused
    b = RedisBreakers(
        BreakerSettings(consecutive_failures=2),
        f"redis://127.0.0.1:{port}/0",
        push_interval_s=0.01,
        pull_interval_s=0.01,
        io_timeout_s=0.2,
    )
    with caplog.at_level(logging.WARNING, logger="llmrelay.reliability.breaker"):
        await b.start()
        assert b.allow("d")
        fail(b, "d", 2)
        b.cooldown("e", 5)
        await asyncio.sleep(0.3)  # several failed sync rounds
        assert b.state("d") == "open" and not b.allow("d")
        assert b.state("e") == "cooldown"
        assert b.allow("f")
        assert not b.connected
        await b.aclose()
    warnings = [r for r in caplog.records if r.name == "llmrelay.reliability.breaker"]
    assert len(warnings) == 1 and f"127.0.0.1:{port}" in warnings[0].getMessage()


def test_half_open_with_every_probe_out_reads_as_open():
    clock = [0.0]
    b = LocalBreakers(
        BreakerSettings(consecutive_failures=1, open_s=5, half_open_probes=1), clock=lambda: clock[0]
    )
    b.record("k", False)
    clock[0] = 6.0
    assert b.state("k") == "half_open"
    assert b.allow("k")  # the probe goes out
    assert b.state("k") == "open"  # nobody else should be sent, nor wait for it
    b.record("k", True)
    assert b.state("k") == "closed"
