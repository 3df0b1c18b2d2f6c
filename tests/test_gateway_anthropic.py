"""The gateway's /v1/messages as an Anthropic SDK user sees it, in front of both upstream dialects."""

from __future__ import annotations

import anthropic
import pytest

from .conftest import MASTER_KEY

MODELS = ["claude-haiku", "gpt-4o-mini"]  # an Anthropic upstream and an OpenAI upstream
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture
def client(gateway):
    with anthropic.Anthropic(base_url=gateway.url, api_key=MASTER_KEY, max_retries=0) as client:
        yield client


@pytest.fixture
async def aclient(gateway):
    async with anthropic.AsyncAnthropic(base_url=gateway.url, api_key=MASTER_KEY, max_retries=0) as client:
        yield client


@pytest.mark.parametrize("model", MODELS)
def test_message(client, model):
    raw = client.messages.with_raw_response.create(
        model=model, max_tokens=100, system="Be brief.", messages=[{"role": "user", "content": "hello there"}]
    )
    message = raw.parse()
    assert message.content[0].type == "text"
    assert message.content[0].text == "You said: hello there"
    assert message.stop_reason == "end_turn"
    assert message.model == model
    assert message.usage.input_tokens > 5 and message.usage.output_tokens >= 4
    assert float(raw.headers["x-llmrelay-cost-usd"]) > 0


@pytest.mark.parametrize("model", MODELS)
def test_stream(client, model):
    with client.messages.stream(
        model=model, max_tokens=100, messages=[{"role": "user", "content": "stream this"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "You said: stream this"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0 and final.usage.input_tokens > 0


@pytest.mark.parametrize("model", MODELS)
async def test_async_message_and_stream(aclient, model):
    message = await aclient.messages.create(
        model=model, max_tokens=50, messages=[{"role": "user", "content": "async"}]
    )
    assert message.content[0].text == "You said: async"
    async with aclient.messages.stream(
        model=model, max_tokens=50, messages=[{"role": "user", "content": "async stream"}]
    ) as stream:
        assert "".join([t async for t in stream.text_stream]) == "You said: async stream"


@pytest.mark.parametrize("model", MODELS)
def test_tool_use_round_trip(client, model):
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.messages.create(model=model, max_tokens=200, messages=messages, tools=[WEATHER_TOOL])
    assert first.stop_reason == "tool_use"
    (tool_use,) = [b for b in first.content if b.type == "tool_use"]
    assert tool_use.name == "get_weather" and tool_use.input == {"city": "Paris"}
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "21 degrees"}],
        },
    ]
    second = client.messages.create(model=model, max_tokens=200, messages=messages, tools=[WEATHER_TOOL])
    assert second.stop_reason == "end_turn"
    assert "21" in second.content[0].text


@pytest.mark.parametrize("model", MODELS)
def test_streamed_tool_use(client, model):
    with client.messages.stream(
        model=model,
        max_tokens=200,
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
    ) as stream:
        final = stream.get_final_message()
    (tool_use,) = [b for b in final.content if b.type == "tool_use"]
    assert tool_use.input == {"city": "Paris"}
    assert final.stop_reason == "tool_use"


def test_models_list_in_anthropic_shape(client):
    assert [m.id for m in client.models.list()][:3] == ["gpt-4o-mini", "claude-haiku", "text-only"]
