"""The in-process vector index: one partition per scope, TTL, and a size bound with LRU eviction.

A scope's partition is a plain float32 matrix searched exactly while it is small (a few hundred
rows: one matrix-vector product, microseconds, and no graph to pay for per conversation), and an
HNSW graph (usearch) once it grows past ``hnsw_from``, so a lookup stays sub-millisecond whatever
the scope's size. Lookups never look across scopes, so one busy scope does not slow the others.

This class is synchronous and not thread-safe: the engines call it from the event loop only.
"""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(slots=True)
class Entry:
    label: int  # the vector's id in its partition
    scope: str
    entry_key: str  # where the stage stored the response
    text: str  # the cached question, for verification
    expires_at: float  # wall-clock seconds (shared with other replicas)


class _Partition:
    """One scope's vectors: exact search on a matrix while small, HNSW once large."""

    __slots__ = ("dim", "dtype", "hnsw", "labels", "matrix", "rows")

    def __init__(self, dim: int, dtype: str) -> None:
        self.dim = dim
        self.dtype = dtype
        self.labels: list[int] = []  # row -> label, for the matrix form
        self.rows: dict[int, int] = {}  # label -> row
        self.matrix = np.empty((4, dim), np.float32)
        self.hnsw = None  # a usearch Index once promoted

    def __len__(self) -> int:
        return len(self.hnsw) if self.hnsw is not None else len(self.labels)

    def add(self, label: int, vector: np.ndarray, hnsw_from: int) -> None:
        if self.hnsw is not None:
            self.hnsw.add(label, vector)
            return
        n = len(self.labels)
        if n == len(self.matrix):
            grown = np.empty((2 * n, self.dim), np.float32)
            grown[:n] = self.matrix
            self.matrix = grown
        self.matrix[n] = vector
        self.labels.append(label)
        self.rows[label] = n
        if n + 1 >= hnsw_from:
            self._promote()

    def _promote(self) -> None:
        from usearch.index import Index

        # i8 keeps the graph 4x smaller than f32 and measured fastest (bench/README.md); cosine on
        # unit vectors is the dot product the matrix form computes.
        index = Index(
            ndim=self.dim,
            metric="cos",
            dtype=self.dtype,
            connectivity=16,
            expansion_add=64,
            expansion_search=64,
        )
        n = len(self.labels)
        # One thread: the graph (and so every lookup) is then the same from run to run.
        index.add(np.asarray(self.labels, np.uint64), self.matrix[:n], threads=1)
        self.hnsw = index
        self.labels, self.rows, self.matrix = [], {}, np.empty((0, self.dim), np.float32)

    def remove(self, label: int) -> None:
        if self.hnsw is not None:
            self.hnsw.remove(label)
            return
        row = self.rows.pop(label)
        last = len(self.labels) - 1
        if row != last:  # move the last row into the hole
            moved = self.labels[last]
            self.matrix[row] = self.matrix[last]
            self.labels[row] = moved
            self.rows[moved] = row
        self.labels.pop()

    def search(self, vector: np.ndarray, k: int) -> Iterator[tuple[int, float]]:
        if self.hnsw is not None:
            matches = self.hnsw.search(vector, k)
            for key, distance in zip(matches.keys, matches.distances, strict=True):
                yield int(key), 1.0 - float(distance)
            return
        n = len(self.labels)
        sims = self.matrix[:n] @ vector
        if n > k:
            top = np.argpartition(-sims, k)[:k]
            top = top[np.argsort(-sims[top])]
        else:
            top = np.argsort(-sims)
        for row in top:
            yield self.labels[row], float(sims[row])


class ScopedIndex:
    """Entries by scope, bounded to ``max_entries`` (least recently used out first), with TTL."""

    def __init__(
        self,
        dim: int,
        *,
        max_entries: int = 100_000,
        hnsw_from: int = 512,
        dtype: str = "i8",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.dim = dim
        self.max_entries = max_entries
        self.hnsw_from = hnsw_from
        self.dtype = dtype
        self.clock = clock
        self.entries: OrderedDict[int, Entry] = OrderedDict()  # least recently used first
        self._by_key: dict[tuple[str, str], int] = {}
        self._partitions: dict[str, _Partition] = {}
        self._expiry: list[tuple[float, int]] = []  # a heap; stale items are skipped when popped

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, entry: Entry, vector: np.ndarray) -> list[Entry]:
        """Insert (replacing the same scope + entry_key); returns the entries evicted for room."""
        self.expire()
        old = self._by_key.get((entry.scope, entry.entry_key))
        if old is not None:
            self.remove(old)
        partition = self._partitions.get(entry.scope)
        if partition is None:
            partition = self._partitions[entry.scope] = _Partition(self.dim, self.dtype)
        partition.add(entry.label, vector, self.hnsw_from)
        self.entries[entry.label] = entry
        self._by_key[(entry.scope, entry.entry_key)] = entry.label
        heapq.heappush(self._expiry, (entry.expires_at, entry.label))
        evicted = []
        while len(self.entries) > self.max_entries:
            evicted.append(self.remove(next(iter(self.entries))))
        return evicted

    def remove(self, label: int) -> Entry:
        entry = self.entries.pop(label)
        del self._by_key[(entry.scope, entry.entry_key)]
        partition = self._partitions[entry.scope]
        partition.remove(label)
        if not len(partition):
            del self._partitions[entry.scope]
        return entry

    def discard(self, label: int) -> None:
        if label in self.entries:
            self.remove(label)

    def expire(self) -> None:
        now = self.clock()
        while self._expiry and self._expiry[0][0] <= now:
            expires_at, label = heapq.heappop(self._expiry)
            entry = self.entries.get(label)
            if entry is not None and entry.expires_at == expires_at:
                self.remove(label)

    def candidates(
        self, scope: str, vector: np.ndarray, k: int, threshold: float
    ) -> list[tuple[Entry, float]]:
        """Up to ``k`` live entries of ``scope`` at or above ``threshold``, most similar first."""
        partition = self._partitions.get(scope)
        if partition is None:
            return []
        now = self.clock()
        found = []
        for label, similarity in partition.search(vector, k):
            if similarity < threshold:
                break
            entry = self.entries.get(label)
            if entry is not None and entry.expires_at > now:
                found.append((entry, similarity))
        return found

    def touch(self, label: int) -> None:
        """A hit: the entry becomes the most recently used."""
        if label in self.entries:
            self.entries.move_to_end(label)

    def scope_sizes(self) -> dict[str, int]:
        return {scope: len(p) for scope, p in self._partitions.items()}
