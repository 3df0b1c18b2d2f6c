"""The gateway as an OpenAI SDK user sees it: sync and async, stream and not, tools, JSON mode,
and both upstream dialects behind the one OpenAI route."""

from __future__ import annotations

import json

import openai
import pytest

from .conftest import MASTER_KEY

MODELS = ["gpt-4o-mini", "claude-haiku"]  # an OpenAI upstream and an Anthropic upstream
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture
def client(gateway):
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=MASTER_KEY, max_retries=0) as client:
        yield client


@pytest.fixture
async def aclient(gateway):
    async with openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=MASTER_KEY, max_retries=0) as client:
        yield client


@pytest.mark.parametrize("model", MODELS)
def test_completion(client, model):
    raw = client.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}],
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "You said: hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == model
    assert completion.usage.prompt_tokens > 5 and completion.usage.completion_tokens >= 4
    assert raw.headers["x-llmrelay-request-id"].startswith("req_")
    assert float(raw.headers["x-llmrelay-cost-usd"]) > 0
    assert float(raw.headers["x-llmrelay-overhead-ms"]) >= 0


@pytest.mark.parametrize("model", MODELS)
def test_stream_with_usage(client, model):
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "stream me a reply"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "You said: stream me a reply"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert all(c.model == model for c in chunks)


def test_stream_without_usage_requested_has_no_usage_chunk(client):
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert chunks and all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)


@pytest.mark.parametrize("model", MODELS)
async def test_async_stream_and_completion(aclient, model):
    completion = await aclient.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "async"}]
    )
    assert completion.choices[0].message.content == "You said: async"
    stream = await aclient.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "async stream"}], stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "You said: async stream"


@pytest.mark.parametrize("model", MODELS)
def test_tool_call_round_trip(client, model):
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21}'},
    ]
    second = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].finish_reason == "stop"
    assert "21" in second.choices[0].message.content


@pytest.mark.parametrize("model", MODELS)
def test_streamed_tool_call(client, model):
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER_TOOL],
        stream=True,
    )
    name, arguments, ids, finish = "", "", set(), None
    for chunk in stream:
        for delta in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            assert delta.index == 0
            ids.add(delta.id) if delta.id else None
            name += delta.function.name or "" if delta.function else ""
            arguments += delta.function.arguments or "" if delta.function else ""
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    assert name == "get_weather" and len(ids) == 1
    assert json.loads(arguments) == {"city": "Paris"}
    assert finish == "tool_calls"


@pytest.mark.parametrize("model", MODELS)
def test_json_mode(client, model):
    completion = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Give me a JSON object about cats"}],
        response_format={"type": "json_object"},
    )
    assert isinstance(json.loads(completion.choices[0].message.content), dict)


def test_json_schema(client):
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    completion = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "a person"}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}},
    )
    data = json.loads(completion.choices[0].message.content)
    assert isinstance(data["name"], str) and isinstance(data["age"], int)


def test_images_pass_through(client):
    completion = client.chat.completions.create(
        model="claude-haiku",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "describe this"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                ],
            }
        ],
    )
    assert completion.choices[0].message.content == "You said: describe this"


def test_models_list(client):
    ids = [m.id for m in client.models.list()]
    assert ids[:3] == ["gpt-4o-mini", "claude-haiku", "text-only"]
    assert client.models.retrieve("claude-haiku").id == "claude-haiku"


def test_thinking_through_the_openai_route(client):
    """Extended thinking on an Anthropic model from the OpenAI SDK: ``thinking`` in extra_body, the
    blocks back as the message's ``thinking_blocks`` (streamed as deltas of them), and sent back
    with the assistant turn when the conversation goes on."""
    thinking = {"thinking": {"type": "enabled", "budget_tokens": 1024}}
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    ask = {"model": "claude-haiku", "max_tokens": 2048, "tools": [WEATHER_TOOL], "extra_body": thinking}
    first = client.chat.completions.create(messages=messages, **ask).choices[0].message
    (block,) = first.model_extra["thinking_blocks"]
    assert block["type"] == "thinking" and block["signature"] and first.tool_calls

    pieces: dict[str, str] = {"thinking": "", "signature": ""}
    for chunk in client.chat.completions.create(messages=messages, stream=True, **ask):
        for delta in (
            (chunk.choices[0].delta.model_extra or {}).get("thinking_blocks") or () if chunk.choices else ()
        ):
            for key in pieces:
                pieces[key] += delta.get(key) or ""
    assert pieces == {"thinking": block["thinking"], "signature": block["signature"]}

    turn = first.model_dump(exclude_none=True)
    result = {"role": "tool", "tool_call_id": first.tool_calls[0].id, "content": "21 degrees"}
    second = client.chat.completions.create(messages=[*messages, turn, result], **ask)
    assert "21" in second.choices[0].message.content
    turn["thinking_blocks"][0]["thinking"] += " (edited)"
    with pytest.raises(openai.BadRequestError, match="signature"):
        client.chat.completions.create(messages=[*messages, turn, result], **ask)

    plain = (
        client.chat.completions.create(model="gpt-4o-mini", messages=messages, extra_body=thinking)
        .choices[0]
        .message
    )
    assert "thinking_blocks" not in (plain.model_extra or {})  # not sent to an OpenAI upstream


def test_a_reasoning_servers_reasoning_content_comes_through(client):
    """An OpenAI-compatible upstream that reasons (DeepSeek, vLLM) answers with `reasoning_content`:
    it reaches the client, whole and streamed, and the message can be sent back as it is (the
    upstream, like DeepSeek, refuses reasoning_content in history: the gateway leaves it out)."""
    messages = [{"role": "user", "content": "think first"}]
    answer = client.chat.completions.create(model="reasoner", messages=messages)
    message = answer.choices[0].message
    reasoning = message.model_extra["reasoning_content"]
    assert "You said: think first" in reasoning and message.content == "You said: think first"
    assert answer.usage.completion_tokens_details.reasoning_tokens > 0

    pieces = [
        (c.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
        for c in client.chat.completions.create(model="reasoner", messages=messages, stream=True)
        if c.choices
    ]
    assert len([p for p in pieces if p]) > 1 and "".join(pieces) == reasoning

    again = client.chat.completions.create(
        model="reasoner", messages=[*messages, message, {"role": "user", "content": "and now?"}]
    )
    assert again.choices[0].message.content == "You said: and now?"
