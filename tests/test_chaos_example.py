"""examples/chaos.yaml as shipped: a primary failing about half the time, with every kind of fault,
stays invisible to a non-streaming client (retries and the fallback absorb it)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import httpx
import openai
import pytest

from .conftest import free_port, start_process, stop_process

CHAOS = Path(__file__).resolve().parent.parent / "examples" / "chaos.yaml"
PROMPT = "hello through the chaos"


@pytest.fixture(scope="module")
def chaos_gateway(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chaos")
    server = start_process(["serve", "--config", str(CHAOS)], free_port(), tmp, ready_path="/healthz")
    yield server
    stop_process(server)


@pytest.mark.timeout(40)
def test_a_flaky_primary_is_invisible_to_non_streaming_clients(chaos_gateway):
    models: Counter[str] = Counter()
    attempts: Counter[int] = Counter()
    started = time.monotonic()
    with openai.OpenAI(base_url=chaos_gateway.url + "/v1", api_key="x", max_retries=0, timeout=15) as client:
        for _ in range(30):
            raw = client.chat.completions.with_raw_response.create(
                model="chaotic", messages=[{"role": "user", "content": PROMPT}]
            )
            completion = raw.parse()  # raises on any non-2xx: every request must succeed
            assert completion.choices[0].message.content == f"You said: {PROMPT}"
            assert completion.model == raw.headers["x-llmrelay-model"]
            models[raw.headers["x-llmrelay-model"]] += 1
            attempts[int(raw.headers["x-llmrelay-attempts"])] += 1
    elapsed = time.monotonic() - started

    assert set(models) <= {"chaotic", "backup"}
    assert models["backup"] > 0, models  # the Anthropic-format fallback answered some
    assert any(n > 1 for n in attempts), attempts  # and some needed more than one attempt
    assert max(attempts) <= 4, attempts  # max_attempts 2 on chaotic, then 2 on backup
    assert elapsed < 20, f"30 requests took {elapsed:.1f}s (hangs and stalls should cost ~1 s each)"

    # The breaker watched it all: the primary's deployment is known, with failures on record.
    breakers = httpx.get(chaos_gateway.url + "/admin/breakers").json()["breakers"]
    primary = next(b for b in breakers if b["key"] == "sim-openai/gpt-4o-mini-chaotic")
    assert primary["consecutive_failures"] + primary["window_failures"] > 0, primary


def test_the_fault_free_twin_answers_at_the_first_attempt(chaos_gateway):
    with openai.OpenAI(base_url=chaos_gateway.url + "/v1", api_key="x", max_retries=0, timeout=15) as client:
        for _ in range(5):
            raw = client.chat.completions.with_raw_response.create(
                model="steady", messages=[{"role": "user", "content": PROMPT}]
            )
            assert raw.parse().choices[0].message.content == f"You said: {PROMPT}"
            assert raw.headers["x-llmrelay-model"] == "steady"
            assert raw.headers["x-llmrelay-attempts"] == "1"
