"""Canonical answers -> wire bytes: full bodies and pre-rendered SSE streams, per wire format.

Streams are rendered up front into frames (one per canonical chunk) so the app only paces and
writes them, and so a fault can cut a stream at a frame boundary (``truncate``) or replace a frame
(``malformed``). Parsing, full bodies and error bodies come from the gateway's dialects
(``llmrelay.dialects``), so both edges speak each format through the same functions.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import dialects
from ..asgi import sse_data, sse_event
from ..providers import anthropic_format, openai_format
from ..tokens import encoding_for
from ..types import (
    ChatRequest,
    ChatResponse,
    Choice,
    Chunk,
    ChunkChoice,
    Delta,
    FunctionCall,
    Message,
    ThinkingBlock,
    ThinkingDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from .answer import Answer

TOKENS_PER_CHUNK = 3


def build_response(
    request: ChatRequest,
    answer: Answer,
    usage: Usage,
    *,
    response_id: str,
    tool_id: str,
    created: int,
    thinking: ThinkingBlock | None = None,
) -> ChatResponse:
    calls = None
    if answer.tool_name is not None:
        function = FunctionCall(name=answer.tool_name, arguments=answer.tool_arguments or "{}")
        calls = [ToolCall(id=tool_id, function=function)]
    blocks = [thinking] if thinking is not None else None
    message = Message(role="assistant", content=answer.text, tool_calls=calls, thinking_blocks=blocks)
    return ChatResponse(
        id=response_id,
        created=created,
        model=request.model,
        choices=[Choice(message=message, finish_reason=answer.finish_reason)],
        usage=usage,
    )


def split_tokens(text: str, model: str, per_chunk: int = TOKENS_PER_CHUNK) -> list[tuple[str, int]]:
    """``text`` in pieces of ``per_chunk`` tokens: (piece, token count). Never splits a character:
    bytes of a character spanning two tokens are held back until it is complete."""
    enc = encoding_for(model)
    ids = enc.encode_ordinary(text)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pieces: list[tuple[str, int]] = []
    pending = 0  # tokens whose bytes were all held back: counted with the next piece
    for start in range(0, len(ids), per_chunk):
        group = ids[start : start + per_chunk]
        piece = decoder.decode(b"".join(enc.decode_single_token_bytes(t) for t in group))
        pending += len(group)
        if piece:
            pieces.append((piece, pending))
            pending = 0
    rest = decoder.decode(b"", final=True)
    if rest or pending:
        pieces.append((rest, pending))
    return pieces


def plan_chunks(response: ChatResponse) -> list[tuple[Chunk, int]]:
    """The canonical stream for a response: role, content pieces, finish, usage; with the token
    count of each chunk (for pacing)."""
    choice = response.choices[0]
    message = choice.message

    def chunk(delta: Delta, finish: Any = None, usage: Usage | None = None) -> Chunk:
        choices = [] if usage is not None else [ChunkChoice(delta=delta, finish_reason=finish)]
        return Chunk(
            id=response.id, created=response.created, model=response.model, choices=choices, usage=usage
        )

    out = [(chunk(Delta(role="assistant", content="" if message.tool_calls is None else None)), 0)]
    for index, block in enumerate(message.thinking_blocks or ()):
        opening = ThinkingDelta(index=index, type=block.type, data=block.data)
        out.append((chunk(Delta(thinking_blocks=[opening])), 0))
        for piece, n in split_tokens(block.thinking or "", response.model):
            out.append((chunk(Delta(thinking_blocks=[ThinkingDelta(index=index, thinking=piece)])), n))
        if block.signature:
            closing = ThinkingDelta(index=index, signature=block.signature)
            out.append((chunk(Delta(thinking_blocks=[closing])), 0))
    out += [(chunk(Delta(content=piece)), n) for piece, n in split_tokens(message.text(), response.model)]
    for index, call in enumerate(message.tool_calls or ()):
        head = {"name": call.function.name, "arguments": ""}
        out.append(
            (
                chunk(
                    Delta(tool_calls=[ToolCallDelta(index=index, id=call.id, type="function", function=head)])
                ),
                0,
            )
        )
        for piece, n in split_tokens(call.function.arguments, response.model):
            delta = Delta(tool_calls=[ToolCallDelta(index=index, function={"arguments": piece})])
            out.append((chunk(delta), n))
    out.append((chunk(Delta(), choice.finish_reason), 0))
    out.append((chunk(Delta(), usage=response.usage), 0))
    return out


@dataclass(frozen=True, slots=True)
class RenderedStream:
    """``frames`` (the opening and content events, with token counts) then ``tail`` (the finish,
    usage and terminator events). A truncated stream is a prefix of ``frames``, without ``tail``."""

    frames: list[tuple[bytes, int]]
    tail: bytes


def _openai_stream(request: ChatRequest, response: ChatResponse) -> RenderedStream:
    planned = plan_chunks(response)
    frames = [(sse_data(openai_format.chunk_to_wire(c)), n) for c, n in planned[:-2]]
    finish, usage = planned[-2][0], planned[-1][0]
    tail = sse_data(openai_format.chunk_to_wire(finish))
    if request.stream_options is not None and request.stream_options.include_usage:
        tail += sse_data(openai_format.chunk_to_wire(usage))
    return RenderedStream(frames, tail + b"data: [DONE]\n\n")


def _anthropic_stream(request: ChatRequest, response: ChatResponse) -> RenderedStream:
    planned = plan_chunks(response)
    usage = response.usage
    # Like the real API: input tokens already in message_start, everything in message_delta.
    # Putting the usage on the finish chunk makes the encoder close the message right there.
    opening = planned[0][0].model_copy(update={"usage": usage.model_copy(update={"completion_tokens": 0})})
    finish = planned[-2][0].model_copy(update={"usage": usage})
    encoder = anthropic_format.StreamEncoder()
    frames = [
        (b"".join(sse_event(*e) for e in encoder.encode(c)), n) for c, n in [(opening, 0), *planned[1:-2]]
    ]
    tail = b"".join(sse_event(*e) for e in [*encoder.encode(finish), *encoder.close()])
    return RenderedStream(frames, tail)


@dataclass(frozen=True, slots=True)
class Wire:
    """One wire format as the simulator needs it: the gateway's ``Dialect`` (parse a request,
    render a response or an error) and what only a fake upstream needs on top."""

    dialect: dialects.Dialect
    render_stream: Callable[[ChatRequest, ChatResponse], RenderedStream]
    id_prefix: str
    tool_id_prefix: str
    malformed_frame: bytes  # an SSE event whose data is not JSON


OPENAI = Wire(
    dialect=dialects.OPENAI,
    render_stream=_openai_stream,
    id_prefix="chatcmpl-sim",
    tool_id_prefix="call_sim",
    malformed_frame=b'data: {"id": "chatcmpl-sim", "choices": [{"delta": {"content": "oops\n\n',
)

ANTHROPIC = Wire(
    dialect=dialects.ANTHROPIC,
    render_stream=_anthropic_stream,
    id_prefix="msg_sim",
    tool_id_prefix="toolu_sim",
    malformed_frame=b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, "delta": {\n\n',
)
