"""Extended thinking as Anthropic does it, so the gateway's handling of it can be tested for real.

With ``thinking: {"type": "enabled", "budget_tokens": N}`` (or ``"adaptive"``) an Anthropic-wire
answer opens with a thinking block whose signature is an HMAC of its text. Like Anthropic, the
simulator refuses a budget under 1,024 tokens or not under ``max_tokens``, a forced tool while
thinking, and a thinking block sent back in history whose signature does not match its text (one
altered or made up on the way); an OpenAI-wire request carrying ``thinking`` is refused as an
unknown argument, as OpenAI does. A model whose profile says ``reasoning`` answers on the OpenAI
wire with ``reasoning_content``, as reasoning servers (DeepSeek, vLLM) do.
"""

from __future__ import annotations

import hashlib
import hmac

from ..errors import InvalidRequestError
from ..types import ChatRequest, NamedToolChoice, ThinkingBlock
from .answer import last_user_text
from .settings import ModelProfile

MIN_BUDGET = 1024
_KEY = b"llmrelay-simulator-thinking"


def sign(text: str) -> str:
    return hmac.new(_KEY, text.encode(), hashlib.sha256).hexdigest()


def check(request: ChatRequest, *, anthropic: bool) -> None:
    """A 400 for what the provider would refuse."""
    if not anthropic:
        if request.thinking is not None:
            raise InvalidRequestError("Unrecognized request argument supplied: thinking", param="thinking")
        return
    config = request.thinking
    if request.thinks and (
        request.tool_choice == "required" or isinstance(request.tool_choice, NamedToolChoice)
    ):
        raise InvalidRequestError(
            "Thinking may not be enabled when tool_choice forces tool use.", param="tool_choice"
        )
    if config is not None and config.type == "enabled":
        budget = config.budget_tokens
        if budget is None or budget < MIN_BUDGET:
            raise InvalidRequestError(
                f"thinking.enabled.budget_tokens: Input should be greater than or equal to {MIN_BUDGET}",
                param="thinking.budget_tokens",
            )
        if request.output_limit is not None and request.output_limit <= budget:
            raise InvalidRequestError(
                "`max_tokens` must be greater than `thinking.budget_tokens`", param="max_tokens"
            )
    for i, message in enumerate(request.messages):
        for j, block in enumerate(message.thinking_blocks or ()):
            if block.type == "thinking" and not hmac.compare_digest(
                block.signature or "", sign(block.thinking or "")
            ):
                raise InvalidRequestError(
                    f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block",
                    param=f"messages.{i}.content.{j}.signature",
                )


def thinking_for(request: ChatRequest, answer_text: str) -> ThinkingBlock | None:
    """The answer's thinking block, when the request turned thinking on."""
    if not request.thinks:
        return None
    text = _planning(request, answer_text)
    return ThinkingBlock(thinking=text, signature=sign(text))


def reasoning_for(request: ChatRequest, answer_text: str, profile: ModelProfile) -> ThinkingBlock | None:
    """An OpenAI-wire answer's reasoning (``reasoning_content``, unsigned), for a model whose
    profile says it reasons (``per_model: {"deepseek-r*": {"reasoning": true}}``)."""
    return ThinkingBlock(thinking=_planning(request, answer_text)) if profile.reasoning else None


def _planning(request: ChatRequest, answer_text: str) -> str:
    """The question restated, then the answer planned (so thinking can hold what the answer does not)."""
    return f"The user wrote: {_short(last_user_text(request))} I will answer with: {_short(answer_text)}"


def _short(text: str) -> str:
    return text[:80] + ("..." if len(text) > 80 else "")
