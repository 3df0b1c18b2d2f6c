"""Simulated prompt caching, as the providers report it: hashes of prompt prefixes this process has
seen, each kept for a TTL after its last use (an LRU bounds their number).

OpenAI (automatic): a prompt of 1024 tokens or more is cached in 128-token steps; a later request
reports ``cached_tokens`` = the longest such prefix seen before.

Anthropic (explicit): a prompt is a sequence of blocks (tools, system blocks, message blocks, as on
the wire). Only prefixes ending at a ``cache_control`` breakpoint that reach the model's minimum
are written. A read is the longest cached prefix ending at a breakpoint or at one of the 20 blocks
before it; the tokens from there to the last breakpoint are a write (as Anthropic bills them); the
rest is plain input. Breakpoints with ``ttl: 1h`` live 12 times as long as the default ones, and
the write up to the last of them is reported apart, as Anthropic's ``cache_creation`` does.

Hashes include the model (caches are per model). Everything is deterministic but for the clock.
"""

from __future__ import annotations

import hashlib
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from ..providers.anthropic_format import min_cacheable_tokens
from ..tokens import count_text, encoding_for
from ..types import ChatRequest

OPENAI_MIN = 1024
OPENAI_STEP = 128
LOOKBACK_BLOCKS = 20  # Anthropic checks a breakpoint and the 20 blocks before it for a hit
LONG_TTL_FACTOR = 12  # "1h" against the default "5m"


@dataclass(frozen=True, slots=True)
class CacheResult:
    read: int = 0
    write: int = 0
    write_1h: int = 0  # the part of ``write`` that went to 1-hour entries


@dataclass(frozen=True, slots=True)
class _Boundary:
    """The end of one Anthropic block: tokens so far, the prefix's hash, its breakpoint TTL if any."""

    tokens: int
    key: bytes
    ttl_factor: int | None  # None: no breakpoint here


class PromptCache:
    def __init__(
        self,
        ttl_s: float = 300.0,
        max_entries: int = 16384,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._expires: OrderedDict[bytes, tuple[float, float]] = OrderedDict()  # key -> (expiry, ttl)
        self._ttl_s = ttl_s
        self._max = max_entries
        self._clock = clock

    def _hit(self, key: bytes, now: float) -> bool:
        """Whether ``key`` is cached and unexpired; a hit refreshes its TTL ("from last use")."""
        entry = self._expires.get(key)
        if entry is None or entry[0] <= now:
            return False
        self._expires[key] = (now + entry[1], entry[1])
        self._expires.move_to_end(key)
        return True

    def _remember(self, key: bytes, ttl: float, now: float) -> None:
        old = self._expires.get(key)
        if old is not None and old[0] > now:
            ttl = max(ttl, old[1])  # a live 1-hour entry is not shortened by a 5-minute mark
        self._expires[key] = (now + ttl, ttl)
        self._expires.move_to_end(key)
        while len(self._expires) > self._max:
            self._expires.popitem(last=False)

    def openai(self, request: ChatRequest) -> CacheResult:
        ids = _openai_ids(request)
        if len(ids) < OPENAI_MIN:
            return CacheResult()
        cuts = list(range(OPENAI_MIN, len(ids) + 1, OPENAI_STEP))
        h = hashlib.blake2b(request.model.encode(), digest_size=16)
        keys, done = [], 0
        for cut in cuts:  # the hash of ids[:cut] for each cut, in one incremental pass
            h.update(array("I", ids[done:cut]).tobytes())
            done = cut
            keys.append(h.copy().digest())
        now = self._clock()
        read = max((cut for cut, key in zip(cuts, keys, strict=True) if self._hit(key, now)), default=0)
        for key in keys:
            self._remember(key, self._ttl_s, now)
        return CacheResult(read=read)

    def anthropic(self, body: dict[str, Any]) -> CacheResult:
        """Cache accounting for a Messages request body (as the client sent it)."""
        blocks = list(_anthropic_blocks(body))
        if not any(_mark_of(b) for _, b in blocks):
            return CacheResult()  # nothing marked: nothing to hash or count
        model = str(body.get("model", ""))
        minimum = min_cacheable_tokens(model)
        bounds = list(_anthropic_boundaries(blocks, model))
        marks = [i for i, b in enumerate(bounds) if b.ttl_factor is not None and b.tokens >= minimum]
        if not marks:
            return CacheResult()
        now = self._clock()
        looked = {j for i in marks for j in range(max(0, i - LOOKBACK_BLOCKS), i + 1)}
        read = max((bounds[j].tokens for j in sorted(looked) if self._hit(bounds[j].key, now)), default=0)
        for i in marks:
            self._remember(bounds[i].key, self._ttl_s * (bounds[i].ttl_factor or 1), now)
        # Anthropic's billing of mixed TTLs: reads up to the hit, 1-hour writes from there to the
        # last 1-hour mark, 5-minute writes from there to the last mark.
        long_end = max(
            (bounds[i].tokens for i in marks if bounds[i].ttl_factor == LONG_TTL_FACTOR), default=0
        )
        return CacheResult(
            read=read, write=max(0, bounds[marks[-1]].tokens - read), write_1h=max(0, long_end - read)
        )


def _openai_ids(request: ChatRequest) -> list[int]:
    """The prompt as token ids: tools, then each message's role, text and tool calls."""
    enc = encoding_for(request.model)
    ids: list[int] = []
    for tool in request.tools or ():
        ids += enc.encode_ordinary(orjson.dumps(tool.function.model_dump(exclude_none=True)).decode())
    for message in request.messages:
        ids += enc.encode_ordinary(message.role + "\n" + message.text())
        for call in message.tool_calls or ():
            ids += enc.encode_ordinary(call.function.name + call.function.arguments)
    return ids


def _anthropic_boundaries(blocks: list[tuple[str, Any]], model: str) -> Iterator[_Boundary]:
    """One boundary per block of the prompt."""
    h = hashlib.blake2b(model.encode(), digest_size=16)
    tokens = 0
    for role, block in blocks:
        mark = _mark_of(block)
        bare = {k: v for k, v in block.items() if k != "cache_control"}
        h.update(role.encode() + orjson.dumps(bare, option=orjson.OPT_SORT_KEYS))
        tokens += count_text(_block_text(bare), model)
        ttl_factor = None
        if isinstance(mark, dict):
            ttl_factor = LONG_TTL_FACTOR if mark.get("ttl") == "1h" else 1
        yield _Boundary(tokens, h.copy().digest(), ttl_factor)


def _anthropic_blocks(body: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(role, block) in Anthropic's prefix order; the request parser has checked their shapes."""
    for tool in body.get("tools") or ():
        yield "tool", tool
    system = body.get("system")
    for block in [{"type": "text", "text": system}] if isinstance(system, str) else system or ():
        yield "system", block
    for message in body.get("messages") or ():
        content = message.get("content")
        for block in [{"type": "text", "text": content}] if isinstance(content, str) else content or ():
            yield str(message.get("role")), block


def _mark_of(block: dict[str, Any]) -> Any:
    """A block's breakpoint (a tool result's may sit on its last content block)."""
    mark = block.get("cache_control")
    content = block.get("content") if block.get("type") == "tool_result" else None
    if mark is None and isinstance(content, list) and content and isinstance(content[-1], dict):
        mark = content[-1].get("cache_control")
    return mark


def _block_text(block: dict[str, Any]) -> str:
    """What a block counts as, in tokens: its text (a tool: its definition as JSON, the way the
    simulator counts tool definitions in usage)."""
    kind = block.get("type")
    if kind == "text":
        return str(block.get("text") or "")
    if kind == "tool_use":
        return str(block.get("name", "")) + orjson.dumps(block.get("input")).decode()
    if kind == "tool_result":
        content = block.get("content")
        if isinstance(content, list):
            return "".join(_block_text(b) for b in content if isinstance(b, dict))
        return str(content or "")
    if "input_schema" in block:  # a tool definition, as canonical FunctionDef JSON
        function = {k: block[k] for k in ("name", "description") if block.get(k) is not None}
        return orjson.dumps({**function, "parameters": block["input_schema"]}).decode()
    return ""  # images, documents
