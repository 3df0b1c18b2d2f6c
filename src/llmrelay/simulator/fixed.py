"""Benchmark mode: one fixed reply, rendered once per (wire, model, stream, usage option) and reused.

No pydantic validation, no rules and no tokenizer per request: the request body is only looked at
for ``model``, ``stream`` and ``stream_options.include_usage``. Usage is fixed (prompt tokens
``FIXED_PROMPT_TOKENS``; completion tokens = the reply's token count) and ids are constant.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from ..errors import InvalidRequestError
from ..tokens import count_text
from ..types import ChatRequest, StreamOptions, Usage
from .answer import Answer
from .render import RenderedStream, Wire, build_response

FIXED_PROMPT_TOKENS = 10
_MAX_CACHED = 1024


def light_request(body: Any) -> ChatRequest:
    """The few fields fixed mode needs, without validating the rest of the body."""
    if not isinstance(body, dict) or not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidRequestError("The request body must be a JSON object with a 'model'.", param="model")
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    return ChatRequest.model_construct(
        model=body["model"],
        messages=[],
        stream=body.get("stream") is True,
        stream_options=StreamOptions(include_usage=True) if include_usage else None,
    )


class FixedReplies:
    def __init__(self, text: str) -> None:
        self.text = text
        self._cache: dict[tuple[str, str, bool, bool], tuple[bytes | RenderedStream, int]] = {}

    def get(self, wire: Wire, request: ChatRequest) -> tuple[bytes | RenderedStream, int]:
        """The rendered body (or stream) and its completion-token count."""
        include_usage = request.stream_options is not None
        key = (wire.dialect.name, request.model, bool(request.stream), include_usage)
        hit = self._cache.get(key)
        if hit is None:
            if len(self._cache) >= _MAX_CACHED:  # many distinct model names: start over, stay bounded
                self._cache.clear()
            hit = self._cache[key] = self._render(wire, request)
        return hit

    def _render(self, wire: Wire, request: ChatRequest) -> tuple[bytes | RenderedStream, int]:
        completion = count_text(self.text, request.model)
        usage = Usage(prompt_tokens=FIXED_PROMPT_TOKENS, completion_tokens=completion)
        response = build_response(
            request,
            Answer(text=self.text),
            usage,
            response_id=f"{wire.id_prefix}fixed",
            tool_id="",
            created=int(time.time()),
        )
        if request.stream:
            return wire.render_stream(request, response), completion
        return orjson.dumps(wire.dialect.render(response)), completion
