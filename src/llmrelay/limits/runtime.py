"""What the limits need at run time, built once per gateway: the limiter (in-process, or Redis when
a Redis URL is configured), the counters, and the queues of the deployments with limits.

Nothing is built when nothing can be limited: no end-user or model limits, no deployment limits,
and no virtual keys (they need a master key), so such a gateway pays nothing for this feature.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config import LimitsSettings, Settings
from .buckets import Limiter, LocalLimiter
from .queue import Gate, Gates
from .stats import LimitsCollector, LimitStats

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry


@dataclass(slots=True)
class LimitsRuntime:
    settings: LimitsSettings
    limiter: Limiter
    stats: LimitStats
    gates: Gates | None  # None: no deployment has limits
    stage_needed: bool  # some key, end user or model can be limited: the `limit` stage has work

    def register(self, registry: CollectorRegistry) -> None:
        registry.register(LimitsCollector(self.stats, self.gates.views if self.gates else None))

    async def aclose(self) -> None:
        if self.gates is not None:
            await self.gates.aclose()
        await self.limiter.aclose()


def build_limits(settings: Settings, *, clock: Callable[[], float] | None = None) -> LimitsRuntime | None:
    """The runtime for ``settings``, or None when nothing in them can be limited."""
    cfg = settings.limits
    stage_needed = (
        cfg.user.on
        or any(m.limits is not None and m.limits.on for m in settings.models)
        or settings.server.master_key is not None  # virtual keys, which carry limits, exist
    )
    deployments = {
        f"{d.provider}/{d.upstream or m.upstream_id}": d.limits
        for m in settings.models
        for d in m.deployment_list()
        if d.limits is not None and d.limits.on
    }
    if not stage_needed and not deployments:
        return None
    stats = LimitStats()
    limiter = _limiter(settings, stats, clock)
    gates = None
    if deployments:
        extra = {} if clock is None else {"clock": clock}
        gates = Gates(
            {
                key: Gate(key, limits, limiter, cfg.queue, stats, **extra)
                for key, limits in deployments.items()
            },
            cfg.queue,
            cfg.default_max_tokens,
        )
    return LimitsRuntime(cfg, limiter, stats, gates, stage_needed)


def _limiter(settings: Settings, stats: LimitStats, clock: Callable[[], float] | None) -> Limiter:
    cfg = settings.limits
    url = cfg.redis_url or settings.redis_url
    if not url:
        return LocalLimiter() if clock is None else LocalLimiter(clock)
    from .redis_limiter import RedisLimiter

    return RedisLimiter(
        url,
        prefix=cfg.redis_prefix,
        timeout_s=cfg.redis_timeout_s,
        fail_open=cfg.on_redis_error == "allow",
        stats=stats,
        clock=clock,
    )
