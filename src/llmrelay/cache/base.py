"""The two interfaces the cache stage is built on: where entries are kept (``CacheBackend``) and
how a near-duplicate question finds one (``SemanticIndex``, implemented in ``cache/semantic/``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

# (query, cached question) -> serve it? A route's last word on a semantic match (semantic/judge.py).
Confirm = Callable[[str, str], Awaitable[bool]]


class CacheBackend(Protocol):
    """Bytes under a key for ``ttl_s`` seconds. Every method may raise on a store outage; the stage
    treats that as a miss (or a skipped write), never as a failed call."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def aclose(self) -> None: ...


class SemanticIndex(Protocol):
    """Last user messages by meaning, within a scope (a hash of everything else in the request)."""

    async def search(
        self,
        scope: str,
        query: str,
        threshold: float,
        confirm: Confirm | None = None,
    ) -> tuple[str, float] | None:
        """The best verified match in ``scope``: (entry_key, similarity), or None. ``confirm(query,
        cached question)``, when given, has the last word on the one candidate that passed the rest."""
        ...

    async def add(self, scope: str, query: str, entry_key: str, ttl_s: float) -> None: ...

    async def ready(self) -> None:
        """Returns once searches can run (its embedding model loaded): the gateway waits for it
        before it serves."""
        ...

    async def aclose(self) -> None: ...
