"""Cache keys: the request fields that change the answer, in one canonical form, hashed.

The key covers the model, the messages (tool calls and results, images and other parts included),
tools, tool_choice, parallel_tool_calls, response_format, temperature, top_p, the output-token
limit, stop, seed, n, and every field we do not model (penalties, logprobs, logit_bias,
reasoning_effort, top_k, ...: an unknown field may change the answer, so it counts). It leaves out
what cannot change the answer: ``stream`` and ``stream_options`` (a stream is served from a plain
entry and the other way round), ``user``, ``metadata``, ``store``, ``service_tier``,
``prompt_cache_key``, ``safety_identifier`` and Anthropic ``cache_control`` breakpoints. Spellings
of one meaning are made one: ``max_completion_tokens`` is ``max_tokens``, ``stop`` a sorted list,
``n: 1`` absent, a list of plain text parts the joined string (as the Anthropic edge sends it), and
tool-call ids (random per conversation) are renumbered by first appearance, so the same exchange of
tool calls keys the same whichever ids the model chose. docs/caching.md has the reasoning.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from ..types import ChatRequest, TextPart

VERSION = 1  # part of every key: bump it when the canonical form changes, and old entries never match

_NOT_IN_KEY = frozenset(
    {
        "stream",
        "stream_options",
        "user",
        "metadata",
        "store",
        "service_tier",
        "prompt_cache_key",
        "safety_identifier",
        "max_completion_tokens",  # folded into max_tokens
    }
)


def deterministic(request: ChatRequest) -> bool:
    """Temperature 0. An absent temperature is the provider's default (1 at OpenAI and Anthropic):
    sampled, so not deterministic."""
    return request.temperature == 0


def namespace(owner: str | None, shared: bool) -> str:
    """Whose entries these are: the API key's own (a virtual key's id, or the key presented when
    keys are off), or everyone's on a shared route. It is hashed into the cache key with the rest,
    never stored."""
    if shared:
        return "shared"
    return f"key:{owner}" if owner else "anonymous"


def canonical(request: ChatRequest) -> dict[str, Any]:
    """The answer-changing content of ``request`` as plain JSON data, one spelling per meaning."""
    body = request.model_dump(exclude_none=True, by_alias=True, exclude=_NOT_IN_KEY)
    if request.output_limit is not None:
        body["max_tokens"] = request.output_limit
    if request.stop is not None:
        body["stop"] = sorted(set(request.stop_list))
    if body.get("n") == 1:
        del body["n"]
    if "tools" in body:
        body["tools"] = [_without_breakpoint(t) for t in body["tools"]]
    body["messages"] = _messages(body["messages"])
    return body


def _messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ids: dict[str, str] = {}
    out = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            message["content"] = _collapse([_without_breakpoint(p) for p in content])
        calls = message.get("tool_calls")
        if calls:
            for call in calls:
                call["id"] = ids.setdefault(call["id"], f"call_{len(ids)}")
            if not message.get("content"):
                message.pop("content", None)  # "" and null both mean no text beside the calls
        if "tool_call_id" in message:
            message["tool_call_id"] = ids.get(message["tool_call_id"], message["tool_call_id"])
        out.append(message)
    return out


def _without_breakpoint(item: dict[str, Any]) -> dict[str, Any]:
    item.pop("cache_control", None)
    return item


def _collapse(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    if all(p.get("type") == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _digest(material: Any) -> str:
    return hashlib.sha256(orjson.dumps(material, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True, slots=True)
class Keys:
    """Where a request's answer is cached: its exact key, and for a semantic candidate the scope
    and query a ``SemanticIndex`` takes."""

    exact: str
    scope: str | None = None  # a hash of everything but the last user message
    query: str | None = None  # that message's text

    @classmethod
    def of(cls, request: ChatRequest, space: str, *, semantic: bool = False) -> Keys:
        body = canonical(request)
        exact = _digest(["exact", VERSION, space, body])
        query = semantic_query(request) if semantic else None
        if query is None:
            return cls(exact)
        body["messages"] = body["messages"][:-1]
        return cls(exact, _digest(["semantic", VERSION, space, body]), query)


def semantic_query(request: ChatRequest) -> str | None:
    """The last message's text when it is a user message of text only, else None: an image or a
    tool result is not a question to compare by meaning."""
    last = request.messages[-1]
    if last.role != "user":
        return None
    if isinstance(last.content, list) and not all(isinstance(p, TextPart) for p in last.content):
        return None
    text = last.text()
    return text if text.strip() else None
