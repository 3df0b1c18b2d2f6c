"""The wire format at the client edge of a chat route: how to read a request and write a response,
a stream and an error. One object per API.

The gateway's chat handler is shared by both; the simulator (which answers in these formats too)
keeps one of these in each of its ``Wire``s, so parsing, rendering and error bodies are named once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from .asgi import sse_data, sse_event
from .errors import GatewayError
from .pipeline import ApiFormat, Stream
from .providers import anthropic_format, openai_format
from .types import ChatRequest, ChatResponse

_DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True, slots=True)
class Dialect:
    name: ApiFormat
    parse: Callable[[Any], ChatRequest]
    render: Callable[[ChatResponse], dict[str, Any]]
    error: Callable[[GatewayError], dict[str, Any]]
    stream: Callable[[ChatRequest, Stream], AsyncIterator[bytes]]
    stream_error: Callable[[GatewayError], bytes]


async def _openai_stream(request: ChatRequest, chunks: Stream) -> AsyncIterator[bytes]:
    include_usage = bool(request.stream_options and request.stream_options.include_usage)
    async for chunk in chunks:
        if chunk.usage is not None and not include_usage:
            if not chunk.choices:
                continue  # the usage-only chunk the client did not ask for
            chunk = chunk.model_copy(update={"usage": None})
        yield sse_data(openai_format.chunk_to_wire(chunk))
    yield _DONE


async def _anthropic_stream(request: ChatRequest, chunks: Stream) -> AsyncIterator[bytes]:
    encoder = anthropic_format.StreamEncoder()
    async for chunk in chunks:
        for event, data in encoder.encode(chunk):
            yield sse_event(event, data)
    for event, data in encoder.close():
        yield sse_event(event, data)


OPENAI = Dialect(
    name="openai",
    parse=openai_format.parse_request,
    render=openai_format.response_to_wire,
    error=openai_format.error_to_wire,
    stream=_openai_stream,
    stream_error=lambda e: sse_data(openai_format.error_to_wire(e)),
)

ANTHROPIC = Dialect(
    name="anthropic",
    parse=anthropic_format.parse_request,
    render=anthropic_format.response_to_wire,
    error=anthropic_format.error_to_wire,
    stream=_anthropic_stream,
    stream_error=lambda e: sse_event("error", anthropic_format.error_to_wire(e)),
)
