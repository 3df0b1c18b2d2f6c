"""Golden conformance tests for the Anthropic Messages edge (``llmrelay.providers.anthropic_format``).

Every expected value is written out literally. Recorded-style SSE streams live in
``tests/golden/anthropic/*.json`` (events in, canonical chunks out, and the events we re-encode).
What we hand to Anthropic SDK clients is also checked against the installed ``anthropic`` SDK: its
pydantic types, and its real client reading our bytes through a mock transport.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import anthropic
import pytest
from anthropic.types import Message as SDKMessage
from anthropic.types import RawMessageStreamEvent
from pydantic import TypeAdapter

from llmrelay.errors import (
    InvalidRequestError,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from llmrelay.providers import anthropic_format as af
from llmrelay.types import ChatRequest, ChatResponse, Chunk

try:  # the SDK's HTTP layer: recent releases ship their own fork of httpx
    import httpx2 as sdk_httpx
except ImportError:  # pragma: no cover - older SDKs
    import httpx as sdk_httpx

GOLDEN = Path(__file__).parent / "golden" / "anthropic"
NOW = 1_700_000_000
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
STREAM_EVENT = TypeAdapter(RawMessageStreamEvent)


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("llmrelay.providers.anthropic_format._common._now", lambda: NOW)


def golden_stream(name: str) -> dict[str, Any]:
    return json.loads((GOLDEN / f"{name}.json").read_text())


def dump(model: Any) -> dict[str, Any]:
    return model.model_dump(exclude_none=True, by_alias=True)


def without_none(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None}


def sdk_client(handler: Any) -> anthropic.Anthropic:
    """A real SDK client whose HTTP requests are answered by ``handler`` in-process."""
    transport = sdk_httpx.MockTransport(handler)
    return anthropic.Anthropic(
        api_key="sk-ant-test",
        base_url="http://gateway.test",
        http_client=sdk_httpx.Client(transport=transport),
    )


def sse_bytes(events: list[tuple[str, dict[str, Any]]]) -> bytes:
    return b"".join(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events)


def sdk_final_message(events: list[tuple[str, dict[str, Any]]]) -> Any:
    """Feed ``events`` to the SDK's own stream helper and return the Message it accumulates."""

    def handler(request: Any) -> Any:
        return sdk_httpx.Response(
            200, content=sse_bytes(events), headers={"content-type": "text/event-stream"}
        )

    client = sdk_client(handler)
    with client.messages.stream(
        model="m", max_tokens=16, messages=[{"role": "user", "content": "x"}]
    ) as stream:
        for _ in stream:
            pass
        return stream.get_final_message()


# =============================================================================================
# Upstream edge: canonical request -> Anthropic Messages body
# =============================================================================================

REQUEST_TO_WIRE = [
    pytest.param(
        {"model": "claude", "messages": [{"role": "user", "content": "Hello"}]},
        {"model": "claude-upstream", "max_tokens": 4096, "messages": [{"role": "user", "content": "Hello"}]},
        id="text-default-max-tokens",
    ),
    pytest.param(
        {
            "model": "claude",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "developer", "content": "Answer in French."},
                {"role": "user", "content": "Hi"},
            ],
            "max_completion_tokens": 300,
            "temperature": 1.7,
            "top_p": 0.9,
            "stop": "END",
            "user": "user-42",
            # OpenAI-only fields must not reach Anthropic:
            "seed": 7,
            "n": 1,
            "metadata": {"team": "search"},
            "presence_penalty": 0.5,
            "logit_bias": {"50256": -100},
        },
        {
            "model": "claude-upstream",
            "max_tokens": 300,
            "system": "You are terse.\n\nAnswer in French.",
            "messages": [{"role": "user", "content": "Hi"}],
            "temperature": 1.0,
            "top_p": 0.9,
            "stop_sequences": ["END"],
            "metadata": {"user_id": "user-42"},
        },
        id="system-developer-sampling-openai-only-fields-dropped",
    ),
    pytest.param(
        {
            "model": "claude",
            "max_tokens": 100,
            "messages": [
                {
                    "role": "system",
                    "content": [
                        {
                            "type": "text",
                            "text": "Long reference manual...",
                            "cache_control": {"type": "ephemeral"},
                        }
                    ],
                },
                {"role": "system", "content": "Be kind."},
                {"role": "user", "content": "Q?"},
            ],
        },
        {
            "model": "claude-upstream",
            "max_tokens": 100,
            "system": [
                {"type": "text", "text": "Long reference manual...", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "Be kind."},
            ],
            "messages": [{"role": "user", "content": "Q?"}],
        },
        id="system-with-cache-control-becomes-blocks",
    ),
    pytest.param(
        {
            "model": "claude",
            "max_tokens": 100,
            "messages": [
                {"role": "user", "content": "My name is Ada."},
                {"role": "user", "content": [{"type": "text", "text": "Remember it."}]},
                {"role": "assistant", "content": "Noted, Ada."},
                {"role": "user", "content": "What is my name?"},
            ],
        },
        {
            "model": "claude-upstream",
            "max_tokens": 100,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "My name is Ada."},
                        {"type": "text", "text": "Remember it."},
                    ],
                },
                {"role": "assistant", "content": "Noted, Ada."},
                {"role": "user", "content": "What is my name?"},
            ],
        },
        id="multi-turn-consecutive-user-merged",
    ),
    pytest.param(
        {
            "model": "claude",
            "max_tokens": 100,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Compare these."},
                        {
                            "type": "image_url",
                            "image_url": {"url": f"data:image/png;base64,{PNG_B64}", "detail": "high"},
                        },
                        {
                            "type": "image_url",
                            "image_url": {"url": "https://example.com/cat.jpg"},
                            "cache_control": {"type": "ephemeral"},
                        },
                    ],
                }
            ],
        },
        {
            "model": "claude-upstream",
            "max_tokens": 100,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Compare these."},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64},
                        },
                        {
                            "type": "image",
                            "source": {"type": "url", "url": "https://example.com/cat.jpg"},
                            "cache_control": {"type": "ephemeral"},
                        },
                    ],
                }
            ],
        },
        id="images-base64-and-url",
    ),
    pytest.param(
        {
            "model": "claude",
            "max_tokens": 100,
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {
                    "role": "assistant",
                    "content": "Checking.",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "18°C, sunny"},
            ],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "description": "Current weather",
                        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                        "strict": True,
                    },
                    "cache_control": {"type": "ephemeral"},
                },
                {"type": "function", "function": {"name": "now"}},
            ],
            "tool_choice": "auto",
        },
        {
            "model": "claude-upstream",
            "max_tokens": 100,
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Checking."},
                        {
                            "type": "tool_use",
                            "id": "call_1",
                            "name": "get_weather",
                            "input": {"city": "Paris"},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "18°C, sunny"}],
                },
            ],
            "tools": [
                {
                    "name": "get_weather",
                    "description": "Current weather",
                    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
                    "cache_control": {"type": "ephemeral"},
                },
                {"name": "now", "input_schema": {"type": "object", "properties": {}}},
            ],
            "tool_choice": {"type": "auto"},
        },
        id="one-tool-call-and-result",
    ),
    pytest.param(
        {
            "model": "claude",
            "max_tokens": 100,
            "messages": [
                {"role": "user", "content": "Weather in Paris and Tokyo?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_a",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        },
                        {
                            "id": "call_b",
                            "function": {"name": "get_weather", "arguments": '{"city":"Tokyo"}'},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "call_a", "content": "18°C"},
                {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text", "text": "25°C"}]},
                {"role": "user", "content": "Which is warmer?"},
            ],
            "tools": [
                {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
            ],
            "tool_choice": "required",
            "parallel_tool_calls": False,
        },
        {
            "model": "claude-upstream",
            "max_tokens": 100,
            "messages": [
                {"role": "user", "content": "Weather in Paris and Tokyo?"},
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "tool_use",
                            "id": "call_a",
                            "name": "get_weather",
                            "input": {"city": "Paris"},
                        },
                        {
                            "type": "tool_use",
                            "id": "call_b",
                            "name": "get_weather",
                            "input": {"city": "Tokyo"},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "call_a", "content": "18°C"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "call_b",
                            "content": [{"type": "text", "text": "25°C"}],
                        },
                        {"type": "text", "text": "Which is warmer?"},
                    ],
                },
            ],
            "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        },
        id="several-tool-calls-results-merged-into-one-user-turn",
    ),
    pytest.param(
        {
            "model": "claude",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
        },
        {
            "model": "claude-upstream",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"name": "f", "input_schema": {"type": "object", "properties": {}}}],
            "tool_choice": {"type": "tool", "name": "f"},
        },
        id="named-tool-choice",
    ),
    pytest.param(
        {
            "model": "claude",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": "none",
            "parallel_tool_calls": False,
        },
        {
            "model": "claude-upstream",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"name": "f", "input_schema": {"type": "object", "properties": {}}}],
            "tool_choice": {"type": "none"},
        },
        id="tool-choice-none",
    ),
    pytest.param(
        {
            "model": "claude",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "x"}],
            "tool_choice": "auto",
        },
        {"model": "claude-upstream", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]},
        id="tool-choice-without-tools-dropped",
    ),
    pytest.param(
        {
            "model": "claude",
            "max_tokens": 50,
            "messages": [
                {"role": "system", "content": "Extract fields."},
                {"role": "user", "content": "Ada, 36"},
            ],
            "response_format": {"type": "json_object"},
        },
        {
            "model": "claude-upstream",
            "max_tokens": 50,
            "system": "Extract fields.",
            "messages": [{"role": "user", "content": "Ada, 36"}],
            "tools": [
                {
                    "name": "json_response",
                    "description": "Give your whole answer as this tool's input: a single JSON object.",
                    "input_schema": {"type": "object"},
                }
            ],
            "tool_choice": {"type": "tool", "name": "json_response"},
        },
        id="json-object-mode-is-a-forced-tool",
    ),
    pytest.param(
        {
            "model": "claude",
            "max_tokens": 50,
            "messages": [{"role": "user", "content": "Ada, 36"}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "person",
                    "schema": {
                        "type": "object",
                        "properties": {"name": {"type": "string"}},
                        "required": ["name"],
                    },
                },
            },
        },
        {
            "model": "claude-upstream",
            "max_tokens": 50,
            "messages": [{"role": "user", "content": "Ada, 36"}],
            "tools": [
                {
                    "name": "json_response",
                    "description": "Give your whole answer as this tool's input: a single JSON object.",
                    "input_schema": {
                        "type": "object",
                        "properties": {"name": {"type": "string"}},
                        "required": ["name"],
                    },
                }
            ],
            "tool_choice": {"type": "tool", "name": "json_response"},
        },
        id="json-schema-is-the-forced-tool-input-schema",
    ),
    pytest.param(
        {
            "model": "claude",
            "max_tokens": 50,
            "messages": [
                {
                    "role": "system",
                    "content": [{"type": "text", "text": "Ctx", "cache_control": {"type": "ephemeral"}}],
                },
                {"role": "user", "content": "x"},
            ],
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "response_format": {"type": "json_object"},
        },
        {
            "model": "claude-upstream",
            "max_tokens": 50,
            "system": [
                {"type": "text", "text": "Ctx", "cache_control": {"type": "ephemeral"}},
                {
                    "type": "text",
                    "text": "Respond with only a single valid JSON object: no other text, no Markdown code fences.",
                },
            ],
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"name": "f", "input_schema": {"type": "object", "properties": {}}}],
        },
        id="json-mode-beside-client-tools-falls-back-to-the-system-prompt",
    ),
    pytest.param(
        {"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "top_k": 40},
        {
            "model": "claude-upstream",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "x"}],
            "top_k": 40,
        },
        id="top-k-extra-passes-through",
    ),
]


@pytest.mark.parametrize(("canonical", "expected"), REQUEST_TO_WIRE)
def test_request_to_wire(canonical: dict[str, Any], expected: dict[str, Any]) -> None:
    request = ChatRequest.model_validate(canonical)
    assert af.request_to_wire(request, "claude-upstream", stream=False) == expected


def test_json_mode_with_thinking_is_asked_by_instruction_not_a_forced_tool() -> None:
    body = {"model": "c", "messages": [{"role": "user", "content": "x"}], "max_tokens": 3000}
    body |= {"response_format": {"type": "json_object"}}
    assert af.request_to_wire(ChatRequest.model_validate(body), "up", stream=False)["tool_choice"] == {
        "type": "tool",
        "name": af.JSON_TOOL,
    }
    body["thinking"] = {"type": "enabled", "budget_tokens": 2048}
    wire = af.request_to_wire(ChatRequest.model_validate(body), "up", stream=False)
    assert "tools" not in wire and "tool_choice" not in wire and "JSON object" in wire["system"]
    assert wire["thinking"] == {"type": "enabled", "budget_tokens": 2048}


def test_request_to_wire_stream_flag() -> None:
    request = ChatRequest.model_validate(
        {"model": "c", "messages": [{"role": "user", "content": "x"}], "stream": True}
    )
    assert af.request_to_wire(request, "up", stream=True) == {
        "model": "up",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": "x"}],
        "stream": True,
    }
    # The adapter decides, not the client's flag (the stream_options bookkeeping is OpenAI's).
    assert "stream" not in af.request_to_wire(request, "up", stream=False)


REQUEST_TO_WIRE_ERRORS = [
    pytest.param(
        [
            {"role": "user", "content": "x"},
            {
                "role": "assistant",
                "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{not json"}}],
            },
        ],
        "messages.1.tool_calls.0.function.arguments",
        id="tool-arguments-not-json",
    ),
    pytest.param(
        [
            {"role": "user", "content": "x"},
            {
                "role": "assistant",
                "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1, 2]"}}],
            },
        ],
        "messages.1.tool_calls.0.function.arguments",
        id="tool-arguments-not-an-object",
    ),
    pytest.param(
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://host/cat.png"}}]}],
        "messages.0.content.0.image_url.url",
        id="image-url-scheme",
    ),
    pytest.param(
        [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "data:image/png,rawbytes"}}],
            }
        ],
        "messages.0.content.0.image_url.url",
        id="data-url-not-base64",
    ),
    pytest.param(
        [
            {"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
            {"role": "user", "content": "x"},
        ],
        "messages.0.content.0",
        id="image-in-system-message",
    ),
    pytest.param(
        [{"role": "user", "content": "x"}, {"role": "tool", "content": "42"}],
        "messages.1.tool_call_id",
        id="tool-message-without-call-id",
    ),
    pytest.param(
        [
            {
                "role": "user",
                "content": [{"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}}],
            }
        ],
        "messages.0.content.0.type",
        id="openai-only-content-part",
    ),
]


@pytest.mark.parametrize(("messages", "param"), REQUEST_TO_WIRE_ERRORS)
def test_request_to_wire_rejects_unrepresentable(messages: list[dict[str, Any]], param: str) -> None:
    request = ChatRequest.model_validate({"model": "c", "messages": messages})
    with pytest.raises(InvalidRequestError) as info:
        af.request_to_wire(request, "up", stream=False)
    assert info.value.param == param
    assert info.value.status == 400


def test_several_choices_are_refused_rather_than_silently_one() -> None:
    request = ChatRequest.model_validate(
        {"model": "c", "messages": [{"role": "user", "content": "x"}], "n": 3}
    )
    with pytest.raises(InvalidRequestError, match="one choice") as info:
        af.request_to_wire(request, "up", stream=False)
    assert info.value.param == "n"


# =============================================================================================
# Upstream edge: Anthropic response -> canonical
# =============================================================================================

PARSE_RESPONSE = [
    pytest.param(
        {
            "id": "msg_01Text",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "content": [{"type": "text", "text": "Hello!"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 3},
        },
        {
            "id": "msg_01Text",
            "created": NOW,
            "model": "claude-sonnet",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}
            ],
            "usage": {
                "prompt_tokens": 10,
                "completion_tokens": 3,
                "cached_tokens": 0,
                "cache_write_tokens": 0,
                "cache_write_1h_tokens": 0,
                "reasoning_tokens": 0,
            },
        },
        id="text",
    ),
    pytest.param(
        {
            "id": "msg_01Think",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "content": [
                {"type": "thinking", "thinking": "Let me think.", "signature": "sig"},
                {"type": "redacted_thinking", "data": "xyz"},
                {"type": "text", "text": "Paris is ", "citations": None},
                {"type": "text", "text": "the capital."},
            ],
            "stop_reason": "end_turn",
            "usage": {
                "input_tokens": 50,
                "output_tokens": 120,
                "cache_read_input_tokens": 1000,
                "cache_creation_input_tokens": 200,
                "output_tokens_details": {"thinking_tokens": 90},
                "service_tier": "standard",
            },
        },
        {
            "id": "msg_01Think",
            "created": NOW,
            "model": "claude-sonnet",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "Paris is the capital.",
                        "thinking_blocks": [
                            {"type": "thinking", "thinking": "Let me think.", "signature": "sig"},
                            {"type": "redacted_thinking", "data": "xyz"},
                        ],
                    },
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": 1250,
                "completion_tokens": 120,
                "cached_tokens": 1000,
                "cache_write_tokens": 200,
                "cache_write_1h_tokens": 0,
                "reasoning_tokens": 90,
            },
        },
        id="text-blocks-joined-thinking-kept-cache-usage",
    ),
    pytest.param(
        {
            "id": "msg_01Tool",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_01A",
                    "name": "get_weather",
                    "input": {"city": "Paris", "units": "c"},
                }
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 300, "output_tokens": 40},
        },
        {
            "id": "msg_01Tool",
            "created": NOW,
            "model": "claude-sonnet",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "toolu_01A",
                                "type": "function",
                                "function": {
                                    "name": "get_weather",
                                    "arguments": '{"city":"Paris","units":"c"}',
                                },
                            }
                        ],
                    },
                    "finish_reason": "tool_calls",
                }
            ],
            "usage": {
                "prompt_tokens": 300,
                "completion_tokens": 40,
                "cached_tokens": 0,
                "cache_write_tokens": 0,
                "cache_write_1h_tokens": 0,
                "reasoning_tokens": 0,
            },
        },
        id="one-tool-call-content-none",
    ),
    pytest.param(
        {
            "id": "msg_01Tools",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "content": [
                {"type": "text", "text": "Checking both."},
                {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_01B", "name": "get_time", "input": {}},
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 300, "output_tokens": 60},
        },
        {
            "id": "msg_01Tools",
            "created": NOW,
            "model": "claude-sonnet",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "Checking both.",
                        "tool_calls": [
                            {
                                "id": "toolu_01A",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                            },
                            {
                                "id": "toolu_01B",
                                "type": "function",
                                "function": {"name": "get_time", "arguments": "{}"},
                            },
                        ],
                    },
                    "finish_reason": "tool_calls",
                }
            ],
            "usage": {
                "prompt_tokens": 300,
                "completion_tokens": 60,
                "cached_tokens": 0,
                "cache_write_tokens": 0,
                "cache_write_1h_tokens": 0,
                "reasoning_tokens": 0,
            },
        },
        id="several-tool-calls-with-text",
    ),
]


@pytest.mark.parametrize(("body", "expected"), PARSE_RESPONSE)
def test_parse_response(body: dict[str, Any], expected: dict[str, Any]) -> None:
    assert dump(af.parse_response(body, "claude-sonnet")) == expected


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ],
)
def test_parse_response_stop_reasons(stop_reason: str, finish_reason: str) -> None:
    body = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": "1, 2"}],
        "stop_reason": stop_reason,
        "stop_sequence": ", 3" if stop_reason == "stop_sequence" else None,
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    assert af.parse_response(body, "m").choices[0].finish_reason == finish_reason


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(None, id="null"),
        pytest.param([], id="list"),
        pytest.param({"id": "msg_1", "usage": {"input_tokens": 1, "output_tokens": 1}}, id="no-content"),
        pytest.param({"id": "msg_1", "content": "hi", "usage": {}}, id="content-not-blocks"),
        pytest.param(
            {"id": "msg_1", "content": [{"type": "text"}], "usage": {}}, id="text-block-without-text"
        ),
        pytest.param(
            {"id": "msg_1", "content": [{"type": "tool_use", "id": "t"}], "usage": {}},
            id="tool-use-incomplete",
        ),
        pytest.param({"content": [], "usage": {}}, id="no-id"),
        pytest.param({"id": "msg_1", "content": []}, id="no-usage"),
    ],
)
def test_parse_response_malformed(body: Any) -> None:
    with pytest.raises(UpstreamProtocolError):
        af.parse_response(body, "m")


def test_parse_response_error_body() -> None:
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    with pytest.raises(UpstreamUnavailable, match="Overloaded"):
        af.parse_response(body, "m")


# =============================================================================================
# Upstream edge: SSE events -> canonical chunks
# =============================================================================================

STREAMS = ["stream_text_cached", "stream_tool_calls", "stream_stop_sequence"]


@pytest.mark.parametrize("name", STREAMS)
def test_stream_decoder_golden(name: str) -> None:
    golden = golden_stream(name)
    decoder = af.StreamDecoder(golden["model"])
    chunks: list[Chunk] = []
    for event, data in golden["events"]:
        assert not decoder.complete
        chunks += decoder.feed(event, data)
    assert decoder.complete
    assert [dump(c) for c in chunks] == golden["chunks"]
    # The canonical stream contract: finish_reason, then a final choice-less usage chunk.
    assert chunks[-1].usage is not None and chunks[-1].choices == []


def test_stream_decoder_uses_data_type_when_event_name_missing() -> None:
    decoder = af.StreamDecoder("m")
    first = decoder.feed(None, golden_stream("stream_text_cached")["events"][0][1])
    assert dump(first[0]) == {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "created": NOW,
        "model": "m",
        "choices": [{"index": 0, "delta": {"role": "assistant"}}],
    }


def test_stream_decoder_ignores_unknown_events() -> None:
    decoder = af.StreamDecoder("m")
    assert decoder.feed("ping", {"type": "ping"}) == []
    assert decoder.feed("future_event", {"type": "future_event", "anything": 1}) == []
    assert not decoder.complete


@pytest.mark.parametrize(
    ("error_type", "expected_class", "status"),
    [
        ("overloaded_error", UpstreamUnavailable, 503),
        ("api_error", UpstreamUnavailable, 503),
        ("rate_limit_error", UpstreamRateLimited, 429),
        ("invalid_request_error", UpstreamBadRequest, 400),
        ("timeout_error", UpstreamTimeout, 504),
        ("authentication_error", UpstreamAuthError, 502),
        ("billing_error", UpstreamAuthError, 502),
        ("brand_new_error", UpstreamUnavailable, 503),
    ],
)
def test_stream_decoder_error_event(error_type: str, expected_class: type, status: int) -> None:
    events = golden_stream("stream_text_cached")["events"]
    decoder = af.StreamDecoder("m")
    for event, data in events[:4]:  # message_start .. first text delta
        decoder.feed(event, data)
    with pytest.raises(expected_class) as info:
        decoder.feed(
            "error", {"type": "error", "error": {"type": error_type, "message": "Something went wrong"}}
        )
    assert type(info.value) is expected_class
    assert info.value.status == status
    assert "Something went wrong" in info.value.message
    assert not decoder.complete


@pytest.mark.parametrize(
    ("event", "data"),
    [
        pytest.param("message_start", {"type": "message_start"}, id="start-without-message"),
        pytest.param(
            "content_block_start", {"type": "content_block_start", "index": 0}, id="block-without-body"
        ),
        pytest.param(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {}},
            id="delta-without-type",
        ),
        pytest.param("message_delta", "not an object", id="data-not-object"),
    ],
)
def test_stream_decoder_malformed_event(event: str, data: Any) -> None:
    with pytest.raises(UpstreamProtocolError):
        af.StreamDecoder("m").feed(event, data)


# =============================================================================================
# Client edge: Anthropic request -> canonical
# =============================================================================================

PARSE_REQUEST = [
    pytest.param(
        {"model": "claude", "max_tokens": 64, "messages": [{"role": "user", "content": "Hello"}]},
        {"model": "claude", "max_tokens": 64, "messages": [{"role": "user", "content": "Hello"}]},
        id="text",
    ),
    pytest.param(
        {
            "model": "claude",
            "max_tokens": 64,
            "system": "You are terse.",
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}],
                },
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "Bye"},
            ],
            "stop_sequences": ["\n\nHuman:"],
            "temperature": 0.2,
            "top_p": 0.8,
            "top_k": 40,
            "metadata": {"user_id": "user-42"},
            "stream": True,
        },
        {
            "model": "claude",
            "max_tokens": 64,
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Hi there"},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "Bye"},
            ],
            "stop": ["\n\nHuman:"],
            "temperature": 0.2,
            "top_p": 0.8,
            "top_k": 40,
            "user": "user-42",
            "stream": True,
        },
        id="system-multi-turn-options",
    ),
    pytest.param(
        {
            "model": "claude",
            "max_tokens": 64,
            "system": [
                {"type": "text", "text": "Manual...", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "Be kind."},
            ],
            "messages": [{"role": "user", "content": "Q"}],
        },
        {
            "model": "claude",
            "max_tokens": 64,
            "messages": [
                {
                    "role": "system",
                    "content": [
                        {"type": "text", "text": "Manual...", "cache_control": {"type": "ephemeral"}},
                        {"type": "text", "text": "Be kind."},
                    ],
                },
                {"role": "user", "content": "Q"},
            ],
        },
        id="system-blocks-with-cache-control",
    ),
    pytest.param(
        {
            "model": "claude",
            "max_tokens": 64,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64},
                        },
                        {
                            "type": "image",
                            "source": {"type": "url", "url": "https://example.com/cat.jpg"},
                            "cache_control": {"type": "ephemeral"},
                        },
                        {"type": "text", "text": "Compare."},
                    ],
                }
            ],
        },
        {
            "model": "claude",
            "max_tokens": 64,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
                        {
                            "type": "image_url",
                            "image_url": {"url": "https://example.com/cat.jpg"},
                            "cache_control": {"type": "ephemeral"},
                        },
                        {"type": "text", "text": "Compare."},
                    ],
                }
            ],
        },
        id="images-base64-and-url",
    ),
    pytest.param(
        {
            "model": "claude",
            "max_tokens": 64,
            "messages": [
                {"role": "user", "content": "Weather in Paris and Tokyo?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "Two cities.", "signature": "sig"},
                        {"type": "text", "text": "Checking."},
                        {
                            "type": "tool_use",
                            "id": "toolu_A",
                            "name": "get_weather",
                            "input": {"city": "Paris"},
                        },
                        {
                            "type": "tool_use",
                            "id": "toolu_B",
                            "name": "get_weather",
                            "input": {"city": "東京"},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_A", "content": "18°C"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_B",
                            "content": [{"type": "text", "text": "station offline"}],
                            "is_error": True,
                        },
                        {"type": "text", "text": "Which is warmer?"},
                    ],
                },
            ],
            "tools": [
                {
                    "name": "get_weather",
                    "description": "Current weather",
                    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
                    "cache_control": {"type": "ephemeral"},
                }
            ],
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
        },
        {
            "model": "claude",
            "max_tokens": 64,
            "messages": [
                {"role": "user", "content": "Weather in Paris and Tokyo?"},
                {
                    "role": "assistant",
                    "content": "Checking.",
                    "thinking_blocks": [{"type": "thinking", "thinking": "Two cities.", "signature": "sig"}],
                    "tool_calls": [
                        {
                            "id": "toolu_A",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        },
                        {
                            "id": "toolu_B",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"東京"}'},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "toolu_A", "content": "18°C"},
                {"role": "tool", "tool_call_id": "toolu_B", "content": "Error: station offline"},
                {"role": "user", "content": "Which is warmer?"},
            ],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "description": "Current weather",
                        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                    },
                    "cache_control": {"type": "ephemeral"},
                }
            ],
            "tool_choice": "auto",
            "parallel_tool_calls": False,
        },
        id="tool-use-and-tool-results",
    ),
    pytest.param(
        {
            "model": "claude",
            "max_tokens": 64,
            "messages": [
                {"role": "user", "content": "Go"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t1", "name": "run", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t1",
                            "content": [
                                {"type": "text", "text": "Screenshot:"},
                                {"type": "image", "source": {"type": "url", "url": "https://x.test/s.png"}},
                            ],
                        }
                    ],
                },
            ],
        },
        {
            "model": "claude",
            "max_tokens": 64,
            "messages": [
                {"role": "user", "content": "Go"},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "t1", "type": "function", "function": {"name": "run", "arguments": "{}"}}
                    ],
                },
                {
                    "role": "tool",
                    "tool_call_id": "t1",
                    "content": [
                        {"type": "text", "text": "Screenshot:"},
                        {"type": "image_url", "image_url": {"url": "https://x.test/s.png"}},
                    ],
                },
            ],
        },
        id="tool-result-with-image-and-no-text-after",
    ),
    pytest.param(
        {
            "model": "claude",
            "max_tokens": 64,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "document",
                            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
                        },
                        {"type": "text", "text": "Summarize."},
                    ],
                }
            ],
        },
        {
            "model": "claude",
            "max_tokens": 64,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "document",
                            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
                        },
                        {"type": "text", "text": "Summarize."},
                    ],
                }
            ],
        },
        id="document-passes-through",
    ),
]


@pytest.mark.parametrize(("body", "expected"), PARSE_REQUEST)
def test_parse_request(body: dict[str, Any], expected: dict[str, Any]) -> None:
    assert dump(af.parse_request(body)) == expected


@pytest.mark.parametrize(
    ("tool_choice", "expected_choice", "expected_parallel"),
    [
        ({"type": "auto"}, "auto", None),
        ({"type": "any"}, "required", None),
        ({"type": "none"}, "none", None),
        ({"type": "tool", "name": "f"}, {"type": "function", "function": {"name": "f"}}, None),
        ({"type": "any", "disable_parallel_tool_use": True}, "required", False),
        ({"type": "auto", "disable_parallel_tool_use": False}, "auto", None),
    ],
)
def test_parse_request_tool_choice(
    tool_choice: dict[str, Any], expected_choice: Any, expected_parallel: Any
) -> None:
    body = {
        "model": "c",
        "max_tokens": 1,
        "messages": [{"role": "user", "content": "x"}],
        "tools": [{"name": "f", "input_schema": {"type": "object"}}],
        "tool_choice": tool_choice,
    }
    request = dump(af.parse_request(body))
    assert request["tool_choice"] == expected_choice
    assert request.get("parallel_tool_calls") == expected_parallel


MSG = [{"role": "user", "content": "x"}]

PARSE_REQUEST_ERRORS = [
    pytest.param(["not", "an", "object"], None, "must be a JSON object", id="body-not-object"),
    pytest.param({"max_tokens": 1, "messages": MSG}, "model", "Field required", id="missing-model"),
    pytest.param({"model": "c", "max_tokens": 1}, "messages", "Field required", id="missing-messages"),
    pytest.param({"model": "c", "messages": MSG}, "max_tokens", "Field required", id="missing-max-tokens"),
    pytest.param(
        {"model": 5, "max_tokens": 1, "messages": MSG}, "model", "non-empty string", id="model-not-string"
    ),
    pytest.param(
        {"model": "c", "max_tokens": 0, "messages": MSG},
        "max_tokens",
        "greater than or equal to 1",
        id="max-tokens-zero",
    ),
    pytest.param(
        {"model": "c", "max_tokens": 1, "messages": []}, "messages", "non-empty list", id="messages-empty"
    ),
    pytest.param(
        {"model": "c", "max_tokens": 1, "messages": [{"role": "system", "content": "x"}]},
        "messages.0.role",
        "'user' or 'assistant'",
        id="system-role-in-messages",
    ),
    pytest.param(
        {"model": "c", "max_tokens": 1, "messages": ["hello"]},
        "messages.0",
        "must be an object",
        id="message-not-object",
    ),
    pytest.param(
        {"model": "c", "max_tokens": 1, "messages": [{"role": "user", "content": 42}]},
        "messages.0.content",
        "string or a list",
        id="content-not-string-or-list",
    ),
    pytest.param(
        {"model": "c", "max_tokens": 1, "messages": [{"role": "user", "content": [{"text": "no type"}]}]},
        "messages.0.content.0",
        "'type'",
        id="block-without-type",
    ),
    pytest.param(
        {"model": "c", "max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "video"}]}]},
        "messages.0.content.0.type",
        "'video' is not allowed",
        id="unknown-block-type",
    ),
    pytest.param(
        {"model": "c", "max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "text"}]}]},
        "messages.0.content.0.text",
        "Field required",
        id="text-block-without-text",
    ),
    pytest.param(
        {
            "model": "c",
            "max_tokens": 1,
            "messages": [
                {"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}
            ],
        },
        "messages.0.content.0.source.type",
        "'base64' or 'url'",
        id="image-file-source",
    ),
    pytest.param(
        {
            "model": "c",
            "max_tokens": 1,
            "messages": [
                {"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": "x"}}]}
            ],
        },
        "messages.0.content.0.source",
        "media_type",
        id="image-without-media-type",
    ),
    pytest.param(
        {
            "model": "c",
            "max_tokens": 1,
            "messages": [
                {"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}
            ],
        },
        "messages.0.content.0.type",
        "'tool_use' is not allowed",
        id="tool-use-in-user-turn",
    ),
    pytest.param(
        {
            "model": "c",
            "max_tokens": 1,
            "messages": [{"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "t"}]}],
        },
        "messages.0.content.0.type",
        "'tool_result' is not allowed",
        id="tool-result-in-assistant-turn",
    ),
    pytest.param(
        {
            "model": "c",
            "max_tokens": 1,
            "messages": [{"role": "user", "content": [{"type": "tool_result", "content": "x"}]}],
        },
        "messages.0.content.0.tool_use_id",
        "Field required",
        id="tool-result-without-id",
    ),
    pytest.param(
        {
            "model": "c",
            "max_tokens": 1,
            "messages": [
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t", "name": "f", "input": "{}"}],
                }
            ],
        },
        "messages.0.content.0.input",
        "must be an object",
        id="tool-use-input-not-object",
    ),
    pytest.param(
        {
            "model": "c",
            "max_tokens": 1,
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "x", "cache_control": "yes"}]}
            ],
        },
        "messages.0.content.0.cache_control",
        "valid dictionary",
        id="cache-control-not-object",
    ),
    pytest.param(
        {"model": "c", "max_tokens": 1, "messages": MSG, "system": 7},
        "system",
        "string or a list",
        id="system-not-text",
    ),
    pytest.param(
        {"model": "c", "max_tokens": 1, "messages": MSG, "system": [{"type": "image"}]},
        "system.0.type",
        "not allowed",
        id="system-image-block",
    ),
    pytest.param(
        {"model": "c", "max_tokens": 1, "messages": MSG, "temperature": 3},
        "temperature",
        "less than or equal to 2",
        id="temperature-out-of-range",
    ),
    pytest.param(
        {"model": "c", "max_tokens": 1, "messages": MSG, "stop_sequences": "END"},
        "stop_sequences",
        "list of strings",
        id="stop-sequences-not-list",
    ),
    pytest.param(
        {"model": "c", "max_tokens": 1, "messages": MSG, "top_k": -1}, "top_k", "non-negative", id="bad-top-k"
    ),
    pytest.param(
        {"model": "c", "max_tokens": 1, "messages": MSG, "metadata": "user-1"},
        "metadata",
        "object",
        id="metadata-not-object",
    ),
    pytest.param(
        {"model": "c", "max_tokens": 1, "messages": MSG, "metadata": {"user_id": 42}},
        "metadata.user_id",
        "string",
        id="user-id-not-string",
    ),
    pytest.param(
        {"model": "c", "max_tokens": 1, "messages": MSG, "tools": [{"input_schema": {}}]},
        "tools.0.name",
        "Field required",
        id="tool-without-name",
    ),
    pytest.param(
        {"model": "c", "max_tokens": 1, "messages": MSG, "tools": [{"name": "f"}]},
        "tools.0.input_schema",
        "Field required",
        id="tool-without-schema",
    ),
    pytest.param(
        {
            "model": "c",
            "max_tokens": 1,
            "messages": MSG,
            "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}],
        },
        "tools.0.type",
        "not supported",
        id="server-tool",
    ),
    pytest.param(
        {"model": "c", "max_tokens": 1, "messages": MSG, "tool_choice": {"type": "sometimes"}},
        "tool_choice.type",
        "must be one of",
        id="tool-choice-unknown",
    ),
    pytest.param(
        {"model": "c", "max_tokens": 1, "messages": MSG, "tool_choice": {"type": "tool"}},
        "tool_choice.name",
        "Field required",
        id="tool-choice-tool-without-name",
    ),
]


@pytest.mark.parametrize(("body", "param", "message"), PARSE_REQUEST_ERRORS)
def test_parse_request_rejects(body: Any, param: str | None, message: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        af.parse_request(body)
    assert type(info.value) is InvalidRequestError
    assert info.value.param == param
    assert message in info.value.message
    if param is not None:
        assert f"'{param}'" in info.value.message  # the message names the field, not just `param`


# =============================================================================================
# Client edge: canonical response -> Anthropic Message
# =============================================================================================

USAGE_30_5 = {"prompt_tokens": 30, "completion_tokens": 5}

RESPONSE_TO_WIRE = [
    pytest.param(
        {
            "id": "chatcmpl-abc",
            "created": NOW,
            "model": "gpt-4o",
            "choices": [{"message": {"role": "assistant", "content": "Hi!"}, "finish_reason": "stop"}],
            "usage": USAGE_30_5,
        },
        {
            "id": "msg_chatcmpl-abc",
            "type": "message",
            "role": "assistant",
            "model": "gpt-4o",
            "content": [{"type": "text", "text": "Hi!"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": 30,
                "output_tokens": 5,
                "cache_read_input_tokens": 0,
                "cache_creation_input_tokens": 0,
                "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            },
        },
        id="text-id-prefixed",
    ),
    pytest.param(
        {
            "id": "msg_01Keep",
            "created": NOW,
            "model": "claude",
            "choices": [
                {"message": {"role": "assistant", "content": "Long answer"}, "finish_reason": "length"}
            ],
            "usage": {
                "prompt_tokens": 2160,
                "completion_tokens": 15,
                "cached_tokens": 2048,
                "cache_write_tokens": 100,
            },
        },
        {
            "id": "msg_01Keep",
            "type": "message",
            "role": "assistant",
            "model": "claude",
            "content": [{"type": "text", "text": "Long answer"}],
            "stop_reason": "max_tokens",
            "stop_sequence": None,
            "usage": {
                "input_tokens": 12,
                "output_tokens": 15,
                "cache_read_input_tokens": 2048,
                "cache_creation_input_tokens": 100,
                "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 0},
            },
        },
        id="msg-id-kept-length-cache-usage",
    ),
    pytest.param(
        {
            "id": "chatcmpl-t",
            "created": NOW,
            "model": "gpt-4o",
            "choices": [
                {
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "call_1",
                                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                            },
                            {"id": "call_2", "function": {"name": "now", "arguments": ""}},
                        ],
                    },
                    "finish_reason": "tool_calls",
                }
            ],
            "usage": USAGE_30_5,
        },
        {
            "id": "msg_chatcmpl-t",
            "type": "message",
            "role": "assistant",
            "model": "gpt-4o",
            "content": [
                {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "now", "input": {}},
            ],
            "stop_reason": "tool_use",
            "stop_sequence": None,
            "usage": {
                "input_tokens": 30,
                "output_tokens": 5,
                "cache_read_input_tokens": 0,
                "cache_creation_input_tokens": 0,
                "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            },
        },
        id="tool-calls",
    ),
    pytest.param(
        {
            "id": "chatcmpl-s",
            "created": NOW,
            "model": "local-llama",
            "choices": [
                {
                    "message": {
                        "role": "assistant",
                        "content": "Let me look.",
                        "tool_calls": [
                            {"id": "call_9", "function": {"name": "search", "arguments": '{"q":"x"}'}}
                        ],
                    },
                    "finish_reason": "stop",
                }
            ],
            "usage": USAGE_30_5,
        },
        {
            "id": "msg_chatcmpl-s",
            "type": "message",
            "role": "assistant",
            "model": "local-llama",
            "content": [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "call_9", "name": "search", "input": {"q": "x"}},
            ],
            "stop_reason": "tool_use",
            "stop_sequence": None,
            "usage": {
                "input_tokens": 30,
                "output_tokens": 5,
                "cache_read_input_tokens": 0,
                "cache_creation_input_tokens": 0,
                "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            },
        },
        id="tool-calls-with-stop-finish-still-tool-use",
    ),
    pytest.param(
        {
            "id": "chatcmpl-r",
            "created": NOW,
            "model": "gpt-4o",
            "choices": [
                {
                    "message": {"role": "assistant", "refusal": "I can't help with that."},
                    "finish_reason": "content_filter",
                }
            ],
            "usage": {"prompt_tokens": 30, "completion_tokens": 5, "reasoning_tokens": 3},
        },
        {
            "id": "msg_chatcmpl-r",
            "type": "message",
            "role": "assistant",
            "model": "gpt-4o",
            "content": [{"type": "text", "text": "I can't help with that."}],
            "stop_reason": "refusal",
            "stop_sequence": None,
            "usage": {
                "input_tokens": 30,
                "output_tokens": 5,
                "cache_read_input_tokens": 0,
                "cache_creation_input_tokens": 0,
                "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
                "output_tokens_details": {"thinking_tokens": 3},
            },
        },
        id="refusal-content-filter",
    ),
]


@pytest.mark.parametrize(("canonical", "expected"), RESPONSE_TO_WIRE)
def test_response_to_wire(canonical: dict[str, Any], expected: dict[str, Any]) -> None:
    wire = af.response_to_wire(ChatResponse.model_validate(canonical))
    assert wire == expected
    # The SDK's own types accept it, strictly validated...
    assert SDKMessage.model_validate(wire).model_dump(exclude_none=True) == without_none(expected)
    # ...and so does its real client reading our bytes off the wire.
    client = sdk_client(lambda request: sdk_httpx.Response(200, json=wire))
    message = client.messages.create(model="m", max_tokens=16, messages=[{"role": "user", "content": "x"}])
    assert message.to_dict(exclude_none=True) == without_none(expected)


def test_response_to_wire_rejects_non_object_tool_arguments() -> None:
    response = ChatResponse.model_validate(
        {
            "id": "x",
            "created": NOW,
            "model": "m",
            "choices": [
                {
                    "message": {
                        "role": "assistant",
                        "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1"}}],
                    },
                    "finish_reason": "tool_calls",
                }
            ],
        }
    )
    with pytest.raises(UpstreamProtocolError):
        af.response_to_wire(response)


# =============================================================================================
# Client edge: canonical chunks -> Anthropic SSE events
# =============================================================================================


def chunk(**fields: Any) -> Chunk:
    return Chunk.model_validate({"id": "chatcmpl-9", "created": NOW, "model": "gpt-4o", **fields})


def delta(finish_reason: str | None = None, **fields: Any) -> Chunk:
    return chunk(choices=[{"index": 0, "delta": fields, "finish_reason": finish_reason}])


OPENAI_STYLE_STREAM = [
    delta(role="assistant", content=""),
    delta(content="Let me "),
    delta(content="look."),
    delta(
        tool_calls=[
            {"index": 0, "id": "call_1", "type": "function", "function": {"name": "search", "arguments": ""}}
        ]
    ),
    delta(tool_calls=[{"index": 0, "function": {"arguments": '{"q":'}}]),
    delta(tool_calls=[{"index": 0, "function": {"arguments": '"cats"}'}}]),
    delta(
        tool_calls=[
            {"index": 1, "id": "call_2", "type": "function", "function": {"name": "now", "arguments": "{}"}}
        ]
    ),
    delta(finish_reason="tool_calls"),
    chunk(choices=[], usage={"prompt_tokens": 50, "completion_tokens": 20, "cached_tokens": 30}),
]

EXPECTED_EVENTS = [
    (
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_chatcmpl-9",
                "type": "message",
                "role": "assistant",
                "model": "gpt-4o",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            },
        },
    ),
    (
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ),
    (
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me "}},
    ),
    (
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "look."}},
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    (
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "call_1", "name": "search", "input": {}},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"q":'},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '"cats"}'},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    (
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 2,
            "content_block": {"type": "tool_use", "id": "call_2", "name": "now", "input": {}},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": "{}"},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 2}),
    (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {
                "input_tokens": 20,
                "output_tokens": 20,
                "cache_read_input_tokens": 30,
                "cache_creation_input_tokens": 0,
                "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            },
        },
    ),
    ("message_stop", {"type": "message_stop"}),
]


def encode_all(
    chunks: list[Chunk],
) -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[str, dict[str, Any]]]]:
    """(events from encode(), events from close())."""
    encoder = af.StreamEncoder()
    events = [e for c in chunks for e in encoder.encode(c)]
    return events, encoder.close()


def assert_sdk_accepts(events: list[tuple[str, dict[str, Any]]]) -> None:
    for name, data in events:
        assert name == data["type"]
        STREAM_EVENT.validate_python(data)  # strict: raises on any shape the SDK does not know


def test_stream_encoder_golden() -> None:
    events, owed = encode_all(OPENAI_STYLE_STREAM)
    assert events == EXPECTED_EVENTS
    assert owed == []  # everything was emitted once finish_reason and usage were both seen
    assert_sdk_accepts(events)
    final = sdk_final_message(events)
    assert final.to_dict(exclude_none=True) == {
        "id": "msg_chatcmpl-9",
        "type": "message",
        "role": "assistant",
        "model": "gpt-4o",
        "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "call_1", "name": "search", "input": {"q": "cats"}},
            {"type": "tool_use", "id": "call_2", "name": "now", "input": {}},
        ],
        "stop_reason": "tool_use",
        "usage": {
            "input_tokens": 20,
            "output_tokens": 20,
            "cache_read_input_tokens": 30,
            "cache_creation_input_tokens": 0,
        },
    }


def test_stream_encoder_waits_for_usage_after_finish() -> None:
    encoder = af.StreamEncoder()
    encoder.encode(delta(role="assistant", content="Hi"))
    assert encoder.encode(delta(finish_reason="stop")) == []  # usage still to come
    assert encoder.encode(chunk(choices=[], usage={"prompt_tokens": 9, "completion_tokens": 2})) == [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {
                    "input_tokens": 9,
                    "output_tokens": 2,
                    "cache_read_input_tokens": 0,
                    "cache_creation_input_tokens": 0,
                    "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
                },
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    assert encoder.close() == []
    assert encoder.encode(delta(content="late")) == []


def test_stream_encoder_close_without_usage() -> None:
    events, owed = encode_all([delta(role="assistant", content="Partial"), delta(finish_reason="length")])
    assert events[-1] == (
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Partial"}},
    )
    assert owed == [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
                "usage": {
                    "input_tokens": 0,
                    "output_tokens": 0,
                    "cache_read_input_tokens": 0,
                    "cache_creation_input_tokens": 0,
                    "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
                },
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    assert_sdk_accepts(events + owed)


def test_stream_encoder_close_without_finish_reason() -> None:
    events, owed = encode_all([delta(role="assistant")])
    assert [name for name, _ in events + owed] == ["message_start", "message_delta", "message_stop"]
    assert owed[0][1]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert_sdk_accepts(events + owed)
    assert af.StreamEncoder().close() == []  # nothing started, nothing owed


def test_stream_encoder_finish_and_usage_in_one_chunk() -> None:
    last = chunk(
        choices=[{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}],
        usage={"prompt_tokens": 3, "completion_tokens": 1},
    )
    events, owed = encode_all([last])
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert owed == []
    assert_sdk_accepts(events)


# =============================================================================================
# Round trips
# =============================================================================================

ROUND_TRIP_REQUESTS = [
    pytest.param(
        {"model": "claude", "max_tokens": 256, "messages": [{"role": "user", "content": "Hello"}]},
        id="text",
    ),
    pytest.param(
        {
            "model": "claude",
            "max_tokens": 256,
            "messages": [
                {"role": "system", "content": "Be terse."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "Bye"},
            ],
            "stop": ["END", "STOP"],
            "temperature": 0.7,
            "top_p": 0.9,
            "user": "user-42",
            "stream": True,
            "top_k": 20,
        },
        id="system-multi-turn-options",
    ),
    pytest.param(
        {
            "model": "claude",
            "max_tokens": 256,
            "messages": [
                {
                    "role": "system",
                    "content": [{"type": "text", "text": "Doc", "cache_control": {"type": "ephemeral"}}],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Look", "cache_control": {"type": "ephemeral"}},
                        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
                        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                    ],
                },
            ],
        },
        id="cache-control-and-images",
    ),
    pytest.param(
        {
            "model": "claude",
            "max_tokens": 256,
            "messages": [
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": "Checking.",
                    "tool_calls": [
                        {
                            "id": "t1",
                            "type": "function",
                            "function": {"name": "w", "arguments": '{"city":"Paris"}'},
                        },
                        {
                            "id": "t2",
                            "type": "function",
                            "function": {"name": "w", "arguments": '{"city":"Oslo"}'},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "t1", "content": "18°C"},
                {"role": "tool", "tool_call_id": "t2", "content": "3°C"},
                {"role": "user", "content": "Thanks"},
            ],
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "w", "description": "Weather", "parameters": {"type": "object"}},
                    "cache_control": {"type": "ephemeral"},
                }
            ],
            "tool_choice": {"type": "function", "function": {"name": "w"}},
            "parallel_tool_calls": False,
        },
        id="tool-calls-and-results",
    ),
    pytest.param(
        {
            "model": "claude",
            "max_tokens": 256,
            "messages": [
                {"role": "user", "content": "Go"},
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "t1", "function": {"name": "run", "arguments": "{}"}}],
                },
                {"role": "tool", "tool_call_id": "t1", "content": "done"},
            ],
            "tools": [{"type": "function", "function": {"name": "run", "parameters": {"type": "object"}}}],
            "tool_choice": "required",
        },
        id="tool-only-assistant",
    ),
]


@pytest.mark.parametrize("canonical", ROUND_TRIP_REQUESTS)
def test_round_trip_canonical_through_anthropic_wire(canonical: dict[str, Any]) -> None:
    request = ChatRequest.model_validate(canonical)
    wire = af.request_to_wire(request, request.model, stream=bool(request.stream))
    assert af.parse_request(json.loads(json.dumps(wire))) == request


@pytest.mark.parametrize("body", [p.values[0] for p in PARSE_REQUEST])
def test_round_trip_anthropic_wire_through_canonical(body: dict[str, Any]) -> None:
    """Anthropic -> canonical -> Anthropic -> canonical is stable: the second translation loses
    nothing the first one kept (the first reshapes what canonical form holds differently, e.g. a tool
    result's is_error flag becomes text)."""
    request = af.parse_request(body)
    again = af.request_to_wire(request, body["model"], stream=bool(request.stream))
    assert af.parse_request(again) == request


@pytest.mark.parametrize("name", STREAMS)
def test_round_trip_stream_decoder_then_encoder(name: str) -> None:
    golden = golden_stream(name)
    decoder, encoder = af.StreamDecoder(golden["model"]), af.StreamEncoder()
    events = [
        e for event, data in golden["events"] for c in decoder.feed(event, data) for e in encoder.encode(c)
    ]
    events += encoder.close()
    assert [[name, data] for name, data in events] == golden["reencoded"]
    assert_sdk_accepts(events)
    # What an SDK client ends up with is the same message, minus what canonical form cannot carry
    # (which stop sequence matched, service tier).
    original, ours = sdk_final_message(golden["events"]), sdk_final_message(events)
    assert ours.content == original.content
    assert ours.stop_reason == {"stop_sequence": "end_turn"}.get(original.stop_reason, original.stop_reason)
    for field in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"):
        assert (getattr(ours.usage, field) or 0) == (getattr(original.usage, field) or 0), field


def test_round_trip_response() -> None:
    body = {
        "id": "msg_01RT",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet",
        "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"city": "Paris", "days": [1, 2]}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 12,
            "output_tokens": 15,
            "cache_read_input_tokens": 2048,
            "cache_creation_input_tokens": 100,
            "cache_creation": {"ephemeral_5m_input_tokens": 40, "ephemeral_1h_input_tokens": 60},
        },
    }
    assert af.parse_response(body, "claude-sonnet").usage.cache_write_1h_tokens == 60
    assert af.response_to_wire(af.parse_response(body, "claude-sonnet")) == body


def test_stream_cache_writes_split_by_ttl_in_message_start_survive_to_the_re_encoded_stream() -> None:
    """Anthropic splits cache writes by TTL in message_start only (message_delta's usage has no
    ``cache_creation``); the gateway learns usage at the end, so it sends the split in message_delta."""
    events = copy.deepcopy(golden_stream("stream_text_cached")["events"])
    by_ttl = {"ephemeral_5m_input_tokens": 40, "ephemeral_1h_input_tokens": 60}
    events[0][1]["message"]["usage"]["cache_creation"] = by_ttl
    decoder, encoder = af.StreamDecoder("claude-sonnet-4-5"), af.StreamEncoder()
    chunks = [c for event, data in events for c in decoder.feed(event, data)]
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.cache_write_tokens, chunks[-1].usage.cache_write_1h_tokens) == (100, 60)
    out = [e for c in chunks for e in encoder.encode(c)]
    (delta,) = [data for name, data in out if name == "message_delta"]
    assert delta["usage"]["cache_creation_input_tokens"] == 100 and delta["usage"]["cache_creation"] == by_ttl
    assert_sdk_accepts(out)


# =============================================================================================
# Errors
# =============================================================================================


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}', "Overloaded"),
        (
            b'{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"}}',
            "max_tokens: Field required",
        ),
        (b'{"error":"plain string error"}', "plain string error"),
        (b'{"detail":"Not Found"}', "{'detail': 'Not Found'}"),
        (b"<html>502 Bad Gateway</html>", "<html>502 Bad Gateway</html>"),
        (b"", "(empty body)"),
        (b"\xff\xfe not utf-8", "\ufffd\ufffd not utf-8"),
    ],
)
def test_error_message_from_wire(body: bytes, expected: str) -> None:
    assert af.error_message_from_wire(body) == expected


def test_error_to_wire_is_an_sdk_error_body() -> None:
    error = UpstreamUnavailable("Overloaded")
    assert af.error_to_wire(error) == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    client = sdk_client(lambda request: sdk_httpx.Response(529, json=af.error_to_wire(error)))
    with pytest.raises(anthropic.APIStatusError) as info:
        client.with_options(max_retries=0).messages.create(
            model="m", max_tokens=1, messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.status_code == 529
    assert info.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }


# --- JSON mode through the forced tool ---------------------------------------------------------


def test_json_tool_answer_becomes_message_text():
    body = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude",
        "content": [
            {"type": "text", "text": "Here you go:"},
            {
                "type": "tool_use",
                "id": "toolu_1",
                "name": "json_response",
                "input": {"name": "Ada", "age": 36},
            },
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 10, "output_tokens": 5},
    }
    response = af.parse_response(body, "m", json_tool=True)
    assert response.choices[0].message.content == '{"name":"Ada","age":36}'
    assert response.choices[0].message.tool_calls is None
    assert response.choices[0].finish_reason == "stop"


def test_json_tool_stream_becomes_content_deltas():
    decoder = af.StreamDecoder("m", json_tool=True)
    events = [
        (
            "message_start",
            {"type": "message_start", "message": {"id": "msg_1", "usage": {"input_tokens": 9}}},
        ),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "tool_use", "id": "toolu_1", "name": "json_response", "input": {}},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": '{"a":'},
            },
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": "1}"},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 4}},
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    chunks = [c for name, data in events for c in decoder.feed(name, data)]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == '{"a":1}'
    assert not any(c.choices and c.choices[0].delta.tool_calls for c in chunks)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "stop"
    ]
    assert chunks[-1].usage.completion_tokens == 4


def test_redacted_and_plain_thinking_survive_a_stream_assembled_and_replayed() -> None:
    """Decoded, assembled into one response (as the cache and the call log do), replayed as a
    stream and encoded again: an SDK client ends up with the upstream's blocks, byte for byte."""
    from llmrelay.cache.entries import Assembler, chunks_of

    start = {"id": "msg_R", "type": "message", "role": "assistant", "content": [], "model": "c"}
    start |= {"stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 9, "output_tokens": 1}}

    def block(event: str, index: int, **data: Any) -> tuple[str, dict[str, Any]]:
        return f"content_block_{event}", {"type": f"content_block_{event}", "index": index, **data}

    redacted = {"type": "redacted_thinking", "data": "ENCRYPTED"}
    finish = {"delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": 30}}
    events = [
        ("message_start", {"type": "message_start", "message": start}),
        block("start", 0, content_block=redacted),
        block("stop", 0),
        block("start", 1, content_block={"type": "thinking", "thinking": "", "signature": ""}),
        block("delta", 1, delta={"type": "thinking_delta", "thinking": "Two "}),
        block("delta", 1, delta={"type": "thinking_delta", "thinking": "steps."}),
        block("delta", 1, delta={"type": "signature_delta", "signature": "SIG"}),
        block("stop", 1),
        block("start", 2, content_block={"type": "text", "text": ""}),
        block("delta", 2, delta={"type": "text_delta", "text": "Done."}),
        block("stop", 2),
        ("message_delta", {"type": "message_delta", **finish}),
        ("message_stop", {"type": "message_stop"}),
    ]
    decoder, assembler = af.StreamDecoder("c"), Assembler()
    for event, data in events:
        for c in decoder.feed(event, data):
            assembler.add(c)
    response = assembler.response()
    assert response is not None
    assert dump(response.choices[0].message)["thinking_blocks"] == [
        {"type": "redacted_thinking", "data": "ENCRYPTED"},
        {"type": "thinking", "thinking": "Two steps.", "signature": "SIG"},
    ]
    encoder = af.StreamEncoder()
    replayed = [e for c in chunks_of(response) for e in encoder.encode(c)] + encoder.close()
    assert_sdk_accepts(replayed)
    assert sdk_final_message(replayed).content == sdk_final_message(events).content
    assert af.response_to_wire(response)["content"][:2] == [
        {"type": "redacted_thinking", "data": "ENCRYPTED"},
        {"type": "thinking", "thinking": "Two steps.", "signature": "SIG"},
    ]
