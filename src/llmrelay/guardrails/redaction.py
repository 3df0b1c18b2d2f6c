"""PII redaction applied to canonical requests, responses and streams (the engine is pii.py).

What is redacted: message text (string content and text parts) and refusals. Tool-call arguments
and images are left alone: arguments are JSON a program reads, where a replacement token could
break what the program expects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..pipeline import Stream
from ..types import ChatRequest, ChatResponse, ChunkChoice, Delta, Message, TextPart

if TYPE_CHECKING:
    from .pii import PiiRedactor, Span, StreamRedactor


def redact_request(request: ChatRequest, redactor: PiiRedactor) -> tuple[ChatRequest, list[Span]]:
    """Every message's text redacted (the system prompt and earlier turns too: all of it goes
    upstream), or the request itself when there was nothing to redact."""
    found: list[Span] = []
    messages = [_message(m, redactor, found) for m in request.messages]
    if not found:
        return request, found
    return request.model_copy(update={"messages": messages}), found


def redact_response(response: ChatResponse, redactor: PiiRedactor) -> tuple[ChatResponse, list[Span]]:
    found: list[Span] = []
    choices = [
        c.model_copy(update={"message": _message(c.message, redactor, found)}) for c in response.choices
    ]
    if not found:
        return response, found
    return response.model_copy(update={"choices": choices}), found


def _message(message: Message, redactor: PiiRedactor, found: list[Span]) -> Message:
    update: dict[str, Any] = {}
    content = message.content
    if isinstance(content, str) and content:
        text, spans = redactor.redact(content)
        if spans:
            update["content"] = text
            found.extend(spans)
    elif isinstance(content, list):
        parts, changed = [], False
        for part in content:
            if isinstance(part, TextPart) and part.text:
                text, spans = redactor.redact(part.text)
                if spans:
                    part, changed = part.model_copy(update={"text": text}), True
                    found.extend(spans)
            parts.append(part)
        if changed:
            update["content"] = parts
    if message.refusal:
        text, spans = redactor.redact(message.refusal)
        if spans:
            update["refusal"] = text
            found.extend(spans)
    return message.model_copy(update=update) if update else message


async def redacted_stream(
    chunks: Stream,
    redactor: PiiRedactor,
    on_end: Callable[[list[Span]], None],
    on_found: Callable[[list[Span]], None] | None = None,
) -> Stream:
    """``chunks`` with each choice's text passed through a ``StreamRedactor``: a piece of text
    leaves only once no PII can still cover it, so no chunk ever carries part of one, even one
    split across chunks. What a choice still holds when it finishes rides on its finish chunk.
    ``on_found(spans)`` before a chunk that redacts something is sent (it may raise to end the
    stream there instead); ``on_end(spans)`` once the stream has ended complete."""
    streams: dict[int, StreamRedactor] = {}
    seen = 0
    try:
        async for chunk in chunks:
            choices: list[ChunkChoice] = []
            changed = False
            for c in chunk.choices:
                if not c.delta.content and c.finish_reason is None:
                    choices.append(c)
                    continue
                stream = streams.get(c.index)
                if stream is None:
                    stream = streams[c.index] = redactor.stream()
                text = stream.feed(c.delta.content) if c.delta.content else ""
                if c.finish_reason is not None:
                    text += stream.flush()
                if text == (c.delta.content or ""):
                    choices.append(c)
                    continue
                changed = True
                delta = c.delta.model_copy(update={"content": text or None})
                if _empty(delta) and c.finish_reason is None:
                    continue  # all of its text is held back for now
                choices.append(c.model_copy(update={"delta": delta}))
            if on_found is not None and changed:
                spans = [span for stream in streams.values() for span in stream.spans]
                if len(spans) > seen:
                    seen = len(spans)
                    on_found(spans)
            if not changed:
                yield chunk
            elif choices or chunk.usage is not None:
                yield chunk.model_copy(update={"choices": choices})
    finally:
        await chunks.aclose()
    on_end([span for stream in streams.values() for span in stream.spans])


def _empty(delta: Delta) -> bool:
    return not (delta.role or delta.has_output)
