"""Rate limits (token buckets per key, end user, model and deployment; in-process or in Redis)
and the priority queue in front of deployments at their limits. See docs/limits.md."""

from .buckets import Decision, Limit, LocalLimiter, refill
from .queue import Gate, Gates, priority_of
from .runtime import LimitsRuntime, build_limits
from .stage import LimitStage, ratelimit_headers

__all__ = [
    "Decision",
    "Gate",
    "Gates",
    "Limit",
    "LimitStage",
    "LimitsRuntime",
    "LocalLimiter",
    "build_limits",
    "priority_of",
    "ratelimit_headers",
    "refill",
]
