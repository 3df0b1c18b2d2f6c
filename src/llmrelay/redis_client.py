"""The one way the gateway makes a Redis client (limits, budgets, cache, circuit breakers).

Short timeouts and no client-side retries: a slow or absent Redis must not become slow requests;
each caller decides what a failed command means (fail open, a cache miss, the next sync round).
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigError


def redis_client(url: str, *, timeout_s: float, what: str, decode_responses: bool = True) -> Any:
    """A ``redis.asyncio`` client for ``url``; a ConfigError naming ``what`` (the setting that
    asked for Redis) when the redis package is missing or the URL is not a Redis URL."""
    try:
        from redis.asyncio import from_url
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
    except ImportError:
        raise ConfigError(
            f"{what} uses Redis but the redis package is missing: pip install 'llmrelay[redis]'"
        ) from None
    try:
        return from_url(
            url,
            decode_responses=decode_responses,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
    except ValueError as exc:
        raise ConfigError(f"Invalid Redis URL for {what}: {exc}") from None


__all__ = ["redis_client"]
