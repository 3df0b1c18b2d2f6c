"""Simulated prompt caching: an LRU of hashes of token-prefixes this process has seen.

OpenAI (automatic): prompts over 1024 tokens are cached in 128-token steps; a later request reports
``cached_tokens`` = the longest such prefix seen before.
Anthropic (explicit): only prefixes ending at a ``cache_control`` breakpoint are cached. The longest
breakpoint prefix seen before is a cache *read*; the tokens from there to the last breakpoint are a
cache *write* (as Anthropic bills them).
The prefix is the prompt serialised as tools, then each message's role and parts, tokenized;
hashes include the model, since caches are per model.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from dataclasses import dataclass

import orjson

from ..tokens import encoding_for
from ..types import ChatRequest

MIN_CACHEABLE = 1024
OPENAI_STEP = 128


@dataclass(frozen=True, slots=True)
class CacheResult:
    read: int = 0
    write: int = 0


def serialize(request: ChatRequest) -> tuple[list[int], list[int]]:
    """The prompt as token ids, and the token offsets where a cache_control breakpoint ends."""
    enc = encoding_for(request.model)
    ids: list[int] = []
    marks: list[int] = []
    for tool in request.tools or ():
        ids += enc.encode_ordinary(orjson.dumps(tool.function.model_dump(exclude_none=True)).decode())
        if tool.cache_control:
            marks.append(len(ids))
    for message in request.messages:
        ids += enc.encode_ordinary(message.role + "\n")
        if isinstance(message.content, str):
            ids += enc.encode_ordinary(message.content)
        for part in message.content if isinstance(message.content, list) else ():
            text = getattr(part, "text", None)
            ids += enc.encode_ordinary(text if isinstance(text, str) else part.type)
            if getattr(part, "cache_control", None):
                marks.append(len(ids))
        for call in message.tool_calls or ():
            ids += enc.encode_ordinary(call.function.name + call.function.arguments)
    return ids, marks


class PromptCache:
    def __init__(self, max_entries: int = 16384) -> None:
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._max = max_entries

    def _hashes(self, model: str, ids: list[int], cuts: list[int]) -> list[bytes]:
        """The hash of ``ids[:cut]`` for each (ascending) cut, in one incremental pass."""
        h = hashlib.blake2b(model.encode(), digest_size=16)
        out, done = [], 0
        for cut in cuts:
            h.update(array("I", ids[done:cut]).tobytes())
            done = cut
            out.append(h.copy().digest())
        return out

    def _seen_before(self, key: bytes) -> bool:
        if key in self._seen:
            self._seen.move_to_end(key)
            return True
        return False

    def _remember(self, keys: list[bytes]) -> None:
        for key in keys:
            self._seen[key] = None
            self._seen.move_to_end(key)
        while len(self._seen) > self._max:
            self._seen.popitem(last=False)

    def openai(self, request: ChatRequest) -> CacheResult:
        ids, _ = serialize(request)
        cuts = list(range(MIN_CACHEABLE, len(ids) + 1, OPENAI_STEP))
        keys = self._hashes(request.model, ids, cuts)
        read = max((cut for cut, key in zip(cuts, keys, strict=True) if self._seen_before(key)), default=0)
        self._remember(keys)
        return CacheResult(read=read)

    def anthropic(self, request: ChatRequest) -> CacheResult:
        ids, marks = serialize(request)
        cuts = sorted({m for m in marks if m >= MIN_CACHEABLE})
        if not cuts:
            return CacheResult()
        keys = self._hashes(request.model, ids, cuts)
        read = max((cut for cut, key in zip(cuts, keys, strict=True) if self._seen_before(key)), default=0)
        self._remember(keys)
        return CacheResult(read=read, write=cuts[-1] - read)
