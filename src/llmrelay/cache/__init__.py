"""The response cache: exact (a canonical hash of the request) and semantic (``cache/semantic/``),
as one pipeline stage over a pluggable store. See docs/caching.md."""

from .backends import MemoryBackend, RedisBackend, SqliteBackend, build_backend
from .base import CacheBackend, SemanticIndex
from .keys import Keys, canonical, deterministic, namespace
from .stage import HEADER, CacheStage, build_semantic_index

__all__ = [
    "HEADER",
    "CacheBackend",
    "CacheStage",
    "Keys",
    "MemoryBackend",
    "RedisBackend",
    "SemanticIndex",
    "SqliteBackend",
    "build_backend",
    "build_semantic_index",
    "canonical",
    "deterministic",
    "namespace",
]
