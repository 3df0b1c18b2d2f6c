"""The same pipeline in-process: ``Relay`` (async) and ``SyncRelay``."""

from __future__ import annotations

import pytest

from llmrelay import ChatRequest, Relay, SyncRelay
from llmrelay.errors import ModelNotFoundError, UpstreamRateLimited

from .conftest import gateway_config


@pytest.fixture
def config(simulator):
    return gateway_config(simulator.url)


async def test_relay_complete_and_stream(config):
    async with Relay(config) as relay:
        response = await relay.complete(
            model="claude-haiku", messages=[{"role": "user", "content": "library"}]
        )
        assert response.choices[0].message.content == "You said: library"
        assert response.usage.prompt_tokens > 0

        chunks = [
            c async for c in relay.stream(model="gpt-4o-mini", messages=[{"role": "user", "content": "s"}])
        ]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "You said: s"
        assert chunks[-1].usage is not None  # a canonical stream always ends with usage


async def test_relay_accepts_a_canonical_request_and_raises_our_errors(config):
    async with Relay(config) as relay:
        request = ChatRequest(model="gpt-4o-mini", messages=[{"role": "user", "content": "typed"}])
        assert (await relay.complete(request)).choices[0].message.content == "You said: typed"
        with pytest.raises(ModelNotFoundError):
            await relay.complete(model="nope", messages=[{"role": "user", "content": "x"}])
        with pytest.raises(UpstreamRateLimited) as e:
            await relay.complete(model="429-anthropic", messages=[{"role": "user", "content": "x"}])
        assert e.value.retry_after == 7


async def test_relay_embedded_default_starts_its_own_simulator():
    async with Relay() as relay:
        response = await relay.complete(
            model="sim/claude-sonnet", messages=[{"role": "user", "content": "hi"}]
        )
    assert response.choices[0].message.content == "You said: hi"
    assert response.model == "sim/claude-sonnet"


def test_sync_facade(config):
    with SyncRelay(config) as relay:
        response = relay.complete(model="gpt-4o-mini", messages=[{"role": "user", "content": "sync"}])
        assert response.choices[0].message.content == "You said: sync"
        text = "".join(
            c.choices[0].delta.content or ""
            for c in relay.stream(model="claude-haiku", messages=[{"role": "user", "content": "sync stream"}])
            if c.choices
        )
        assert text == "You said: sync stream"


async def test_count_tokens_asks_an_anthropic_upstream_and_counts_the_rest_itself(config):
    """Behind a route, the frontier tier's model counts; an Anthropic model's count is its
    upstream's (unreachable here: the error says so), an OpenAI-served one's is our tokenizer's."""
    from llmrelay.errors import UpstreamConnectionError

    from .conftest import free_port

    config["providers"]["gone-anthropic"] = {
        "kind": "anthropic",
        "base_url": f"http://127.0.0.1:{free_port()}",
    }
    config["models"].append({"name": "claude-gone", "provider": "gone-anthropic", "upstream": "claude-x"})
    config["routes"] = [
        {
            "name": "auto",
            "tiers": [{"name": "small", "model": "gpt-4o-mini"}, {"name": "big", "model": "claude-gone"}],
        }
    ]
    async with Relay(config) as relay:
        messages = [{"role": "user", "content": "count me"}]
        counted = await relay.count_tokens(ChatRequest(model="unreachable", messages=messages))
        assert counted == (await relay.complete(model="gpt-4o-mini", messages=messages)).usage.prompt_tokens
        for name in ("claude-gone", "auto"):
            with pytest.raises(UpstreamConnectionError):
                await relay.count_tokens(ChatRequest(model=name, messages=messages))
