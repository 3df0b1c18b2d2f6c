"""``examples/limits.yaml`` as shipped: its demo key gets 5 requests per minute, through either
wire format, and the master key is not held to that key's limit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest

from .conftest import Server, free_port, start_process, stop_process

EXAMPLE = Path(__file__).parent.parent / "examples" / "limits.yaml"
DEMO_KEY = "sk-llmrelay-demo-limited"  # the example's documented demo value
MASTER = "sk-llmrelay-demo-master"
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Server]:
    env = {"LLMRELAY_HOME": str(tmp_path / "home"), "REDIS_URL": ""}
    server = start_process(
        ["serve", "--config", str(EXAMPLE)], free_port(), tmp_path, ready_path="/healthz", env=env
    )
    yield server
    stop_process(server)


def test_the_demo_key_gets_five_requests_a_minute(gateway: Server) -> None:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=DEMO_KEY, max_retries=0) as client:
        remaining = []
        for _ in range(5):
            raw = client.chat.completions.with_raw_response.create(model="sim/gpt-4o-mini", messages=HI)
            assert raw.parse().choices[0].message.content
            assert raw.headers["x-ratelimit-limit-requests"] == "5"
            remaining.append(raw.headers["x-ratelimit-remaining-requests"])
        assert remaining == ["4", "3", "2", "1", "0"]
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model="sim/gpt-4o-mini", messages=HI)
    error = caught.value
    assert error.status_code == 429 and error.code == "rate_limit_exceeded"
    assert "API key key_demo_limited" in error.message and "limit 5" in error.message
    assert 1 <= int(error.response.headers["retry-after"]) <= 12  # one request per 12 s
    assert error.response.headers["x-ratelimit-remaining-requests"] == "0"
    # One bucket per key, whatever the route: the Anthropic format is refused too.
    claude = anthropic.Anthropic(base_url=gateway.url, api_key=DEMO_KEY, max_retries=0)
    with claude, pytest.raises(anthropic.RateLimitError) as refused:
        claude.messages.create(model="sim/gpt-4o-mini", max_tokens=20, messages=HI)
    assert refused.value.body["error"]["type"] == "rate_limit_error"
    # The master key has no such limit, and its responses carry no rate-limit headers.
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=MASTER, max_retries=0) as admin:
        for _ in range(6):
            raw = admin.chat.completions.with_raw_response.create(model="sim/gpt-4o-mini", messages=HI)
            assert "x-ratelimit-limit-requests" not in raw.headers
