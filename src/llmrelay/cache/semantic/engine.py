"""The in-process semantic index: embed, look up within the scope, verify, and return the entry key.

A lookup embeds the last user message, asks the scope's partition for its few nearest entries at
or above the threshold, and returns the first one the verifier accepts (most similar first): a
near neighbour that differs in a number, a negation or a named thing is skipped, not served.
When the route asks a model to confirm (``confirm``, judge.py), that one candidate is put to it
last, and anything but a yes is a miss: one model call per lookup at most.
An embedder failure is a miss, never an error: the cache only ever saves a call.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable

import numpy as np

from ...errors import GatewayError
from ..base import Confirm
from .embedders import Embedder
from .index import Entry, ScopedIndex
from .verify import Verifier

log = logging.getLogger("llmrelay.cache.semantic")


class LocalSemanticIndex:
    """The embedded default: everything in this process (one replica)."""

    def __init__(
        self,
        embedder: Embedder,
        *,
        max_entries: int = 100_000,
        verifier: Verifier | None = None,
        candidates: int = 4,
        margin: float = 0.0,
        hnsw_from: int = 512,
        dtype: str = "i8",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.embedder = embedder
        self.verifier = verifier
        self.candidates = candidates
        self.margin = margin
        self.clock = clock
        self.max_entries = max_entries
        self.index: ScopedIndex | None = None  # sized on the first vector (the embedder decides dim)
        self._index_args = {
            "max_entries": max_entries,
            "hnsw_from": hnsw_from,
            "dtype": dtype,
            "clock": clock,
        }
        self.stats = {"hits": 0, "misses": 0, "rejected": 0, "errors": 0}

    async def ready(self) -> None:
        await self.embedder.ready()

    async def _embed(self, text: str) -> np.ndarray | None:
        try:
            return (await self.embedder.embed([text]))[0]
        except (GatewayError, OSError, TimeoutError) as exc:
            self.stats["errors"] += 1
            log.warning("semantic cache: embedding failed, treated as a miss: %s", exc)
            return None

    def _index_for(self, vector: np.ndarray) -> ScopedIndex:
        if self.index is None:
            self.index = ScopedIndex(len(vector), **self._index_args)  # type: ignore[arg-type]
        return self.index

    async def search(
        self,
        scope: str,
        query: str,
        threshold: float,
        confirm: Confirm | None = None,
    ) -> tuple[str, float] | None:
        query = query.strip()
        vector = await self._embed(query) if query and self.index is not None else None
        if vector is None or self.index is None:
            self.stats["misses"] += 1
            return None
        found = self.index.candidates(scope, vector, self.candidates, threshold)
        for i, (entry, similarity) in enumerate(found):
            if self.verifier is not None and self.verifier.reject(query, entry.text):
                self.stats["rejected"] += 1
                continue
            # Two different cached questions about equally close: either answer may be the wrong
            # one, so an ambiguous match is a miss (off by default; bench/README.md has its cost).
            others = [s for j, (_, s) in enumerate(found) if j != i]
            if self.margin and others and similarity - max(others) < self.margin:
                self.stats["rejected"] += 1
                break
            if confirm is not None and not await confirm(query, entry.text):
                self.stats["rejected"] += 1
                break
            self.index.touch(entry.label)
            self.stats["hits"] += 1
            return entry.entry_key, similarity
        self.stats["misses"] += 1
        return None

    async def add(self, scope: str, query: str, entry_key: str, ttl_s: float) -> None:
        query = query.strip()
        if not query or ttl_s <= 0:
            return
        vector = await self._embed(query)
        if vector is None:
            return
        entry = Entry(secrets.randbits(63), scope, entry_key, query, self.clock() + ttl_s)
        await self._store(entry, vector)

    async def _store(self, entry: Entry, vector: np.ndarray) -> None:
        self._index_for(vector).add(entry, vector)

    def __len__(self) -> int:
        return len(self.index) if self.index is not None else 0

    async def aclose(self) -> None:
        await self.embedder.aclose()
