"""Input limits: how long a request's messages are, in characters and in tokens, against a route's caps.

    await check_limits(request, max_chars=20_000, max_tokens=8_000)
    # None, or "Input is 9,412 tokens; this route allows at most 8,000 (max_input_tokens)."

Tokens are counted by ``llmrelay.tokens`` (tiktoken with the encodings bundled offline; the
model's own encoding for OpenAI models, ``o200k_base`` as an approximation for the others),
with OpenAI's per-message overhead, so the figure is the prompt-token count the upstream will
bill, give or take the tool definitions (not counted, as in the executor's context-window check).

Characters are those of the message texts and tool-call arguments (what a user or a tool put
in), not of roles or JSON punctuation. The caller (the guard stage) turns a message into a 400
in the route's wire format.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..tokens import count_messages, count_messages_off_loop, count_text, token_upper_bound
from ..types import ChatRequest, Message


def count_tokens(content: str | Sequence[Message], model: str) -> int:
    """Tokens of a text, or the prompt tokens of a list of messages, as ``model`` counts them."""
    if isinstance(content, str):
        return count_text(content, model)
    return count_messages(list(content), model)


def count_chars(messages: Sequence[Message]) -> int:
    """Characters of the message texts and tool-call arguments (roles and names not counted)."""
    total = 0
    for message in messages:
        total += len(message.text())
        for call in message.tool_calls or ():
            total += len(call.function.arguments)
    return total


async def check_limits(request: ChatRequest, max_chars: int | None, max_tokens: int | None) -> str | None:
    """None when the request is within both limits; otherwise a message naming the limit and the size."""
    if max_chars is not None:
        chars = count_chars(request.messages)
        if chars > max_chars:
            return (
                f"Input is {chars:,} characters; this route allows at most {max_chars:,} (max_input_chars)."
            )
    if max_tokens is not None and token_upper_bound(request.messages) > max_tokens:
        tokens = await count_messages_off_loop(request.messages, request.model)
        if tokens > max_tokens:
            return f"Input is {tokens:,} tokens; this route allows at most {max_tokens:,} (max_input_tokens)."
    return None
