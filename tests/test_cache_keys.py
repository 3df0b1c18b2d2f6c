"""Cache keys: what changes the answer is in the key, what does not is left out, and one meaning
has one spelling; plus the entry format and the stream <-> response round trip a cache hit relies on.
(No I/O: the gateway tests in test_cache.py show the same through the SDKs.)"""

from __future__ import annotations

from decimal import Decimal

import pytest

from llmrelay.cache import Keys, deterministic, namespace
from llmrelay.cache.entries import Assembler, Entry, chunks_of
from llmrelay.providers import anthropic_format, openai_format
from llmrelay.types import ChatResponse

BASE = {
    "model": "m",
    "temperature": 0,
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
}
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def key(body: dict, principal: str | None = "k", shared: bool = False) -> str:
    return Keys.of(openai_format.parse_request(body), namespace(principal, shared)).exact


def test_field_order_does_not_matter():
    reordered = {"messages": list(BASE["messages"]), "temperature": 0, "model": "m"}
    assert key(BASE) == key(reordered) == key(dict(reversed(list(BASE.items()))))


@pytest.mark.parametrize(
    "extra",
    [
        {"user": "alice"},
        {"metadata": {"trace": "1"}},
        {"stream": True},
        {"stream": True, "stream_options": {"include_usage": True}},
        {"store": True},
        {"service_tier": "flex"},
        {"prompt_cache_key": "abc"},
        {"safety_identifier": "u1"},
    ],
)
def test_fields_that_cannot_change_the_answer_are_not_in_the_key(extra):
    assert key({**BASE, **extra}) == key(BASE)


@pytest.mark.parametrize(
    "change",
    [
        {"model": "other"},
        {"messages": [{"role": "user", "content": "hi"}]},  # no system prompt
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi!"}]},
        {"messages": [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "hi"}]},
        {"messages": [BASE["messages"][0], {"role": "user", "content": "hi", "name": "bob"}]},
        {"tools": [TOOL]},
        {"tools": [TOOL], "tool_choice": "required"},
        {"tools": [TOOL], "parallel_tool_calls": False},
        {"response_format": {"type": "json_object"}},
        {"temperature": 0.5},
        {"top_p": 0.5},
        {"seed": 7},
        {"max_tokens": 10},
        {"stop": ["\n"]},
        {"n": 2},
        {"frequency_penalty": 0.5},
        {"presence_penalty": 0.5},
        {"logprobs": True, "top_logprobs": 2},
        {"logit_bias": {"50256": -100}},
        {"reasoning_effort": "high"},
        {"some_future_field": 1},  # unknown to us: it may change the answer, so it counts
    ],
)
def test_fields_that_change_the_answer_are_in_the_key(change):
    assert key({**BASE, **change}) != key(BASE)


def test_images_and_their_detail_are_in_the_key():
    def with_image(url: str, detail: str = "auto") -> dict:
        part = {"type": "image_url", "image_url": {"url": url, "detail": detail}}
        return {**BASE, "messages": [{"role": "user", "content": [{"type": "text", "text": "what?"}, part]}]}

    a, b = "data:image/png;base64,AAAA", "data:image/png;base64,AAAB"
    assert key(with_image(a)) == key(with_image(a))
    assert key(with_image(a)) != key(with_image(b)) != key(with_image(b, "high"))


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ({"max_tokens": 10}, {"max_completion_tokens": 10}),
        ({"stop": "END"}, {"stop": ["END"]}),
        ({"stop": ["a", "b"]}, {"stop": ["b", "a"]}),
        ({"n": 1}, {}),
        (  # a list of text parts is the joined text; Anthropic cache_control breakpoints are dropped
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "text", "text": "h"}, {"type": "text", "text": "i"}],
                    }
                ]
            },
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}],
                    }
                ]
            },
        ),
        ({"tools": [TOOL]}, {"tools": [{**TOOL, "cache_control": {"type": "ephemeral"}}]}),
    ],
)
def test_one_meaning_one_key(one, other):
    assert key({**BASE, **one}) == key({**BASE, **other})


def conversation(call_id: str, content: str | None = None) -> dict:
    call = {"id": call_id, "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
    return {
        **BASE,
        "tools": [TOOL],
        "messages": [
            {"role": "user", "content": "use f"},
            {"role": "assistant", "content": content, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call_id, "content": "42"},
        ],
    }


def test_tool_call_ids_are_renumbered_but_results_and_arguments_count():
    assert key(conversation("call_abc")) == key(conversation("toolu_xyz")) == key(conversation("c", ""))
    changed = conversation("call_abc")
    changed["messages"][2]["content"] = "43"
    assert key(changed) != key(conversation("call_abc"))
    changed = conversation("call_abc")
    changed["messages"][1]["tool_calls"][0]["function"]["arguments"] = '{"x": 2}'
    assert key(changed) != key(conversation("call_abc"))


def test_namespaces():
    assert key(BASE, "key-a") != key(BASE, "key-b") != key(BASE, None)
    assert key(BASE, "key-a", shared=True) == key(BASE, "key-b", shared=True) == key(BASE, None, shared=True)
    assert key(BASE, "key-a", shared=True) != key(BASE, "key-a")


def test_the_same_request_in_either_wire_format_has_one_key():
    openai_body = {**BASE, "max_tokens": 100, "stop": ["END"], "user": "alice"}
    anthropic_body = {
        "model": "m",
        "max_tokens": 100,
        "temperature": 0,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "stop_sequences": ["END"],
        "metadata": {"user_id": "bob"},
    }
    space = namespace("k", False)
    assert (
        Keys.of(openai_format.parse_request(openai_body), space).exact
        == Keys.of(anthropic_format.parse_request(anthropic_body), space).exact
    )


def test_temperature_rule():
    assert deterministic(openai_format.parse_request(BASE))
    assert not deterministic(openai_format.parse_request({**BASE, "temperature": 0.2}))
    absent = {k: v for k, v in BASE.items() if k != "temperature"}
    assert not deterministic(openai_format.parse_request(absent))  # the provider's default: 1


def scope(body: dict, semantic: bool = True) -> Keys:
    return Keys.of(openai_format.parse_request(body), namespace("k", False), semantic=semantic)


def test_semantic_scope_is_everything_but_the_last_user_message():
    a = scope(BASE)
    b = scope({**BASE, "messages": [BASE["messages"][0], {"role": "user", "content": "hello"}]})
    assert a.query == "hi" and b.query == "hello"
    assert a.scope == b.scope and a.exact != b.exact
    # An earlier turn, the system prompt, the parameters and the namespace are all in the scope.
    follow_up = {
        **BASE,
        "messages": [
            {"role": "user", "content": "tell me about Paris"},
            {"role": "assistant", "content": "Paris is..."},
            {"role": "user", "content": "hi"},
        ],
    }
    assert scope(follow_up).scope != a.scope
    assert (
        scope({**BASE, "messages": [{"role": "system", "content": "x"}, BASE["messages"][1]]}).scope
        != a.scope
    )
    assert scope({**BASE, "max_tokens": 5}).scope != a.scope
    assert (
        Keys.of(openai_format.parse_request(BASE), namespace("other", False), semantic=True).scope != a.scope
    )
    assert scope(BASE, semantic=False).scope is None


@pytest.mark.parametrize(
    "last",
    [
        {"role": "tool", "tool_call_id": "c", "content": "42"},
        {"role": "assistant", "content": "prefill"},
        {"role": "user", "content": "   "},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        },
    ],
)
def test_only_a_last_user_message_of_text_is_a_semantic_candidate(last):
    assert scope({**BASE, "messages": [BASE["messages"][1], last]}).scope is None


RESPONSE = ChatResponse.model_validate(
    {
        "id": "chatcmpl-1",
        "created": 1700000000,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"},
            {
                "index": 1,
                "message": {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "call_1", "function": {"name": "f", "arguments": '{"x": 1}'}},
                        {"id": "call_2", "function": {"name": "g", "arguments": "{}"}},
                    ],
                },
                "finish_reason": "tool_calls",
            },
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "cached_tokens": 2},
    }
)


def test_a_response_replayed_as_a_stream_assembles_back_into_itself():
    chunks = chunks_of(RESPONSE)
    assert chunks[-1].usage == RESPONSE.usage and not chunks[-1].choices
    assembler = Assembler()
    for chunk in chunks:
        assembler.add(chunk)
    assert assembler.response() == RESPONSE


def test_an_incomplete_stream_assembles_into_nothing():
    chunks = chunks_of(RESPONSE)
    for cut in (chunks[:-1], [c for c in chunks if not any(ch.finish_reason for ch in c.choices)], []):
        assembler = Assembler()
        for chunk in cut:
            assembler.add(chunk)
        assert assembler.response() is None


def test_entry_round_trip_and_foreign_bytes():
    entry = Entry(RESPONSE, 1700000000.5, Decimal("0.00012345"), "oa/gpt-4o-mini")
    assert Entry.decode(entry.encode()) == entry
    assert entry.age_s(now=1700000003.4) == 2
    for junk in (b"", b"not json", b'{"format": 999}', b'{"format": 1, "response": {}}'):
        assert Entry.decode(junk) is None
