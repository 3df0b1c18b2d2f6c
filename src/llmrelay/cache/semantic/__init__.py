"""The semantic cache engine: find a cached answer to a question asked in other words.

The cache stage owns keys, storage of responses and headers; this package answers one question:
"in this scope, which stored entry (if any) answers this query?" (``SemanticIndex``).

    build_semantic_index(SemanticSettings(...))  ->  LocalSemanticIndex | RedisSemanticIndex

See docs/semantic-cache.md for the design and bench/README.md for the measurements behind the
defaults. The local embedder needs ``pip install 'llmrelay[semantic]'`` and the model wheel
(``embedders.INSTALL_HINT``); neither needs torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ...errors import ConfigError
from ..base import SemanticIndex
from .embedders import INSTALL_HINT, Embedder, Encoder, HttpEmbedder, LocalEmbedder
from .engine import LocalSemanticIndex
from .judge import ModelVerifier
from .redis_index import RedisSemanticIndex
from .verify import Verifier

# Chosen on bench/semantic_cache.py (bench/README.md) for all-MiniLM-L6-v2 with verification and
# the 0.01 margin: the lowest threshold with QQP false hits under 10% (9.8% at 55.7% duplicate
# recall; mock paraphrases 98.6% precision / 83.1% recall). Another embedder needs its own.
DEFAULT_THRESHOLD = 0.84


class EmbedderSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["local", "http"] = "local"
    model_dir: str | None = None  # local: a sentence-transformers BERT dir; None = the packaged MiniLM
    encoder: Encoder = "auto"  # local: onnx when onnxruntime is installed, else numpy (embedders.py)
    # http: an OpenAI-compatible /v1/embeddings
    base_url: str | None = None  # e.g. https://api.openai.com/v1
    model: str | None = None  # e.g. text-embedding-3-small
    api_key_env: str | None = None
    api_key: str | None = None
    dimensions: int | None = Field(default=None, ge=1)
    timeout_s: float = Field(default=5.0, gt=0)


class SemanticSettings(BaseModel):
    """The engine's settings; the route's threshold is passed per lookup."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    embedder: EmbedderSettings = EmbedderSettings()
    backend: Literal["memory", "redis"] = "memory"
    redis_url: str | None = None  # backend redis; defaults to the gateway's redis_url
    redis_prefix: str = "llmrelay:semantic"
    max_entries: int = Field(default=100_000, ge=1)
    verify: bool = True  # negation / number / name checks on every candidate
    candidates: int = Field(default=4, ge=1, le=64)  # nearest entries checked per lookup
    margin: float = Field(default=0.01, ge=0, le=1)  # miss when another entry is this close to the best
    hnsw_from: int = Field(default=512, ge=2)  # a scope switches from exact search to HNSW here
    index_dtype: Literal["i8", "f16", "f32"] = "i8"


def build_embedder(settings: EmbedderSettings, env: Mapping[str, str] | None = None) -> Embedder:
    if settings.kind == "local":
        return LocalEmbedder(settings.model_dir, encoder=settings.encoder)
    if not settings.base_url or not settings.model:
        raise ConfigError("semantic cache: an http embedder needs `base_url` and `model`")
    key = settings.api_key
    if key is None and settings.api_key_env:
        key = (os.environ if env is None else env).get(settings.api_key_env)
        if not key:
            raise ConfigError(
                f"semantic cache: the embeddings endpoint needs an API key: export {settings.api_key_env}=..."
            )
    return HttpEmbedder(
        settings.base_url,
        settings.model,
        api_key=key,
        dimensions=settings.dimensions,
        timeout_s=settings.timeout_s,
    )


def build_semantic_index(
    settings: SemanticSettings, *, redis_url: str | None = None, env: Mapping[str, str] | None = None
) -> LocalSemanticIndex:
    """The engine the settings describe; ``redis_url`` is the gateway's, used when none is set here."""
    embedder = build_embedder(settings.embedder, env)
    common = {
        "max_entries": settings.max_entries,
        "verifier": Verifier() if settings.verify else None,
        "candidates": settings.candidates,
        "margin": settings.margin,
        "hnsw_from": settings.hnsw_from,
        "dtype": settings.index_dtype,
    }
    if settings.backend == "memory":
        return LocalSemanticIndex(embedder, **common)  # type: ignore[arg-type]
    url = settings.redis_url or redis_url
    if not url:
        raise ConfigError("semantic cache: backend 'redis' needs `redis_url` (here or at the top level)")
    try:
        import redis  # noqa: F401
    except ImportError:
        raise ConfigError("semantic cache: backend 'redis' needs: pip install 'llmrelay[redis]'") from None
    return RedisSemanticIndex(embedder, url, prefix=settings.redis_prefix, **common)  # type: ignore[arg-type]


__all__ = [
    "DEFAULT_THRESHOLD",
    "INSTALL_HINT",
    "EmbedderSettings",
    "Embedder",
    "HttpEmbedder",
    "LocalEmbedder",
    "LocalSemanticIndex",
    "ModelVerifier",
    "RedisSemanticIndex",
    "SemanticIndex",
    "SemanticSettings",
    "Verifier",
    "build_embedder",
    "build_semantic_index",
]
