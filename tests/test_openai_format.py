"""Golden tests for the OpenAI edge and the shared error mapping: wire JSON in, canonical out, and back."""

from __future__ import annotations

import pytest

from llmrelay.errors import (
    InvalidRequestError,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
    error_for_status,
    parse_retry_after,
)
from llmrelay.providers import openai_format as of
from llmrelay.types import Usage

TOOLS_REQUEST = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this image, and the weather in Paris?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "21C"},
        {"role": "tool", "tool_call_id": "call_2", "content": "noon"},
    ],
    "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "response_format": {
        "type": "json_schema",
        "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": True},
    },
    "temperature": 0,
    "stop": ["\n\n"],
    "seed": 7,
    "max_completion_tokens": 100,
    "user": "u-1",
    "metadata": {"team": "a"},
    "logprobs": True,  # not modelled: passed through to OpenAI-compatible upstreams untouched
}


def test_request_round_trips_to_the_upstream_body_unchanged_but_for_the_model():
    request = of.parse_request(TOOLS_REQUEST)
    assert request.model_extra == {"logprobs": True}
    assert of.request_to_wire(request, "gpt-4o-mini-2024-07-18", stream=False) == {
        **TOOLS_REQUEST,
        "model": "gpt-4o-mini-2024-07-18",
        # None-valued fields are dropped rather than sent as null
        "messages": [
            TOOLS_REQUEST["messages"][0],
            TOOLS_REQUEST["messages"][1],
            {k: v for k, v in TOOLS_REQUEST["messages"][2].items() if v is not None},
            *TOOLS_REQUEST["messages"][3:],
        ],
    }


def test_streaming_upstream_body_always_asks_for_usage():
    request = of.parse_request(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    )
    assert of.request_to_wire(request, "up", stream=True) == {
        "model": "up",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert "stream" not in of.request_to_wire(request, "up", stream=False)


def test_response_with_parallel_tool_calls_and_usage_details():
    body = {
        "id": "chatcmpl-9",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_1",
        "choices": [
            {
                "index": 0,
                "logprobs": None,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": None,
                    "refusal": None,
                    "annotations": [],
                    "tool_calls": [
                        {
                            "id": "call_a",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"x":1}'},
                        },
                        {"id": "call_b", "type": "function", "function": {"name": "g", "arguments": "{}"}},
                    ],
                },
            }
        ],
        "usage": {
            "prompt_tokens": 50,
            "completion_tokens": 30,
            "total_tokens": 80,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 12},
        },
    }
    response = of.parse_response(body, "my-model")
    assert response.model == "my-model"
    assert [c.function.name for c in response.choices[0].message.tool_calls] == ["f", "g"]
    assert response.usage == Usage(prompt_tokens=50, completion_tokens=30, reasoning_tokens=12)
    wire = of.response_to_wire(response)
    assert wire["object"] == "chat.completion" and wire["model"] == "my-model"
    assert wire["choices"][0]["message"]["content"] is None
    assert wire["usage"] == {
        "prompt_tokens": 50,
        "completion_tokens": 30,
        "total_tokens": 80,
        "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 12},
    }
    assert of.parse_response(wire, "my-model") == response  # our output reads back identically


STREAM = [
    {
        "id": "c1",
        "created": 1,
        "model": "x",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}],
    },
    {
        "id": "c1",
        "created": 1,
        "model": "x",
        "choices": [
            {
                "index": 0,
                "delta": {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_a",
                            "type": "function",
                            "function": {"name": "f", "arguments": ""},
                        }
                    ]
                },
            }
        ],
    },
    {
        "id": "c1",
        "created": 1,
        "model": "x",
        "choices": [
            {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"x":'}}]}}
        ],
    },
    {
        "id": "c1",
        "created": 1,
        "model": "x",
        "choices": [
            {
                "index": 0,
                "delta": {
                    "tool_calls": [
                        {
                            "index": 1,
                            "id": "call_b",
                            "type": "function",
                            "function": {"name": "g", "arguments": "{}"},
                        }
                    ]
                },
            }
        ],
    },
    {
        "id": "c1",
        "created": 1,
        "model": "x",
        "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}}],
    },
    {
        "id": "c1",
        "created": 1,
        "model": "x",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
    },
    {
        "id": "c1",
        "created": 1,
        "model": "x",
        "choices": [],
        "usage": {
            "prompt_tokens": 9,
            "completion_tokens": 4,
            "total_tokens": 13,
            "prompt_tokens_details": {"cached_tokens": 8},
        },
    },
]


def test_stream_chunks_keep_interleaved_tool_call_deltas():
    chunks = [of.parse_chunk(data, "mine") for data in STREAM]
    arguments: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                arguments[call.index] = arguments.get(call.index, "") + (call.function or {}).get(
                    "arguments", ""
                )
    assert arguments == {0: '{"x":1}', 1: "{}"}
    assert chunks[-1].usage == Usage(prompt_tokens=9, completion_tokens=4, cached_tokens=8)
    assert all(c.model == "mine" for c in chunks)
    # and back out to the wire the same way
    assert of.chunk_to_wire(chunks[2])["choices"][0]["delta"] == STREAM[2]["choices"][0]["delta"]
    assert of.chunk_to_wire(chunks[-1])["usage"]["prompt_tokens_details"]["cached_tokens"] == 8


@pytest.mark.parametrize(
    "bad", [{"choices": "nope"}, {"id": "x"}, [], {"id": "x", "choices": [{"message": 3}]}]
)
def test_malformed_upstream_bodies_are_protocol_errors(bad):
    with pytest.raises(UpstreamProtocolError):
        of.parse_response(bad, "m")


def test_bad_client_body_is_invalid_request():
    with pytest.raises(InvalidRequestError):
        of.parse_request("just a string")


@pytest.mark.parametrize(
    ("status", "message", "headers", "cls", "client_status"),
    [
        (429, "slow down", {"Retry-After": "3"}, UpstreamRateLimited, 429),
        (401, "bad key", {}, UpstreamAuthError, 502),
        (403, "forbidden", {}, UpstreamAuthError, 502),
        (408, "timeout", {}, UpstreamTimeout, 504),
        (500, "boom", {}, UpstreamUnavailable, 503),
        (529, "overloaded", {}, UpstreamUnavailable, 503),
        (400, "This model's maximum context length is 128000 tokens", {}, UpstreamBadRequest, 400),
        (400, "bad param", {}, UpstreamBadRequest, 400),
        (404, "no such model", {}, UpstreamBadRequest, 400),
    ],
)
def test_error_mapping_table(status, message, headers, cls, client_status):
    error = error_for_status(status, message, provider="p", body="{}", headers=headers)
    assert type(error) is cls and error.status == client_status and error.status_code == status
    if status == 429:
        assert error.retry_after == 3 and error.headers() == {"retry-after": "3"}
    if "context length" in message:
        assert error.code == "context_length_exceeded"


def test_retry_after_forms():
    assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5
    assert parse_retry_after({"Retry-After": "2"}) == 2
    assert parse_retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None
    assert parse_retry_after({}) is None


def test_error_message_from_any_body():
    assert of.error_message_from_wire(b'{"error": {"message": "nope", "type": "x"}}') == "nope"
    assert of.error_message_from_wire(b"<html>bad gateway</html>") == "<html>bad gateway</html>"
    assert of.error_message_from_wire(b"") == "(empty body)"


def test_reasoning_content_becomes_thinking_and_back() -> None:
    body = {
        "id": "c1",
        "choices": [{"message": {"role": "assistant", "content": "4", "reasoning_content": "2+2"}}],
    }
    response = of.parse_response(body, "m")
    assert response.choices[0].message.thinking_blocks[0].thinking == "2+2"
    wire = of.response_to_wire(response)["choices"][0]["message"]
    assert wire["reasoning_content"] == "2+2" and wire["thinking_blocks"] == [
        {"type": "thinking", "thinking": "2+2"}
    ]

    chunk = of.parse_chunk({"id": "c1", "choices": [{"delta": {"reasoning_content": "2+"}}]}, "m")
    assert of.chunk_to_wire(chunk)["choices"][0]["delta"]["reasoning_content"] == "2+"

    sent_back = {
        "model": "m",
        "messages": [{"role": "user", "content": "?"}, {**body["choices"][0]["message"]}],
    }
    assert of.parse_request(sent_back).messages[1].thinking_blocks is None  # no model takes it back
