"""Streams: Anthropic SSE events -> canonical chunks (``StreamDecoder``, upstream edge), and
canonical chunks -> Anthropic SSE events (``StreamEncoder``, client edge)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ...errors import UpstreamProtocolError
from ...types import (
    Chunk,
    ChunkChoice,
    Delta,
    FinishReason,
    ThinkingDelta,
    ToolCallDelta,
    Usage,
)
from . import _common
from ._common import (
    _dump_json,
    _finish_reason,
    _message_id,
    _new_id,
    _stop_reason,
    _usage_from_wire,
    _usage_to_wire,
)
from .errors import _error_from_wire
from .upstream_request import JSON_TOOL

# === streams =================================================================================


class StreamDecoder:
    """Anthropic SSE events -> canonical chunks (stateful: block index -> tool-call index)."""

    def __init__(self, model: str, *, json_tool: bool = False) -> None:
        self.model = model
        self._json_tool = json_tool  # see uses_json_tool: that tool's input streams as text
        self._json_block: int | None = None
        self._id = ""
        self._created = _common._now()
        self._usage: dict[str, Any] = {}  # cumulative Anthropic usage, merged from start and delta
        self._tool_index: dict[int, int] = {}  # Anthropic block index -> canonical tool-call index
        self._thinking_index: dict[int, int] = {}  # Anthropic block index -> canonical thinking index
        self._complete = False

    def feed(self, event: str | None, data: Any) -> list[Chunk]:
        kind = event or (data.get("type") if isinstance(data, dict) else None)
        handler = _DECODER_HANDLERS.get(kind or "")
        if handler is None:
            return []  # ping, and event types Anthropic may add (their versioning policy allows it)
        try:
            return handler(self, data)
        except (KeyError, TypeError, AttributeError, ValidationError) as exc:
            raise UpstreamProtocolError(
                f"Malformed Anthropic stream event {kind!r}: {exc!r}"[:300], provider="anthropic"
            ) from None

    @property
    def complete(self) -> bool:
        """True once ``message_stop`` was seen (a stream without it was truncated)."""
        return self._complete

    def _chunk(self, delta: Delta, finish_reason: FinishReason | None = None) -> Chunk:
        choice = ChunkChoice(delta=delta, finish_reason=finish_reason)
        return Chunk(id=self._id, created=self._created, model=self.model, choices=[choice])

    def _merge_usage(self, raw: dict[str, Any] | None) -> None:
        # message_delta counts are cumulative and may omit fields: overwrite only what is present.
        self._usage.update({k: v for k, v in (raw or {}).items() if v is not None})

    def _on_message_start(self, data: dict[str, Any]) -> list[Chunk]:
        message = data["message"]
        self._id = message["id"]
        self._merge_usage(message.get("usage"))
        return [self._chunk(Delta(role="assistant"))]

    def _on_block_start(self, data: dict[str, Any]) -> list[Chunk]:
        block = data["content_block"]
        if self._json_tool and block["type"] == "tool_use" and block["name"] == JSON_TOOL:
            self._json_block = data["index"]
            return [self._chunk(Delta(content=_dump_json(block["input"])))] if block.get("input") else []
        if block["type"] == "tool_use":
            index = self._tool_index[data["index"]] = len(self._tool_index)
            # Anthropic sends input {} here and the JSON in deltas; a non-empty one is kept.
            arguments = _dump_json(block["input"]) if block.get("input") else ""
            function = {"name": block["name"], "arguments": arguments}
            return [
                self._chunk(
                    Delta(
                        tool_calls=[
                            ToolCallDelta(index=index, id=block["id"], type="function", function=function)
                        ]
                    )
                )
            ]
        if block["type"] == "text" and block.get("text"):
            return [self._chunk(Delta(content=block["text"]))]
        if block["type"] in ("thinking", "redacted_thinking"):
            index = self._thinking_index[data["index"]] = len(self._thinking_index)
            opening = ThinkingDelta(
                index=index,
                type=block["type"],
                thinking=block.get("thinking") or None,
                signature=block.get("signature") or None,
                data=block.get("data"),
            )
            return [self._chunk(Delta(thinking_blocks=[opening]))]
        return []  # server-tool blocks have no canonical form

    def _on_block_delta(self, data: dict[str, Any]) -> list[Chunk]:
        delta = data["delta"]
        if delta["type"] == "text_delta" and delta["text"]:
            return [self._chunk(Delta(content=delta["text"]))]
        if delta["type"] == "input_json_delta" and data["index"] == self._json_block:
            return [self._chunk(Delta(content=delta["partial_json"]))] if delta["partial_json"] else []
        if (
            delta["type"] == "input_json_delta"
            and delta["partial_json"]
            and data["index"] in self._tool_index
        ):
            call = ToolCallDelta(
                index=self._tool_index[data["index"]], function={"arguments": delta["partial_json"]}
            )
            return [self._chunk(Delta(tool_calls=[call]))]
        if delta["type"] in ("thinking_delta", "signature_delta") and data["index"] in self._thinking_index:
            key = delta["type"].removesuffix("_delta")
            piece = ThinkingDelta(index=self._thinking_index[data["index"]], **{key: delta[key]})
            return [self._chunk(Delta(thinking_blocks=[piece]))]
        return []  # citation deltas

    def _on_message_delta(self, data: dict[str, Any]) -> list[Chunk]:
        self._merge_usage(data.get("usage"))
        stop_reason = (data.get("delta") or {}).get("stop_reason")
        if stop_reason == "tool_use" and self._json_block is not None and not self._tool_index:
            stop_reason = "end_turn"  # the forced JSON tool is the answer, not a call to make
        return [self._chunk(Delta(), _finish_reason(stop_reason))] if stop_reason else []

    def _on_message_stop(self, data: dict[str, Any]) -> list[Chunk]:
        self._complete = True
        # The canonical stream always ends with a usage chunk.
        return [
            Chunk(id=self._id, created=self._created, model=self.model, usage=_usage_from_wire(self._usage))
        ]

    def _on_error(self, data: dict[str, Any]) -> list[Chunk]:
        raise _error_from_wire(data)


_DECODER_HANDLERS = {
    "message_start": StreamDecoder._on_message_start,
    "content_block_start": StreamDecoder._on_block_start,
    "content_block_delta": StreamDecoder._on_block_delta,
    "message_delta": StreamDecoder._on_message_delta,
    "message_stop": StreamDecoder._on_message_stop,
    "error": StreamDecoder._on_error,
}

Event = tuple[str, dict[str, Any]]


class StreamEncoder:
    """Canonical chunks -> Anthropic SSE events ``(event_name, data_dict)`` for an Anthropic client.

    Content blocks are opened lazily and strictly one at a time (the SDK accumulates by index);
    ``message_delta`` waits for both the finish reason and the usage chunk that follows it.
    """

    def __init__(self) -> None:
        self._started = False
        self._done = False
        self._block: int | None = None  # index of the open content block
        self._block_is_text = False
        self._next_block = 0
        self._tool_blocks: dict[int, int] = {}  # canonical tool-call index -> block index
        self._thinking_blocks: dict[int, int] = {}  # canonical thinking index -> block index
        self._finish_reason: str | None = None
        self._usage: Usage | None = None

    def encode(self, chunk: Chunk) -> list[Event]:
        if self._done:
            return []
        events = [] if self._started else [self._message_start(chunk)]
        for choice in chunk.choices:
            if choice.index != 0:
                continue  # Anthropic has no n > 1
            for piece in choice.delta.thinking_blocks or ():
                events += self._thinking(piece)
            events += self._text(choice.delta)
            for call in choice.delta.tool_calls or ():
                events += self._tool_call(call)
            self._finish_reason = choice.finish_reason or self._finish_reason
        if chunk.usage is not None:
            self._usage = chunk.usage
        if self._finish_reason is not None and self._usage is not None:
            events += self._finish()
        return events

    def close(self) -> list[Event]:
        """Events still owed at the end (content_block_stop, message_delta, message_stop)."""
        if not self._started or self._done:
            return []
        return self._finish()

    def _message_start(self, chunk: Chunk) -> Event:
        self._started = True
        usage = _usage_to_wire(chunk.usage) if chunk.usage else {"input_tokens": 0, "output_tokens": 0}
        message = {
            "id": _message_id(chunk.id),
            "type": "message",
            "role": "assistant",
            "model": chunk.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        return "message_start", {"type": "message_start", "message": message}

    def _text(self, delta: Delta) -> list[Event]:
        text = (delta.content or "") + (delta.refusal or "")
        if not text:
            return []
        events = (
            []
            if self._block is not None and self._block_is_text
            else self._open({"type": "text", "text": ""})
        )
        events.append(_block_delta(self._block, {"type": "text_delta", "text": text}))
        return events

    def _tool_call(self, call: ToolCallDelta) -> list[Event]:
        function = call.function or {}
        events: list[Event] = []
        if call.index not in self._tool_blocks:
            block = {
                "type": "tool_use",
                "id": call.id or _new_id("toolu_"),
                "name": function.get("name", ""),
                "input": {},
            }
            events = self._open(block)
            self._tool_blocks[call.index] = self._next_block - 1  # the block just opened
        if function.get("arguments"):
            json_delta = {"type": "input_json_delta", "partial_json": function["arguments"]}
            events.append(_block_delta(self._tool_blocks[call.index], json_delta))
        return events

    def _thinking(self, piece: ThinkingDelta) -> list[Event]:
        events: list[Event] = []
        if piece.index not in self._thinking_blocks:
            if piece.type == "redacted_thinking":
                events = self._open({"type": "redacted_thinking", "data": piece.data or ""})
            else:
                events = self._open({"type": "thinking", "thinking": "", "signature": ""})
            self._thinking_blocks[piece.index] = self._next_block - 1
        block = self._thinking_blocks[piece.index]
        if piece.thinking:
            events.append(_block_delta(block, {"type": "thinking_delta", "thinking": piece.thinking}))
        if piece.signature:
            events.append(_block_delta(block, {"type": "signature_delta", "signature": piece.signature}))
        return events

    def _open(self, block: dict[str, Any]) -> list[Event]:
        events = self._close_block()
        self._block, self._block_is_text = self._next_block, block["type"] == "text"
        self._next_block += 1
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": self._block, "content_block": block},
            )
        )
        return events

    def _close_block(self) -> list[Event]:
        if self._block is None:
            return []
        index, self._block = self._block, None
        return [("content_block_stop", {"type": "content_block_stop", "index": index})]

    def _finish(self) -> list[Event]:
        self._done = True
        stop_reason = _stop_reason(self._finish_reason, has_tool_calls=bool(self._tool_blocks))
        message_delta = {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": _usage_to_wire(self._usage or Usage()),
        }
        return [
            *self._close_block(),
            ("message_delta", message_delta),
            ("message_stop", {"type": "message_stop"}),
        ]


def _block_delta(index: int | None, delta: dict[str, Any]) -> Event:
    return "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
