"""Input limits: characters and tokens of a request's messages against a route's caps."""

from __future__ import annotations

import asyncio
import random

import pytest

from llmrelay.guardrails.limits import check_limits, count_chars, count_tokens
from llmrelay.tokens import count_messages, count_text
from llmrelay.types import ChatRequest


def limited(*args: object, **kwargs: object) -> str | None:
    return asyncio.run(check_limits(*args, **kwargs))  # type: ignore[arg-type]


def request(*texts: str, model: str = "gpt-4o-mini", **extra) -> ChatRequest:
    roles = ["system", "user", "assistant", "user"]
    messages = [{"role": roles[i % len(roles)], "content": t} for i, t in enumerate(texts)]
    return ChatRequest.model_validate({"model": model, "messages": messages, **extra})


def test_within_both_limits_is_none() -> None:
    assert limited(request("Be brief.", "What is the capital of France?"), 1000, 1000) is None


def test_no_limits_configured_is_none() -> None:
    assert limited(request("x" * 100_000), None, None) is None


def test_over_the_character_limit_names_the_limit_and_the_size() -> None:
    message = limited(request("a" * 40, "b" * 70), max_chars=100, max_tokens=None)
    assert message == "Input is 110 characters; this route allows at most 100 (max_input_chars)."


def test_over_the_token_limit_counts_with_the_real_tokenizer() -> None:
    req = request("You are a poet.", "Write a sonnet about the sea. " * 20)
    tokens = count_messages(req.messages, "gpt-4o-mini")
    assert limited(req, None, tokens) is None  # exactly at the limit passes
    message = limited(req, None, tokens - 1)
    assert (
        message == f"Input is {tokens:,} tokens; this route allows at most {tokens - 1:,} (max_input_tokens)."
    )


def test_characters_are_checked_before_tokens() -> None:
    message = limited(request("word " * 500), max_chars=100, max_tokens=10)
    assert message is not None and "characters" in message


def test_token_count_follows_the_model_encoding() -> None:
    text = "naïve café — 東京タワー 🚀🚀 " * 30
    assert count_tokens(text, "gpt-4") == count_text(text, "gpt-4")  # cl100k_base
    assert count_tokens(text, "gpt-4o") == count_text(text, "gpt-4o")  # o200k_base
    assert count_tokens(text, "gpt-4") != count_tokens(text, "gpt-4o")


def test_count_tokens_of_messages_is_the_prompt_token_count() -> None:
    req = request("system prompt", "hello there")
    assert count_tokens(req.messages, req.model) == count_messages(req.messages, req.model)
    assert count_tokens("", req.model) == 0


def test_tool_call_arguments_count_as_characters_and_tokens() -> None:
    args = '{"query": "' + "weather in Paris " * 10 + '"}'
    req = ChatRequest.model_validate(
        {
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "search", "arguments": args}}
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            ],
        }
    )
    assert count_chars(req.messages) == len("hi") + len(args) + len("sunny")
    assert limited(req, count_chars(req.messages) - 1, None) is not None
    tokens = count_tokens(req.messages, req.model)
    assert limited(req, None, tokens) is None
    assert limited(req, None, tokens - 1) is not None


def test_content_parts_count_their_text_only() -> None:
    req = ChatRequest.model_validate(
        {
            "model": "gpt-4o-mini",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "describe "},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 5000}},
                        {"type": "text", "text": "this"},
                    ],
                }
            ],
        }
    )
    assert count_chars(req.messages) == len("describe this")
    assert limited(req, 20, 50) is None


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-4", "sim/claude-haiku"])
def test_the_shortcut_never_changes_the_answer(model: str) -> None:
    """Below a byte bound the tokenizer is skipped: the answer must be what counting would give."""
    rng = random.Random(7)
    alphabet = ["a", "b", " ", "é", "東", "🚀", "\n", "ing", "tion", "<|endoftext|>"]
    for _ in range(200):
        texts = [
            "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(rng.randint(1, 3))
        ]
        req = request(*texts, model=model)
        tokens = count_messages(req.messages, model)
        for limit in (tokens - 1, tokens, tokens + 1):
            expected = None if tokens <= limit else "over"
            got = limited(req, None, limit)
            assert (got is None) == (expected is None), (texts, limit, tokens, got)


def test_a_lone_surrogate_is_counted_not_an_error() -> None:
    req = request("x\ud800y" * 50)
    assert limited(req, 1000, 1000) is None
    assert limited(req, 10, None) is not None
    assert limited(req, None, 5) is not None
