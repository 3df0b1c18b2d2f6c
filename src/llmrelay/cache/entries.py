"""A cache entry: the answer, when it was stored, what it cost and where it came from; its bytes;
and the two shapes of an answer (a stream assembled into a response, a response replayed as a
stream), so either kind of request is served from either kind of entry."""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
from pydantic import ValidationError

from ..types import (
    ChatResponse,
    Choice,
    Chunk,
    ChunkChoice,
    Delta,
    Message,
    ThinkingBlock,
    ThinkingDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)

FORMAT = 1  # the layout of the bytes below; an entry of another layout reads as a miss


@dataclass(frozen=True, slots=True)
class Entry:
    response: ChatResponse
    stored_at: float  # unix seconds
    cost_usd: Decimal | None  # what the call that produced it cost (None: price unknown)
    deployment: str | None  # "<provider>/<upstream>" that answered it

    def age_s(self, now: float | None = None) -> int:
        """Whole seconds since it was stored, as an HTTP ``Age`` header counts them."""
        return max(0, int((time.time() if now is None else now) - self.stored_at))

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "format": FORMAT,
                "stored_at": self.stored_at,
                "cost_usd": None if self.cost_usd is None else format(self.cost_usd, "f"),
                "deployment": self.deployment,
                "response": self.response.model_dump(mode="json", exclude_none=True),
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> Entry | None:
        """The entry, or None for bytes that are not one of ours (another format, corrupted)."""
        try:
            raw: dict[str, Any] = orjson.loads(data)
            if raw.get("format") != FORMAT:
                return None
            cost = raw["cost_usd"]
            return cls(
                response=ChatResponse.model_validate(raw["response"]),
                stored_at=float(raw["stored_at"]),
                cost_usd=None if cost is None else Decimal(cost),
                deployment=raw["deployment"],
            )
        except (ValueError, KeyError, TypeError, ArithmeticError):  # JSON and pydantic errors are ValueErrors
            return None


def chunks_of(response: ChatResponse) -> list[Chunk]:
    """``response`` as a canonical stream: per choice its role, each thinking block whole, its text,
    each tool call whole (id, name, arguments), its finish reason; then one usage chunk."""

    def chunk(index: int, delta: Delta, finish: Any = None) -> Chunk:
        choice = ChunkChoice(index=index, delta=delta, finish_reason=finish)
        return Chunk(id=response.id, created=response.created, model=response.model, choices=[choice])

    out: list[Chunk] = []
    for choice in response.choices:
        message, i = choice.message, choice.index
        out.append(chunk(i, Delta(role="assistant")))
        for n, block in enumerate(message.thinking_blocks or ()):
            whole = ThinkingDelta(index=n, **block.model_dump())
            out.append(chunk(i, Delta(thinking_blocks=[whole])))
        if text := message.text():
            out.append(chunk(i, Delta(content=text)))
        if message.refusal:
            out.append(chunk(i, Delta(refusal=message.refusal)))
        for n, call in enumerate(message.tool_calls or ()):
            function = {"name": call.function.name, "arguments": call.function.arguments}
            delta = ToolCallDelta(index=n, id=call.id, type="function", function=function)
            out.append(chunk(i, Delta(tool_calls=[delta])))
        out.append(chunk(i, Delta(), choice.finish_reason))
    out.append(Chunk(id=response.id, created=response.created, model=response.model, usage=response.usage))
    return out


@dataclass(slots=True)
class _Choice:
    text: list[str]
    refusal: list[str]
    calls: dict[int, dict[str, Any]]  # tool-call index -> id, name, argument pieces
    thinking: dict[int, dict[str, Any]]  # thinking index -> type, text pieces, signature, data
    finish: Any = None


class Assembler:
    """Collects a stream's chunks; ``response()`` is the whole answer once the stream is complete
    (every choice finished, usage seen), else None: a cut stream is never an answer to keep."""

    def __init__(self) -> None:
        self._choices: dict[int, _Choice] = {}
        self._usage: Usage | None = None
        self._head: Chunk | None = None

    def add(self, chunk: Chunk) -> None:
        if self._head is None:
            self._head = chunk
        if chunk.usage is not None:
            self._usage = chunk.usage
        for c in chunk.choices:
            choice = self._choices.get(c.index)
            if choice is None:
                choice = self._choices[c.index] = _Choice([], [], {}, {})
            delta = c.delta
            if delta.content:
                choice.text.append(delta.content)
            if delta.refusal:
                choice.refusal.append(delta.refusal)
            for piece in delta.thinking_blocks or ():
                block = choice.thinking.setdefault(piece.index, {"type": "thinking", "thinking": []})
                block["type"] = piece.type or block["type"]
                block["thinking"].append(piece.thinking or "")
                for key in ("signature", "data"):  # whole values, not pieces (Anthropic sends one)
                    if getattr(piece, key) is not None:
                        block[key] = getattr(piece, key)
            for call in delta.tool_calls or ():
                slot = choice.calls.setdefault(call.index, {"id": None, "name": "", "arguments": []})
                function = call.function or {}
                slot["id"] = call.id or slot["id"]
                slot["name"] += function.get("name", "")
                slot["arguments"].append(function.get("arguments", ""))
            if c.finish_reason is not None:
                choice.finish = c.finish_reason

    def response(self) -> ChatResponse | None:
        head = self._head
        if head is None or self._usage is None or not self._choices:
            return None
        if any(c.finish is None for c in self._choices.values()):
            return None
        try:
            choices = [
                Choice(index=i, message=_message(c), finish_reason=c.finish)
                for i, c in sorted(self._choices.items())
            ]
        except ValidationError:
            return None  # a tool call without its id or name: not something to replay
        return ChatResponse(
            id=head.id, created=head.created, model=head.model, choices=choices, usage=self._usage
        )


def _message(choice: _Choice) -> Message:
    calls = [
        ToolCall(id=slot["id"], function={"name": slot["name"], "arguments": "".join(slot["arguments"])})
        for _, slot in sorted(choice.calls.items())
    ]
    thinking = [
        ThinkingBlock(
            **{**block, "thinking": "".join(block["thinking"]) if block["type"] == "thinking" else None}
        )
        for _, block in sorted(choice.thinking.items())
    ]
    text = "".join(choice.text)
    return Message(
        role="assistant",
        content=None if calls and not text else text,
        tool_calls=calls or None,
        refusal="".join(choice.refusal) or None,
        thinking_blocks=thinking or None,
    )
