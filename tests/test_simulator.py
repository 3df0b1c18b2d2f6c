"""The simulator over real sockets, driven by the official openai and anthropic SDKs."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
import pytest_asyncio

from llmrelay import tokens
from llmrelay.errors import ConfigError
from llmrelay.simulator import SimulatorServer, SimulatorSettings, load_rules, serve
from llmrelay.simulator.answer import placeholder
from llmrelay.simulator.extras import pseudo_embedding
from llmrelay.simulator.render import split_tokens
from llmrelay.types import Message

try:  # the anthropic SDK's HTTP layer: recent releases ship their own fork of httpx
    import httpx2 as ant_httpx
except ImportError:  # pragma: no cover - older SDKs
    import httpx as ant_httpx

# One event loop for the module, so one simulator serves most tests (plain tests are async too for that).
pytestmark = pytest.mark.asyncio(loop_scope="module")

RULES = [
    {"match": r"^ping$", "reply": "pong"},
    {"match": r"weather in (\w+)", "tool_call": {"name": "get_weather", "arguments": {"city": r"\1"}}},
    {"match": "status please", "json": {"status": "ok", "n": 3}},
    {"match": "only for claude", "model": "claude-*", "reply": "claude rule"},
]
LONG_TEXT = "The quick brown fox jumps over the lazy dog near the river bank. " * 120  # ~1600 tokens


async def _start(**settings: object) -> SimulatorServer:
    server = SimulatorServer(SimulatorSettings(port=0, rules=RULES, **settings))  # type: ignore[arg-type]
    await server.start()
    return server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sim() -> AsyncIterator[SimulatorServer]:
    server = await _start()
    yield server
    await server.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def oai(sim: SimulatorServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=sim.url + "/v1", api_key="test", max_retries=0, timeout=10
    ) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="module")
async def ant(sim: SimulatorServer) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=sim.url, api_key="test", max_retries=0, timeout=10
    ) as client:
        yield client


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


# --- OpenAI chat ------------------------------------------------------------------------------


async def test_openai_echo_and_usage_match_tokenizer(oai: openai.AsyncOpenAI) -> None:
    messages = [{"role": "system", "content": "Be brief."}, *_user("hello there")]
    r = await oai.chat.completions.create(model="gpt-4o", messages=messages)
    assert r.choices[0].message.content == "You said: hello there"
    assert r.choices[0].finish_reason == "stop"
    assert r.model == "gpt-4o"
    canonical = [Message.model_validate(m) for m in messages]
    assert r.usage is not None
    assert r.usage.prompt_tokens == tokens.count_messages(canonical, "gpt-4o")
    assert r.usage.completion_tokens == tokens.count_text("You said: hello there", "gpt-4o")
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


async def test_openai_stream_with_usage(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.chat.completions.create(
        model="gpt-4o-mini",
        messages=_user("stream this sentence back to me please"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "You said: stream this sentence back to me please"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 2  # really split up
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == tokens.count_text(text, "gpt-4o-mini")


async def test_openai_stream_without_usage(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.chat.completions.create(model="gpt-4o", messages=_user("ping"), stream=True)
    chunks = [c async for c in stream]
    assert all(c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "pong"


async def test_openai_tool_call_rule(oai: openai.AsyncOpenAI) -> None:
    r = await oai.chat.completions.create(model="gpt-4o", messages=_user("What is the weather in Oslo?"))
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Oslo"}


async def test_openai_tool_call_stream(oai: openai.AsyncOpenAI) -> None:
    stream = await oai.chat.completions.create(model="gpt-4o", messages=_user("weather in Lima"), stream=True)
    deltas = [c.choices[0] for c in [c async for c in stream] if c.choices]
    calls = [d.delta.tool_calls[0] for d in deltas if d.delta.tool_calls]
    assert calls[0].id and calls[0].function and calls[0].function.name == "get_weather"
    assert len(calls) > 2  # arguments arrive in pieces
    arguments = "".join(c.function.arguments or "" for c in calls if c.function)
    assert json.loads(arguments) == {"city": "Lima"}
    assert deltas[-1].finish_reason == "tool_calls"


async def test_forced_tool_choice(oai: openai.AsyncOpenAI, ant: anthropic.AsyncAnthropic) -> None:
    params = {
        "type": "object",
        "properties": {"q": {"type": "string"}, "n": {"type": "integer"}},
        "required": ["q"],
    }
    tools = [{"type": "function", "function": {"name": "search", "parameters": params}}]
    r = await oai.chat.completions.create(
        model="gpt-4o",
        messages=_user("find cats"),
        tools=tools,  # type: ignore[arg-type]
        tool_choice={"type": "function", "function": {"name": "search"}},
    )
    call = (r.choices[0].message.tool_calls or [])[0]
    assert call.function.name == "search" and json.loads(call.function.arguments) == {"q": "find cats"}
    # "required" with a matching tool_call rule uses the rule's arguments
    weather = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    r = await oai.chat.completions.create(
        model="gpt-4o",
        messages=_user("weather in Bergen"),
        tools=weather,  # type: ignore[arg-type]
        tool_choice="required",
    )
    assert json.loads((r.choices[0].message.tool_calls or [])[0].function.arguments) == {"city": "Bergen"}
    # JSON mode as a forced tool (how the gateway asks Anthropic for JSON)
    m = await ant.messages.create(
        model="claude-haiku-4-5",
        max_tokens=100,
        tools=[{"name": "json_response", "input_schema": {"type": "object"}}],
        tool_choice={"type": "tool", "name": "json_response"},
        messages=_user("cats"),
    )
    assert m.content[0].type == "tool_use" and m.content[0].input == {"answer": "cats"}


async def test_openai_tool_result_is_acknowledged(oai: openai.AsyncOpenAI) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    messages = [
        *_user("weather in Oslo"),
        {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "12 degrees and rain"},
    ]
    r = await oai.chat.completions.create(model="gpt-4o", messages=messages)  # type: ignore[arg-type]
    assert r.choices[0].message.content == "The tool returned: 12 degrees and rain"


async def test_openai_json_rule_and_json_modes(oai: openai.AsyncOpenAI) -> None:
    r = await oai.chat.completions.create(model="gpt-4o", messages=_user("status please"))
    assert json.loads(r.choices[0].message.content or "") == {"status": "ok", "n": 3}
    r = await oai.chat.completions.create(
        model="gpt-4o", messages=_user("anything"), response_format={"type": "json_object"}
    )
    assert json.loads(r.choices[0].message.content or "") == {"answer": "anything"}
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "kind": {"enum": ["a", "b"]},
            "extra": {"type": "string"},
        },
        "required": ["name", "age", "tags", "kind"],
    }
    r = await oai.chat.completions.create(
        model="gpt-4o",
        messages=_user("Bob"),
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}},
    )
    assert json.loads(r.choices[0].message.content or "") == {
        "name": "Bob",
        "age": 0,
        "tags": [],
        "kind": "a",
    }


async def test_schema_placeholder_refs_and_nesting() -> None:
    schema = {
        "type": "object",
        "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}},
        "properties": {
            "p": {"$ref": "#/$defs/Point"},
            "ok": {"type": "boolean"},
            "maybe": {"type": ["null", "string"]},
            "pts": {"type": "array", "items": {"$ref": "#/$defs/Point"}, "minItems": 1},
        },
        "required": ["p", "ok", "maybe", "pts"],
    }
    assert placeholder(schema, "t") == {"p": {"x": 0}, "ok": False, "maybe": "t", "pts": [{"x": 0}]}


async def test_a_schema_asking_for_millions_of_items_gets_a_cut_off_answer_at_once(
    oai: openai.AsyncOpenAI,
) -> None:
    # The embedded simulator shares the gateway's event loop: building 10^8 items would stall
    # every other request for minutes. A real model would run out of output tokens instead.
    huge = {"type": "array", "items": {"type": "string"}, "minItems": 100_000_000}
    nested = {"type": "array", "items": {"type": "array", "items": {"type": "integer"}, "minItems": 10**6}}
    nested["minItems"] = 10**6
    assert len(placeholder(huge, "t")) == 10_000
    grid = placeholder(nested, "t")
    assert grid == [[0] * 10_000]
    assert placeholder({"type": "array", "minItems": "many"}, "t") == []
    started = time.monotonic()
    r = await oai.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "list"}],
        max_tokens=50,
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": huge}},
    )
    assert time.monotonic() - started < 5
    assert r.choices[0].finish_reason == "length" and r.usage is not None
    assert r.usage.completion_tokens == 50


async def test_stream_pieces_never_split_characters() -> None:
    text = "日本語のテキスト 🎉🎉 café naïve — done"
    pieces = split_tokens(text, "gpt-4o", per_chunk=1)
    assert "".join(p for p, _ in pieces) == text
    assert all("\ufffd" not in p for p, _ in pieces)
    assert sum(n for _, n in pieces) == tokens.count_text(text, "gpt-4o")


async def test_openai_max_tokens_truncates(oai: openai.AsyncOpenAI) -> None:
    reply = "one two three four five six seven eight nine ten"
    r = await oai.chat.completions.create(
        model="gpt-4o", messages=_user("x"), max_tokens=4, extra_headers={"x-sim-reply": reply}
    )
    enc = tokens.encoding_for("gpt-4o")
    assert r.choices[0].finish_reason == "length"
    assert r.choices[0].message.content == enc.decode(enc.encode(reply)[:4])
    assert r.usage is not None and r.usage.completion_tokens == 4


async def test_openai_stop_sequence(oai: openai.AsyncOpenAI) -> None:
    r = await oai.chat.completions.create(
        model="gpt-4o",
        messages=_user("x"),
        stop=["END", "zzz"],
        extra_headers={"x-sim-reply": "keep this END drop"},
    )
    assert r.choices[0].message.content == "keep this "
    assert r.choices[0].finish_reason == "stop"


async def test_rule_model_glob(oai: openai.AsyncOpenAI, ant: anthropic.AsyncAnthropic) -> None:
    r = await oai.chat.completions.create(model="gpt-4o", messages=_user("only for claude"))
    assert r.choices[0].message.content == "You said: only for claude"
    m = await ant.messages.create(model="claude-haiku-4-5", max_tokens=50, messages=_user("only for claude"))
    assert m.content[0].type == "text" and m.content[0].text == "claude rule"


async def test_openai_prompt_caching(oai: openai.AsyncOpenAI) -> None:
    messages = [{"role": "system", "content": LONG_TEXT}, *_user("first question")]
    first = await oai.chat.completions.create(model="gpt-4o", messages=messages)
    assert first.usage is not None and first.usage.prompt_tokens > 1024
    assert first.usage.prompt_tokens_details is not None
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    messages[-1] = {"role": "user", "content": "a different question"}
    second = await oai.chat.completions.create(model="gpt-4o", messages=messages)
    assert second.usage is not None and second.usage.prompt_tokens_details is not None
    cached = second.usage.prompt_tokens_details.cached_tokens or 0
    assert 1024 <= cached < second.usage.prompt_tokens
    assert (cached - 1024) % 128 == 0


# --- Anthropic --------------------------------------------------------------------------------


async def test_anthropic_echo_and_usage(ant: anthropic.AsyncAnthropic) -> None:
    m = await ant.messages.create(
        model="claude-haiku-4-5", max_tokens=100, system="Be brief.", messages=_user("hello claude")
    )
    assert m.content[0].type == "text" and m.content[0].text == "You said: hello claude"
    assert m.stop_reason == "end_turn"
    canonical = [Message(role="system", content="Be brief."), Message(role="user", content="hello claude")]
    assert m.usage.input_tokens == tokens.count_messages(canonical, "claude-haiku-4-5")
    assert m.usage.output_tokens == tokens.count_text("You said: hello claude", "claude-haiku-4-5")


async def test_anthropic_stream(ant: anthropic.AsyncAnthropic) -> None:
    async with ant.messages.stream(
        model="claude-haiku-4-5", max_tokens=100, messages=_user("say this back in several pieces")
    ) as stream:
        events = [e.type async for e in stream]
        final = await stream.get_final_message()
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert events.count("content_block_delta") > 2
    assert final.content[0].type == "text"
    assert final.content[0].text == "You said: say this back in several pieces"
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens > 0
    assert final.usage.output_tokens == tokens.count_text(final.content[0].text, "claude-haiku-4-5")


async def test_anthropic_tools(ant: anthropic.AsyncAnthropic) -> None:
    tools = [{"name": "get_weather", "description": "d", "input_schema": {"type": "object"}}]
    m = await ant.messages.create(
        model="claude-haiku-4-5", max_tokens=100, tools=tools, messages=_user("weather in Rome")
    )
    assert m.stop_reason == "tool_use"
    block = m.content[0]
    assert block.type == "tool_use" and block.name == "get_weather" and block.input == {"city": "Rome"}
    async with ant.messages.stream(
        model="claude-haiku-4-5", max_tokens=100, tools=tools, messages=_user("weather in Rome")
    ) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert final.content[0].type == "tool_use" and final.content[0].input == {"city": "Rome"}
    # the tool result comes back in a user turn
    history = [
        *_user("weather in Rome"),
        {"role": "assistant", "content": [block.model_dump(include={"type", "id", "name", "input"})]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "sunny"}]},
    ]
    m = await ant.messages.create(model="claude-haiku-4-5", max_tokens=100, tools=tools, messages=history)
    assert m.content[0].type == "text" and m.content[0].text == "The tool returned: sunny"


async def test_anthropic_prompt_caching(ant: anthropic.AsyncAnthropic) -> None:
    system = [{"type": "text", "text": LONG_TEXT + " anthropic", "cache_control": {"type": "ephemeral"}}]
    # ~1600 tokens: below Haiku 4.5's minimum (4096), so never cached there.
    short = await ant.messages.create(
        model="claude-haiku-4-5", max_tokens=50, system=system, messages=_user("q1")
    )
    assert short.usage.cache_creation_input_tokens == 0 and short.usage.cache_read_input_tokens == 0
    first = await ant.messages.create(
        model="claude-sonnet-4-6", max_tokens=50, system=system, messages=_user("q1")
    )
    assert first.usage.cache_creation_input_tokens and first.usage.cache_creation_input_tokens > 1024
    assert first.usage.cache_read_input_tokens == 0
    second = await ant.messages.create(
        model="claude-sonnet-4-6", max_tokens=50, system=system, messages=_user("q2")
    )
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert second.usage.cache_creation_input_tokens == 0
    assert second.usage.input_tokens < 50  # only the uncached tail is billed as plain input
    # A 1-hour mark: the write is reported by TTL, streamed in message_start as Anthropic does.
    hour = [
        {**system[0], "text": LONG_TEXT + " one hour", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    ]
    async with ant.messages.stream(
        model="claude-sonnet-4-6", max_tokens=50, system=hour, messages=_user("q1")
    ) as stream:
        (start,) = [e.message.usage async for e in stream if e.type == "message_start"]
    assert start.cache_creation is not None and start.cache_creation.ephemeral_5m_input_tokens == 0
    assert start.cache_creation.ephemeral_1h_input_tokens == start.cache_creation_input_tokens > 1024


async def test_anthropic_requires_max_tokens(sim: SimulatorServer) -> None:
    async with httpx.AsyncClient() as client:
        r = await client.post(
            sim.url + "/v1/messages", json={"model": "claude-haiku-4-5", "messages": _user("x")}
        )
    assert r.status_code == 400
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in body["error"]["message"]


async def test_anthropic_count_tokens(ant: anthropic.AsyncAnthropic) -> None:
    counted = await ant.messages.count_tokens(model="claude-haiku-4-5", messages=_user("hello claude"))
    expected = tokens.count_messages([Message(role="user", content="hello claude")], "claude-haiku-4-5")
    assert counted.input_tokens == expected


# --- faults -----------------------------------------------------------------------------------


async def test_fault_429(oai: openai.AsyncOpenAI, ant: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(openai.RateLimitError) as exc:
        await oai.chat.completions.create(
            model="gpt-4o", messages=_user("x"), extra_headers={"x-sim-fault": "429"}
        )
    assert exc.value.response.headers["retry-after"] == "1"
    assert exc.value.body["type"] == "rate_limit_error"  # type: ignore[index]
    with pytest.raises(anthropic.RateLimitError) as aexc:
        await ant.messages.create(
            model="claude-haiku-4-5", max_tokens=10, messages=_user("x"), extra_headers={"x-sim-fault": "429"}
        )
    assert aexc.value.response.headers["retry-after"] == "1"
    assert aexc.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


async def test_fault_5xx(oai: openai.AsyncOpenAI, ant: anthropic.AsyncAnthropic) -> None:
    for code in (500, 503):
        with pytest.raises(openai.InternalServerError) as exc:
            await oai.chat.completions.create(
                model="gpt-4o", messages=_user("x"), extra_headers={"x-sim-fault": str(code)}
            )
        assert exc.value.status_code == code
        with pytest.raises(anthropic.APIStatusError) as aexc:
            await ant.messages.create(
                model="claude-haiku-4-5",
                max_tokens=10,
                messages=_user("x"),
                extra_headers={"x-sim-fault": str(code)},
            )
        assert aexc.value.status_code == code
    assert aexc.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


async def test_fault_drop(
    sim: SimulatorServer, oai: openai.AsyncOpenAI, ant: anthropic.AsyncAnthropic
) -> None:
    headers = {"x-sim-fault": "drop"}
    with pytest.raises(openai.APIConnectionError):
        await oai.chat.completions.create(model="gpt-4o", messages=_user("x"), extra_headers=headers)
    with pytest.raises(anthropic.APIConnectionError):
        await ant.messages.create(
            model="claude-haiku-4-5", max_tokens=10, messages=_user("x"), extra_headers=headers
        )
    # the connection closes with no response at all: no status line, certainly no 500
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await client.post(
                sim.url + "/v1/chat/completions", json={"model": "m", "messages": _user("x")}, headers=headers
            )


async def test_fault_truncate(oai: openai.AsyncOpenAI, ant: anthropic.AsyncAnthropic) -> None:
    headers = {"x-sim-fault": "truncate"}
    text = "a long enough reply to be split into a good number of chunks for the stream"
    stream = await oai.chat.completions.create(
        model="gpt-4o",
        messages=_user(text),
        stream=True,
        stream_options={"include_usage": True},
        extra_headers=headers,
    )
    chunks = [c async for c in stream]
    assert chunks and all(c.choices and c.choices[0].finish_reason is None for c in chunks)
    assert all(c.usage is None for c in chunks)
    received = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert 0 < len(received) < len("You said: " + text)
    async with ant.messages.stream(
        model="claude-haiku-4-5", max_tokens=100, messages=_user(text), extra_headers=headers
    ) as astream:
        events = [e.type async for e in astream]
    assert "message_start" in events and "message_stop" not in events and "message_delta" not in events
    with pytest.raises(openai.APIConnectionError):  # non-stream: the body stops mid-JSON
        await oai.chat.completions.create(model="gpt-4o", messages=_user("x"), extra_headers=headers)


async def test_fault_malformed(oai: openai.AsyncOpenAI, ant: anthropic.AsyncAnthropic) -> None:
    headers = {"x-sim-fault": "malformed"}
    with pytest.raises(ValueError):  # json.JSONDecodeError: a 200 whose body is not JSON
        await oai.chat.completions.create(model="gpt-4o", messages=_user("x"), extra_headers=headers)
    with pytest.raises(ValueError):
        stream = await oai.chat.completions.create(
            model="gpt-4o", messages=_user("x"), stream=True, extra_headers=headers
        )
        async for _ in stream:
            pass
    with pytest.raises(ValueError):
        await ant.messages.create(
            model="claude-haiku-4-5", max_tokens=10, messages=_user("x"), extra_headers=headers
        )


async def test_fault_hang_times_out(sim: SimulatorServer) -> None:
    client = openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="t", max_retries=0, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        await client.chat.completions.create(
            model="gpt-4o", messages=_user("x"), extra_headers={"x-sim-fault": "hang"}
        )
    assert time.monotonic() - started < 3


async def test_hang_does_not_block_shutdown() -> None:
    server = await _start()
    client = httpx.AsyncClient(timeout=30)
    request = asyncio.create_task(
        client.post(
            server.url + "/v1/chat/completions",
            json={"model": "m", "messages": _user("x")},
            headers={"x-sim-fault": "hang"},
        )
    )
    await asyncio.sleep(0.2)
    started = time.monotonic()
    await server.stop()
    assert time.monotonic() - started < 3
    with pytest.raises(httpx.TransportError):
        await request
    await client.aclose()


STALL_TEXT = "a long enough reply to be split into a good number of chunks for the stream"


async def test_fault_stall_stream_times_out(sim: SimulatorServer) -> None:
    headers = {"x-sim-fault": "stall"}
    full = "You said: " + STALL_TEXT
    client = openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="t", max_retries=0, timeout=0.5)
    received = ""
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=_user(STALL_TEXT), stream=True, extra_headers=headers
        )
        async for chunk in stream:
            assert chunk.choices and chunk.choices[0].finish_reason is None
            received += chunk.choices[0].delta.content or ""
    assert time.monotonic() - started < 3
    assert 0 < len(received) < len(full) and full.startswith(received)  # some content, then silence
    await client.close()

    ant = anthropic.AsyncAnthropic(base_url=sim.url, api_key="t", max_retries=0, timeout=0.5)
    events: list[str] = []
    text = ""
    started = time.monotonic()
    # the SDK does not wrap errors raised while iterating a stream: its HTTP layer's ReadTimeout
    with pytest.raises((anthropic.APITimeoutError, ant_httpx.TimeoutException)):
        async with ant.messages.stream(
            model="claude-haiku-4-5", max_tokens=100, messages=_user(STALL_TEXT), extra_headers=headers
        ) as astream:
            async for event in astream:
                events.append(event.type)
                if event.type == "text":
                    text += event.text
    assert time.monotonic() - started < 3
    assert events[0] == "message_start" and "content_block_delta" in events
    assert "message_delta" not in events and "message_stop" not in events
    assert 0 < len(text) < len(full) and full.startswith(text)
    await ant.close()


async def test_fault_stall_non_stream_hangs(sim: SimulatorServer) -> None:
    headers = {"x-sim-fault": "stall"}
    client = openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="t", max_retries=0, timeout=0.5)
    ant = anthropic.AsyncAnthropic(base_url=sim.url, api_key="t", max_retries=0, timeout=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            await client.chat.completions.create(model="gpt-4o", messages=_user("x"), extra_headers=headers)
        with pytest.raises(anthropic.APITimeoutError):
            await ant.messages.create(
                model="claude-haiku-4-5", max_tokens=10, messages=_user("x"), extra_headers=headers
            )
        assert time.monotonic() - started < 3
    finally:
        await client.close()
        await ant.close()


async def test_stall_by_model_gives_up_after_hang_max_s() -> None:
    server = await _start(hang_max_s=0.3, per_model={"stally-*": {"faults": {"stall": 1.0}}})
    client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="t", max_retries=0, timeout=10)
    try:
        received = ""
        started = time.monotonic()
        with pytest.raises(openai.APIConnectionError):  # the server hangs up, mid-body
            stream = await client.chat.completions.create(
                model="stally-1", messages=_user(STALL_TEXT), stream=True
            )
            async for chunk in stream:
                received += chunk.choices[0].delta.content or ""
        assert 0.3 <= time.monotonic() - started < 3
        assert 0 < len(received) < len("You said: " + STALL_TEXT)
        r = await client.chat.completions.create(model="other", messages=_user("ping"), stream=True)
        assert "".join([c.choices[0].delta.content or "" async for c in r if c.choices]) == "pong"
    finally:
        await client.close()
        await server.stop()


async def test_stall_does_not_block_shutdown() -> None:
    server = await _start()  # hang_max_s: the default 300 s
    client = httpx.AsyncClient(timeout=30)
    body = {"model": "m", "messages": _user(STALL_TEXT), "stream": True}
    try:
        async with client.stream(
            "POST", server.url + "/v1/chat/completions", json=body, headers={"x-sim-fault": "stall"}
        ) as r:
            assert r.status_code == 200
            parts = r.aiter_bytes()
            received = b""
            while b"You said" not in received:  # the stream is under way (then it stalls)
                received += await anext(parts)
            await asyncio.sleep(0.2)
            started = time.monotonic()
            await server.stop()
            assert time.monotonic() - started < 3
            with pytest.raises(httpx.TransportError):  # hung up on: not a clean end of the stream
                async for part in parts:
                    assert b"[DONE]" not in part
    finally:
        await client.aclose()
        await server.stop()


async def test_mixed_fault_probabilities_with_stall_are_reproducible() -> None:
    faults = {"429": 0.1, "500": 0.1, "503": 0.1, "drop": 0.1, "stall": 0.1}  # 0.5 in all

    async def outcome(client: httpx.AsyncClient) -> str:
        body = {"model": "m", "messages": _user(STALL_TEXT), "stream": True}
        received = b""
        try:
            async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                if r.status_code != 200:
                    return str(r.status_code)
                async for part in r.aiter_bytes():
                    received += part
        except httpx.RemoteProtocolError:
            # no response at all (drop), or content and then the server gave up (stall)
            return "stall" if b"You said" in received else "drop"
        assert received.endswith(b"data: [DONE]\n\n")
        return "ok"

    async def outcomes(seed: int) -> list[str]:
        server = await _start(seed=seed, faults=faults, hang_max_s=0.1)
        try:
            async with httpx.AsyncClient(base_url=server.url, timeout=5) as client:
                return [await outcome(client) for _ in range(30)]
        finally:
            await server.stop()

    started = time.monotonic()
    first = await outcomes(11)
    assert first == await outcomes(11)
    assert set(first) == {"ok", "429", "500", "503", "drop", "stall"}
    assert first.count("ok") >= 8  # about half the requests get no fault
    assert time.monotonic() - started < 3


async def test_unknown_fault_is_400(oai: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="x-sim-fault"):
        await oai.chat.completions.create(
            model="gpt-4o", messages=_user("x"), extra_headers={"x-sim-fault": "nope"}
        )


async def test_seeded_fault_probabilities_are_reproducible() -> None:
    async def statuses(seed: int) -> list[int]:
        server = await _start(seed=seed, faults={"500": 0.5}, per_model={"safe-*": {"faults": {}}})
        try:
            async with httpx.AsyncClient(base_url=server.url) as client:
                out = []
                for _ in range(20):
                    r = await client.post("/v1/chat/completions", json={"model": "m", "messages": _user("x")})
                    out.append(r.status_code)
                safe = await client.post(
                    "/v1/chat/completions", json={"model": "safe-1", "messages": _user("x")}
                )
                assert safe.status_code == 200  # the per-model override turned faults off
                return out
        finally:
            await server.stop()

    first = await statuses(7)
    assert first == await statuses(7)
    assert set(first) == {200, 500}


# --- latency ----------------------------------------------------------------------------------


async def test_latency_header_and_per_token() -> None:
    server = await _start(per_model={"slow-*": {"per_token_ms": 20}})
    client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="t", max_retries=0)
    try:
        started = time.monotonic()
        await client.chat.completions.create(
            model="m", messages=_user("x"), extra_headers={"x-sim-latency-ms": "250"}
        )
        assert time.monotonic() - started >= 0.25
        started = time.monotonic()
        stream = await client.chat.completions.create(
            model="slow-1",
            messages=_user("x"),
            stream=True,
            extra_headers={"x-sim-reply": "one two three four five six"},
        )
        arrivals = [time.monotonic() async for _ in stream]
        # 6 tokens at 20 ms, spread over the content chunks
        assert arrivals[-1] - started >= 0.12
        assert arrivals[-1] - arrivals[0] >= 0.08
    finally:
        await client.close()
        await server.stop()


# --- auth, fixed reply, other endpoints -------------------------------------------------------


async def test_api_key_required_when_configured() -> None:
    server = await _start(api_key="sekrit")
    try:
        for key, ok in (("wrong", False), ("sekrit", True)):
            async with (
                openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0) as oai,
                anthropic.AsyncAnthropic(base_url=server.url, api_key=key, max_retries=0) as ant,
            ):
                if ok:
                    r = await oai.chat.completions.create(model="m", messages=_user("ping"))
                    assert r.choices[0].message.content == "pong"
                    await ant.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=_user("x"))
                    continue
                with pytest.raises(openai.AuthenticationError):
                    await oai.chat.completions.create(model="m", messages=_user("x"))
                with pytest.raises(anthropic.AuthenticationError):
                    await ant.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=_user("x"))
    finally:
        await server.stop()


async def test_fixed_reply_mode() -> None:
    server = await _start(fixed_reply="Fixed answer.")
    client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="t", max_retries=0)
    ant_client = anthropic.AsyncAnthropic(base_url=server.url, api_key="t", max_retries=0)
    try:
        for _ in range(2):  # the second one is served from the pre-rendered cache
            r = await client.chat.completions.create(model="gpt-4o", messages=_user("whatever"))
            assert r.choices[0].message.content == "Fixed answer."
            assert r.usage is not None and r.usage.prompt_tokens == 10
            assert r.usage.completion_tokens == tokens.count_text("Fixed answer.", "gpt-4o")
        stream = await client.chat.completions.create(model="gpt-4o", messages=_user("x"), stream=True)
        assert (
            "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == "Fixed answer."
        )
        m = await ant_client.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=_user("x"))
        assert m.content[0].type == "text" and m.content[0].text == "Fixed answer."
        with pytest.raises(openai.RateLimitError):  # faults still apply
            await client.chat.completions.create(
                model="gpt-4o", messages=_user("x"), extra_headers={"x-sim-fault": "429"}
            )
    finally:
        await client.close()
        await ant_client.close()
        await server.stop()


async def test_embeddings(oai: openai.AsyncOpenAI) -> None:
    r = await oai.embeddings.create(model="text-embedding-3-small", input=["hello world", "other text"])
    assert len(r.data) == 2
    vector = r.data[0].embedding
    assert len(vector) == 256
    assert math.isclose(sum(x * x for x in vector), 1.0, rel_tol=1e-5)
    assert vector == pytest.approx(pseudo_embedding("hello world"), abs=1e-6)  # float32 over the wire
    assert r.data[1].embedding != vector
    assert r.usage.prompt_tokens == 4 and r.usage.total_tokens == 4
    again = await oai.embeddings.create(
        model="text-embedding-3-small", input="hello world", encoding_format="float", dimensions=64
    )
    assert len(again.data[0].embedding) == 64
    assert again.data[0].embedding == pseudo_embedding("hello world", 64)


async def test_embedding_base64_is_little_endian_float32() -> None:
    vector = pseudo_embedding("x", 8)
    packed = base64.b64encode(struct.pack("<8f", *vector))
    assert struct.unpack("<8f", base64.b64decode(packed)) == pytest.approx(vector, abs=1e-6)


async def test_moderations(oai: openai.AsyncOpenAI) -> None:
    r = await oai.moderations.create(input=["I will kill you", "have a nice day", "hone your skills"])
    flagged, clean, skill = r.results
    assert flagged.flagged and flagged.categories.violence
    assert not clean.flagged and not skill.flagged
    assert flagged.category_scores.violence > 0.5 > clean.category_scores.violence
    forced = await oai.moderations.create(input="[flag:self-harm/intent]")
    assert forced.results[0].categories.self_harm_intent and forced.results[0].categories.self_harm


async def test_models(oai: openai.AsyncOpenAI, ant: anthropic.AsyncAnthropic) -> None:
    ids = [m.id async for m in oai.models.list()]
    assert "gpt-4o" in ids and "claude-haiku-4-5" in ids
    assert (await oai.models.retrieve("gpt-4o")).id == "gpt-4o"
    with pytest.raises(openai.NotFoundError):
        await oai.models.retrieve("no-such-model")
    claude = [m.id async for m in ant.models.list()]
    assert claude and all(m.startswith("claude") for m in claude)
    assert (await ant.models.retrieve("claude-haiku-4-5")).id == "claude-haiku-4-5"
    with pytest.raises(anthropic.NotFoundError):
        await ant.models.retrieve("no-such-model")


async def test_bad_requests_never_500(sim: SimulatorServer) -> None:
    async with httpx.AsyncClient(base_url=sim.url) as client:
        for path in ("/v1/chat/completions", "/v1/messages", "/v1/embeddings", "/v1/moderations"):
            for body in (b"{not json", b"[1, 2]", b"\xff\xfe", b'{"model": 1, "messages": "x"}'):
                r = await client.post(path, content=body)
                assert r.status_code == 400, (path, body, r.text)
        r = await client.post("/v1/chat/completions", content=b"{nope")
        assert r.json()["error"]["type"] == "invalid_request_error"
        r = await client.post("/v1/messages", content=b"{nope")
        assert r.json()["type"] == "error"
        assert (await client.get("/v1/nowhere")).status_code == 404
        assert (await client.get("/v1/chat/completions")).status_code == 405
        assert (await client.get("/health")).json() == {"status": "ok"}


async def test_serve_with_ready_event() -> None:
    ready = asyncio.Event()
    task = asyncio.create_task(serve(SimulatorSettings(port=0), ready=ready))
    await asyncio.wait_for(ready.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# --- settings and rules files -----------------------------------------------------------------


async def test_settings_and_rules_from_yaml(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text("- match: '^hi$'\n  reply: hello\n")
    config = tmp_path / "sim.yaml"
    config.write_text(
        "port: 0\nseed: 3\nrules_path: rules.yaml\nfaults: {429: 0.1, drop: 0.05}\n"
        "per_model:\n  'claude-*': {latency_ms: 100, faults: {}}\n"
    )
    settings = SimulatorSettings.load(config, port=9999)
    assert settings.port == 9999 and settings.seed == 3
    assert settings.faults == {"429": 0.1, "drop": 0.05}
    assert settings.profile_for("claude-haiku-4-5").faults == {}
    assert settings.profile_for("claude-haiku-4-5").latency_ms == 100
    assert settings.profile_for("gpt-4o").faults == {"429": 0.1, "drop": 0.05}
    rules = load_rules(settings.rules_path)
    assert rules[0].reply == "hello"
    assert load_rules(None)  # the packaged default rules load


async def test_invalid_config(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("faults: {429: 0.8, 500: 0.8}\n")
    with pytest.raises(ConfigError, match="more than 1"):
        SimulatorSettings.load(config)
    config.write_text("faults: {teapot: 0.1}\n")
    with pytest.raises(ConfigError):
        SimulatorSettings.load(config)
    (tmp_path / "rules.yaml").write_text("- match: '('\n  reply: x\n")
    with pytest.raises(ConfigError, match="bad regex"):
        load_rules(tmp_path / "rules.yaml")
    (tmp_path / "rules.yaml").write_text("- match: 'x'\n  reply: x\n  json: {}\n")
    with pytest.raises(ConfigError, match="exactly one"):
        load_rules(tmp_path / "rules.yaml")
