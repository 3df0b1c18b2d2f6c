"""The retry/fallback plan, driven by hand: no clock, no sockets, no sleeping."""

from __future__ import annotations

import random

import pytest

from llmrelay.catalog import Catalog
from llmrelay.config import ExecuteSettings, Settings
from llmrelay.errors import (
    AllAttemptsFailed,
    GatewayError,
    InvalidRequestError,
    UpstreamBadRequest,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from llmrelay.reliability.policy import Try, Wait, attempt_plan, backoff
from llmrelay.types import ChatRequest

CATALOG = Catalog(
    Settings.from_dict(
        {
            "providers": {p: {"kind": "openai", "base_url": f"http://{p}"} for p in ("a", "b", "c")},
            "models": [
                {
                    "name": "main",
                    "deployments": [{"provider": "a", "upstream": "m"}, {"provider": "b", "upstream": "m"}],
                    "fallbacks": ["backup", "big"],
                    "context_window": 8_000,
                },
                {
                    "name": "backup",
                    "provider": "c",
                    "upstream": "x",
                    "capabilities": ["streaming"],
                    "context_window": 8_000,
                },
                {"name": "big", "provider": "c", "upstream": "y", "context_window": 200_000},
                {"name": "solo", "provider": "a", "upstream": "s"},
            ],
        }
    )
)
SETTINGS = ExecuteSettings(max_attempts=3, backoff_base_s=1, backoff_max_s=8, retry_after_max_s=10)


def request(**extra):
    return ChatRequest(**{"model": "main", "messages": [{"role": "user", "content": "hi"}], **extra})


class Driver:
    """Runs a plan, answering each Try from a script of outcomes per deployment key."""

    def __init__(self, chain, req, *, down=(), cooling=None, settings=SETTINGS):
        self.down = set(down)  # breaker open
        self.cooling: dict[str, float] = dict(cooling or {})
        self.plan = attempt_plan(
            chain,
            req,
            settings,
            self.pick,
            prompt_tokens=lambda: 10,
            cooldown=self.cooldown,
            rng=random.Random(1),
        )
        self.steps: list[str] = []

    def pick(self, entry, avoid, cooling):
        blocked = avoid | self.down | (set() if cooling else set(self.cooling))
        usable = [d for d in entry.deployments if d.key not in blocked]
        return usable[0] if usable else None

    def cooldown(self, key, seconds):
        self.cooling[key] = seconds

    def run(self, outcomes: dict[str, list[GatewayError | None]]):
        reply = None
        while True:
            try:
                step = self.plan.send(reply)
            except StopIteration:
                return self.steps
            if isinstance(step, Wait):
                self.steps.append(f"wait {step.seconds:g}")
                self.cooling.clear()  # waiting outlasts the cooldowns in these scripts
                reply = None
            else:
                assert isinstance(step, Try)
                self.steps.append(step.deployment.key)
                reply = outcomes[step.deployment.key].pop(0)


def boom():
    return UpstreamUnavailable("503", provider="x")


def test_success_first_time():
    assert Driver(CATALOG.chain("main"), request()).run({"a/m": [None]}) == ["a/m"]


def test_a_failing_deployment_is_avoided_while_another_exists():
    steps = Driver(CATALOG.chain("main"), request()).run({"a/m": [boom()], "b/m": [None]})
    assert steps == ["a/m", "b/m"]  # no wait: a different deployment is tried at once


def test_backoff_only_when_retrying_the_same_deployment():
    steps = Driver(CATALOG.chain("solo"), request(model="solo")).run({"a/s": [boom(), boom(), None]})
    assert steps[0] == "a/s" and steps[2] == "a/s" and steps[4] == "a/s"
    assert steps[1].startswith("wait") and steps[3].startswith("wait")


def test_full_jitter_is_bounded_by_the_cap():
    rng = random.Random(0)
    waits = [backoff(n, SETTINGS, rng) for n in range(1, 10) for _ in range(50)]
    assert all(0 <= w <= 8 for w in waits) and max(waits) > 4
    assert all(backoff(1, SETTINGS, rng) <= 1 for _ in range(100))


def test_fallback_after_the_model_is_exhausted_then_capabilities_are_respected():
    tools = [{"type": "function", "function": {"name": "f"}}]
    steps = Driver(CATALOG.chain("main"), request(tools=tools)).run(
        {"a/m": [boom(), boom()], "b/m": [boom()], "c/y": [None]}
    )
    # 3 attempts on main (a, b, then a again after backoff), "backup" skipped (no tools), "big" answers
    assert [s for s in steps if not s.startswith("wait")] == ["a/m", "b/m", "a/m", "c/y"]


def test_client_errors_are_not_retried():
    bad = UpstreamBadRequest("bad param", provider="a")
    driver = Driver(CATALOG.chain("main"), request())
    with pytest.raises(UpstreamBadRequest):
        driver.run({"a/m": [bad]})
    assert driver.steps == ["a/m"]


def test_context_length_moves_to_a_larger_window():
    too_long = UpstreamBadRequest("maximum context length", code="context_length_exceeded", provider="a")
    steps = Driver(CATALOG.chain("main"), request()).run({"a/m": [too_long], "c/y": [None]})
    assert steps == ["a/m", "c/y"]  # backup has the same 8k window: skipped


def test_retry_after_cools_the_deployment_and_falls_back_rather_than_waiting():
    limited = UpstreamRateLimited("429", retry_after=5, provider="a")
    driver = Driver(CATALOG.chain("main"), request())
    steps = driver.run({"a/m": [limited], "b/m": [None]})
    assert steps == ["a/m", "b/m"] and driver.cooling == {"a/m": 5}


def test_retry_after_is_waited_out_when_nothing_else_is_left():
    limited = UpstreamRateLimited("429", retry_after=3, provider="a")
    steps = Driver(CATALOG.chain("solo"), request(model="solo")).run({"a/s": [limited, None]})
    assert steps == ["a/s", "wait 3", "a/s"]


def test_a_retry_after_over_the_cap_is_not_waited():
    limited = UpstreamRateLimited("429", retry_after=60, provider="a")
    with pytest.raises(UpstreamRateLimited) as e:
        Driver(CATALOG.chain("solo"), request(model="solo")).run({"a/s": [limited]})
    # one kind of failure only: that error, its status and Retry-After, with the attempts listed
    assert e.value.status == 429 and e.value.headers() == {"retry-after": "60"}
    assert e.value.details() == {"attempts": ["a: UpstreamRateLimited: 429"]}


def test_open_breakers_are_skipped_and_everything_failing_lists_every_attempt():
    driver = Driver(CATALOG.chain("main"), request(), down={"b/m"})
    with pytest.raises(AllAttemptsFailed) as e:
        driver.run(
            {
                "a/m": [boom(), boom(), boom()],
                "c/x": [UpstreamTimeout("slow", provider="c")] * 3,
                "c/y": [boom(), boom(), boom()],
            }
        )
    error = e.value
    assert error.status == 502  # mixed failures
    assert len(error.attempts) == 9 and "UpstreamTimeout" in error.message
    assert "b/m" not in driver.steps


def test_no_usable_model_is_a_client_error_for_a_single_model():
    image = [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]
    settings = Settings.from_dict(
        {
            "providers": {"a": {"kind": "openai", "base_url": "http://a"}},
            "models": [{"name": "t", "provider": "a", "capabilities": ["streaming"]}],
        }
    )
    with pytest.raises(InvalidRequestError, match="vision"):
        Driver(
            Catalog(settings).chain("t"),
            ChatRequest(model="t", messages=[{"role": "user", "content": image}]),
        ).run({})


def test_all_breakers_open_everywhere_is_503_naming_why():
    driver = Driver(CATALOG.chain("main"), request(), down={"a/m", "b/m", "c/x", "c/y"})
    with pytest.raises(AllAttemptsFailed, match="circuit open") as e:
        driver.run({})
    assert e.value.status == 503


def test_a_wait_the_deadline_cannot_afford_ends_with_the_failures_so_far():
    limited = UpstreamRateLimited("429", retry_after=3, provider="a")
    driver = Driver(CATALOG.chain("solo"), request(model="solo"))
    assert driver.plan.send(None) == Try(CATALOG.get("solo").deployments[0])
    assert driver.plan.send(limited) == Wait(3)
    with pytest.raises(UpstreamRateLimited) as e:
        driver.plan.send(UpstreamTimeout("waiting 3s more would pass the deadline"))
    assert e.value.status == 429 and "deadline" in e.value.message


def test_a_chain_none_of_whose_models_fits_is_a_client_error():
    image = [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]
    settings = Settings.from_dict(
        {
            "providers": {"a": {"kind": "openai", "base_url": "http://a"}},
            "models": [
                {"name": "t", "provider": "a", "capabilities": ["streaming"], "fallbacks": ["u"]},
                {"name": "u", "provider": "a", "capabilities": ["tools"]},
            ],
        }
    )
    req = ChatRequest(model="t", messages=[{"role": "user", "content": image}])
    with pytest.raises(InvalidRequestError, match="'t' does not support vision.*'u' does not support vision"):
        Driver(Catalog(settings).chain("t"), req).run({})


def test_no_backoff_when_the_failure_just_opened_the_breaker():
    driver = Driver(CATALOG.chain("solo"), request(model="solo"))
    assert isinstance(driver.plan.send(None), Try)
    driver.down.add("a/s")  # the executor recorded the failure and the breaker opened
    with pytest.raises(UpstreamUnavailable):
        driver.plan.send(boom())
    assert driver.steps == []  # no Wait was asked for
