"""Responses: an upstream Messages response -> canonical (``parse_response``), and canonical ->
a Messages response for an Anthropic client (``response_to_wire``)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ...errors import UpstreamProtocolError
from ...jsondepth import tool_arguments
from ...types import (
    ChatResponse,
    Choice,
    FunctionCall,
    Message,
    ToolCall,
)
from . import _common
from ._common import (
    _dump_json,
    _finish_reason,
    _message_id,
    _stop_reason,
    _usage_from_wire,
    _usage_to_wire,
    thinking_from_wire,
    thinking_to_wire,
)
from .errors import _error_from_wire
from .upstream_request import JSON_TOOL

# === responses ===============================================================================


def parse_response(body: Any, model: str, *, json_tool: bool = False) -> ChatResponse:
    """An upstream Messages response -> ChatResponse named after our client-facing ``model``.

    ``json_tool``: the request asked for JSON through the forced tool (``uses_json_tool``); its
    input becomes the message text.
    """
    if isinstance(body, dict) and body.get("type") == "error":
        raise _error_from_wire(body)
    try:
        blocks = body["content"]
        stop_reason = body.get("stop_reason")
        if json_tool and any(b["type"] == "tool_use" and b["name"] == JSON_TOOL for b in blocks):
            blocks = [
                {"type": "text", "text": _dump_json(b["input"])} if b["type"] == "tool_use" else b
                for b in blocks
                if b["type"] != "text"
            ]
            stop_reason = "end_turn" if stop_reason == "tool_use" else stop_reason
        text = "".join(b["text"] for b in blocks if b["type"] == "text")
        calls = [
            ToolCall(id=b["id"], function=FunctionCall(name=b["name"], arguments=_dump_json(b["input"])))
            for b in blocks
            if b["type"] == "tool_use"
        ]
        thinking = [thinking_from_wire(b) for b in blocks if b["type"] in ("thinking", "redacted_thinking")]
        # server-tool and other blocks have no canonical form and are dropped.
        message = Message(
            role="assistant",
            content=text if text or not calls else None,
            tool_calls=calls or None,
            thinking_blocks=thinking or None,
        )
        return ChatResponse(
            id=body["id"],
            created=_common._now(),
            model=model,
            choices=[Choice(message=message, finish_reason=_finish_reason(stop_reason))],
            usage=_usage_from_wire(body["usage"]),
        )
    except (KeyError, TypeError, AttributeError, ValidationError) as exc:
        raise UpstreamProtocolError(
            f"Malformed Anthropic message from upstream: {exc!r}"[:300], provider="anthropic"
        ) from None


def response_to_wire(response: ChatResponse) -> dict[str, Any]:
    """ChatResponse -> a Messages response body for an Anthropic client."""
    choice = response.choices[0] if response.choices else Choice(message=Message(role="assistant"))
    message = choice.message
    content = [thinking_to_wire(b) for b in message.thinking_blocks or ()]
    text = message.text() or message.refusal
    if text:
        content.append({"type": "text", "text": text})
    for call in message.tool_calls or ():
        content.append(
            {
                "type": "tool_use",
                "id": call.id,
                "name": call.function.name,
                "input": _tool_input(call.function.arguments),
            }
        )
    return {
        "id": _message_id(response.id),
        "type": "message",
        "role": "assistant",
        "model": response.model,
        "content": content,
        "stop_reason": _stop_reason(choice.finish_reason, has_tool_calls=bool(message.tool_calls)),
        "stop_sequence": None,
        "usage": _usage_to_wire(response.usage),
    }


def _tool_input(arguments: str) -> dict[str, Any]:
    """An upstream's tool-call arguments -> Anthropic's ``input`` object."""
    value = tool_arguments(arguments)
    if value is None:
        # Anthropic clients cannot receive anything but an object; passing garbage on would only
        # move the failure into the client's SDK.
        raise UpstreamProtocolError(
            f"Upstream returned tool arguments that are not a JSON object: {arguments[:200]!r}"
        )
    return value
