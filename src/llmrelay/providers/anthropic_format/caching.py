"""Prompt caching on the Anthropic wire: the ``cache_control`` breakpoints we add, keep or remove.

Anthropic caches a prompt prefix (tools, then system, then messages) only up to a block marked
``cache_control``; at most 4 marks per request; and only when that prefix reaches the model's
minimum length (a shorter marked prefix is processed uncached, without an error). A read looks for
a cached prefix at each mark and up to 20 blocks before it, so a mark that moves forward turn after
turn still reads what the previous turn wrote.

``auto`` keeps the client's marks and adds ours, while slots are left, in this order:

1. the last system block: the prefix every conversation with this system prompt shares;
2. the end of the conversation so far (the last block before the final message): the next turn
   starts with it, so it reads everything but the newest exchange;
3. the last tool: still read when the system prompt changes;
4. the first message's last block, when more follows: a long document sent up front.

The final message itself is never marked: a new question would be written to the cache (at 1.25x
the input price) on every call and read by none. A mark is only placed where the prefix up to it
reaches the minimum (estimated with our tokenizer; images and documents count as nothing, so we
err towards not marking). Our marks are the default 5-minute kind, and never precede a client's
1-hour mark (Anthropic requires longer TTLs first).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any, Literal

from ...tokens import count_text
from ._common import _dump_json

Mode = Literal["auto", "passthrough", "off"]

MAX_BREAKPOINTS = 4
EPHEMERAL: dict[str, Any] = {"type": "ephemeral"}

# Minimum cacheable prompt length by model id prefix (Anthropic's prompt-caching docs, "Cache
# limitations", as quoted in 2026: 4096 for Opus 4.5-4.7 and Haiku 4.5, 2048 for Haiku 3 and 3.5,
# 1024 for the rest: Sonnet 3.7-4.6, Opus 4 and 4.1). First match wins.
_MINIMUMS: tuple[tuple[str, int], ...] = (
    ("claude-opus-4-5", 4096),
    ("claude-opus-4-6", 4096),
    ("claude-opus-4-7", 4096),
    ("claude-haiku-4-5", 4096),
    ("claude-3-5-haiku", 2048),
    ("claude-3-haiku", 2048),
)
DEFAULT_MINIMUM = 1024

# Text runs ~4 characters a token: a head of 8 per token needed nearly always shows a long block
# is long enough, without tokenizing all of it.
_CHARS_PER_TOKEN_BOUND = 8


def min_cacheable_tokens(model: str) -> int:
    """The shortest prefix ``model`` caches (provider prefixes like ``anthropic/`` are ignored)."""
    bare = model.rsplit("/", 1)[-1].lower()
    return next((n for prefix, n in _MINIMUMS if bare.startswith(prefix)), DEFAULT_MINIMUM)


def apply_prompt_caching(body: dict[str, Any], mode: Mode, min_tokens: int | None = None) -> dict[str, Any]:
    """Add (``auto``) or remove (``off``) breakpoints in a Messages body built by
    ``request_to_wire``; ``passthrough`` leaves it as the client sent it. Edits ``body`` in place."""
    if mode == "passthrough":
        return body
    if mode == "off":
        for block in _marked_blocks(body):
            del block["cache_control"]
        return body
    budget = MAX_BREAKPOINTS - sum(1 for _ in _marked_blocks(body))
    if budget <= 0:
        return body
    model = str(body.get("model", ""))
    prefix = _Prefix(body)
    blocks = prefix.blocks
    # Our 5-minute marks must not come before a client's 1-hour one.
    first = 1 + max((i for i, b in enumerate(blocks) if _ttl(b) == "1h"), default=-1)
    first = max(first, _first_reaching(blocks, min_tokens or min_cacheable_tokens(model), model))
    chosen = [i for i in prefix.candidates() if i >= first and "cache_control" not in blocks[i]]
    for i in chosen[:budget]:
        prefix.mark(i)
    return body


class _Prefix:
    """A Messages body's tools, system blocks and message blocks, in prefix order."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.blocks: list[dict[str, Any]] = list(body.get("tools") or ())
        self.ends = [len(self.blocks)]  # where the tools, the system prompt and each message end
        # A string system prompt or message content is one text block, put in its place only
        # if it gets a mark (so unmarked bodies stay as they were).
        self._strings: dict[int, tuple[dict[str, Any], str]] = {}
        owners = [(body, "system"), *((m, "content") for m in body.get("messages") or ())]
        for owner, key in owners:
            value = owner.get(key)
            if isinstance(value, str):
                if value:
                    self._strings[len(self.blocks)] = (owner, key)
                    self.blocks.append({"type": "text", "text": value})
            else:
                self.blocks.extend(value or ())
            self.ends.append(len(self.blocks))

    def candidates(self) -> list[int]:
        """Indexes of the blocks worth a mark, most valuable first (see the module docstring)."""
        tools, system, *messages = self.ends
        wanted = [
            system - 1 if system > tools else -1,  # the last system block
            messages[-2] - 1 if len(messages) > 1 else -1,  # the last block before the final message
            tools - 1,  # the last tool
            messages[0] - 1 if len(messages) > 1 else -1,  # the first message's last block
        ]
        return [i for n, i in enumerate(wanted) if i >= 0 and i not in wanted[:n]]

    def mark(self, i: int) -> None:
        self.blocks[i]["cache_control"] = dict(EPHEMERAL)
        if i in self._strings:
            owner, key = self._strings[i]
            owner[key] = [self.blocks[i]]


def _first_reaching(blocks: list[dict[str, Any]], min_tokens: int, model: str) -> int:
    """The index of the first block whose prefix reaches ``min_tokens`` (len(blocks) if none).

    Counting stops as soon as it gets there, so a long prompt costs about ``min_tokens`` tokens of
    tokenizing (under a millisecond), however long it is."""
    total = 0
    for i, block in enumerate(blocks):
        total += _count_up_to(_block_text(block), min_tokens - total, model)
        if total >= min_tokens:
            return i
    return len(blocks)


def _count_up_to(text: str, needed: int, model: str) -> int:
    """Tokens in ``text`` (an estimate: see tokens.py on Claude), or in enough of its head to
    show that it has at least ``needed``."""
    head = needed * _CHARS_PER_TOKEN_BOUND
    if len(text) > head:
        counted = _count(text[:head], model)
        if counted >= needed:
            return counted
    return _count(text, model)


@functools.lru_cache(maxsize=256)  # the long prefixes worth a mark are the ones that repeat
def _cached_count(text: str, model: str) -> int:
    return count_text(text, model)


def _count(text: str, model: str) -> int:
    # Only texts of a bounded size are kept (at most 256 x 64k characters).
    return _cached_count(text, model) if len(text) <= 65_536 else count_text(text, model)


def _block_text(block: dict[str, Any]) -> str:
    kind = block.get("type")
    if kind == "text":
        return block.get("text") or ""
    if kind == "tool_use":
        return str(block.get("name", "")) + _dump_json(block.get("input"))
    if kind == "tool_result":
        content = block.get("content")
        if isinstance(content, str):
            return content
        return "".join(_block_text(b) for b in content or () if isinstance(b, dict))
    if "input_schema" in block:  # a tool definition
        return _dump_json({k: v for k, v in block.items() if k != "cache_control"})
    return ""  # images, documents: counted as nothing (we err towards not marking)


def _marked_blocks(body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every block carrying ``cache_control``, nested tool_result content included."""
    system = body.get("system")
    messages = body.get("messages") or ()
    blocks = [
        *(body.get("tools") or ()),
        *(system if isinstance(system, list) else ()),
        *(b for m in messages if isinstance(m.get("content"), list) for b in m["content"]),
    ]
    for block in blocks:
        if "cache_control" in block:
            yield block
        nested = block.get("content") if block.get("type") == "tool_result" else None
        for inner in nested if isinstance(nested, list) else ():
            if isinstance(inner, dict) and "cache_control" in inner:
                yield inner


def _ttl(block: dict[str, Any]) -> str | None:
    mark = block.get("cache_control")
    return mark.get("ttl", "5m") if isinstance(mark, dict) else None
