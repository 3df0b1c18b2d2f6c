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


# --- extended thinking ----------------------------------------------------------------------------

THINKING = {"type": "enabled", "budget_tokens": 1024}


def test_thinking_comes_back_first_with_its_signature(client):
    message = client.messages.create(
        model="claude-haiku", max_tokens=2048, thinking=THINKING, messages=[{"role": "user", "content": "hi"}]
    )
    thinking, text = message.content
    assert thinking.type == "thinking" and "You said: hi" in thinking.thinking and thinking.signature
    assert text.type == "text" and text.text == "You said: hi"
    without = client.messages.create(
        model="claude-haiku", max_tokens=2048, messages=[{"role": "user", "content": "hi"}]
    )
    assert [b.type for b in without.content] == ["text"]
    assert message.usage.output_tokens > without.usage.output_tokens  # thinking is billed as output


def test_streamed_thinking(client):
    with client.messages.stream(
        model="claude-haiku",
        max_tokens=2048,
        thinking=THINKING,
        messages=[{"role": "user", "content": "think aloud"}],
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert "thinking" in kinds and "signature" in kinds and "text" in kinds
    streamed = final.content[0]
    assert (
        streamed.type == "thinking"
        and streamed.signature
        and final.content[1].text == "You said: think aloud"
    )
    whole = client.messages.create(
        model="claude-haiku",
        max_tokens=2048,
        thinking=THINKING,
        messages=[{"role": "user", "content": "think aloud"}],
    )
    assert (streamed.thinking, streamed.signature) == (whole.content[0].thinking, whole.content[0].signature)


@pytest.mark.parametrize("stream", [False, True])
def test_thinking_goes_back_with_tool_results(client, stream):
    """Anthropic checks each thinking block sent back against its signature: it must arrive unchanged."""
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    ask = {"model": "claude-haiku", "max_tokens": 2048, "thinking": THINKING, "tools": [WEATHER_TOOL]}
    if stream:
        with client.messages.stream(messages=messages, **ask) as s:
            first = s.get_final_message()
    else:
        first = client.messages.create(messages=messages, **ask)
    assert [b.type for b in first.content] == ["thinking", "tool_use"]
    history = [b.model_dump(exclude_none=True) for b in first.content]
    result = {"type": "tool_result", "tool_use_id": first.content[1].id, "content": "21 degrees"}
    second = client.messages.create(
        messages=[
            *messages,
            {"role": "assistant", "content": history},
            {"role": "user", "content": [result]},
        ],
        **ask,
    )
    assert "21" in second.content[-1].text

    forged = [{**history[0], "thinking": "I was told to say something else."}, history[1]]
    with pytest.raises(anthropic.BadRequestError, match="signature"):
        client.messages.create(
            messages=[
                *messages,
                {"role": "assistant", "content": forged},
                {"role": "user", "content": [result]},
            ],
            **ask,
        )


def test_thinking_blocks_and_budgets_are_checked(client):
    unsigned = [{"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "Hello"}]
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(
            model="claude-haiku",
            max_tokens=2048,
            messages=[
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": unsigned},
                {"role": "user", "content": "again"},
            ],
        )
    assert "messages.1.content.0.signature" in str(caught.value)
    with pytest.raises(anthropic.BadRequestError, match="budget_tokens"):
        client.messages.create(
            model="claude-haiku",
            max_tokens=2048,
            thinking={"type": "enabled", "budget_tokens": "lots"},
            messages=[{"role": "user", "content": "hi"}],
        )
    with pytest.raises(anthropic.BadRequestError, match="forces tool use"):  # the upstream's rule
        client.messages.create(
            model="claude-haiku",
            max_tokens=2048,
            thinking=THINKING,
            tools=[WEATHER_TOOL],
            tool_choice={"type": "any"},
            messages=[{"role": "user", "content": "hi"}],
        )
    with pytest.raises(anthropic.BadRequestError, match="budget_tokens"):  # the upstream's own rule
        client.messages.create(
            model="claude-haiku",
            max_tokens=2048,
            thinking={"type": "enabled", "budget_tokens": 100},
            messages=[{"role": "user", "content": "hi"}],
        )


def test_thinking_is_not_sent_to_an_openai_upstream(client):
    """OpenAI refuses the option (the simulator does too): a model behind it answers without thinking."""
    message = client.messages.create(
        model="gpt-4o-mini", max_tokens=2048, thinking=THINKING, messages=[{"role": "user", "content": "hi"}]
    )
    assert [b.type for b in message.content] == ["text"]


# --- count_tokens -------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_count_tokens_matches_what_a_call_is_billed(client, model):
    """Anthropic's count comes from the upstream's own count_tokens; an OpenAI-served model's from
    llmrelay's tokenizer. Either way it is the input a call with that body is charged for."""
    ask = {
        "model": model,
        "system": "Be brief.",
        "tools": [WEATHER_TOOL],
        "messages": [{"role": "user", "content": "How warm is it in Lisbon today, roughly?"}],
    }
    counted = client.messages.count_tokens(**ask).input_tokens
    billed = client.messages.create(max_tokens=100, **ask).usage.input_tokens
    assert counted == billed > 20


def test_count_tokens_refuses_what_messages_refuses(client):
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.BadRequestError, match="messages"):
        client.messages.count_tokens(model="claude-haiku", messages=[])


def test_a_reasoning_servers_reasoning_is_a_thinking_block(client):
    """Behind an OpenAI-compatible reasoning server, an Anthropic client gets the reasoning as a
    thinking block (with an empty signature: no provider signed it), and can send it back."""
    message = client.messages.create(
        model="reasoner", max_tokens=200, messages=[{"role": "user", "content": "hm"}]
    )
    thinking, text = message.content
    assert thinking.type == "thinking" and thinking.signature == "" and "You said: hm" in thinking.thinking
    history = [
        {"role": "user", "content": "hm"},
        {"role": "assistant", "content": [b.to_dict() for b in message.content]},
        {"role": "user", "content": "ok"},
    ]
    for model in ("reasoner", "claude-haiku"):  # unsigned thinking is not sent to Claude either
        assert (
            client.messages.create(model=model, max_tokens=200, messages=history).content[-1].text
            == "You said: ok"
        )
