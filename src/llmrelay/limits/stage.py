"""The ``limit`` stage: requests and tokens per minute per API key, per end user and per model.

All the buckets of a request are checked and taken from in one step (one Redis script when the
limits are shared), all or nothing. Over any of them: a 429 in the route's format, with
``Retry-After`` and OpenAI's ``x-ratelimit-*`` headers, which successful responses carry too.

Tokens are reserved before the call (the prompt counted with our tokenizer plus ``max_tokens`` or
``limits.default_max_tokens``) and reconciled once its usage is known: the difference is given
back (or taken) in the background, never delaying the response. A cache hit gives all of them
back (no provider was paid); a failed call with no usage too. Requests are not given back.

Where it sits (config ``pipeline``): right inside ``record``, so a refusal is on record and in the
metrics, and before everything else, so a refused request costs nothing more (no guardrail scan,
no cache lookup). Cache hits count as requests: they still cost the gateway, and a limit that a
client can get around by repeating itself is no limit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..config import LimitsSettings, RateLimits
from ..errors import GatewayError, RateLimitError
from ..pipeline import Call, Handler, Result, watch_stream
from ..types import ChatResponse, Usage
from .buckets import Limit, Limiter, reserved_tokens, too_large_error
from .stats import LimitStats

if TYPE_CHECKING:
    from ..relay import Relay

_UNITS = {"requests": ("requests", "RPM"), "tokens": ("tokens", "TPM")}
_SCOPE_KINDS = {"k": "key", "u": "user", "m": "model"}  # a bucket's first letter -> metric label


class LimitStage:
    def __init__(
        self,
        settings: LimitsSettings,
        limiter: Limiter,
        stats: LimitStats,
        models: dict[str, RateLimits],
        tokenizers: dict[str, str],
    ) -> None:
        self.user = settings.user if settings.user.on else None
        self.default_max_tokens = settings.default_max_tokens
        self.limiter = limiter
        self.stats = stats
        self.models = models  # client-facing model name -> its limits (only those with some)
        self.tokenizers = tokenizers  # client-facing model name -> an upstream id to count tokens with

    @classmethod
    def from_relay(cls, relay: Relay) -> LimitStage | None:
        runtime = relay.limits
        if runtime is None or not runtime.stage_needed:
            return None
        return cls(
            runtime.settings,
            runtime.limiter,
            runtime.stats,
            {m.name: m.limits for m in relay.settings.models if m.limits is not None and m.limits.on},
            {entry.name: entry.deployments[0].upstream for entry in relay.catalog},
        )

    async def __call__(self, call: Call, next: Handler) -> Result:
        limits = await self.limits_of(call)
        if not limits:
            return await next(call)
        decision = await self.limiter.acquire(limits)
        if decision.levels is not None:
            call.response_headers.update(ratelimit_headers(limits, decision.levels))
        if not decision.allowed:
            raise self._refused(limits, decision.levels, decision.retry_after)
        tokens = [limit for limit in limits if limit.kind == "tokens"]
        if not tokens:
            return await next(call)
        try:
            result = await next(call)
        except GatewayError as error:
            self._settle(call, tokens, error.usage, answered=False)
            raise
        except BaseException:
            self._settle(call, tokens, None, answered=False)
            raise
        if isinstance(result, ChatResponse):
            self._settle(call, tokens, result.usage, answered=True)
            return result
        return watch_stream(
            result,
            lambda usage, failure: self._settle(
                call, tokens, usage, answered=failure is None or usage is not None
            ),
        )

    async def limits_of(self, call: Call) -> list[Limit]:
        """The buckets this call takes from: its key's, its end user's, its model's."""
        request = call.request
        key = call.key
        scopes: list[tuple[str, str, int | None, int | None]] = []  # bucket, who, rpm, tpm
        if key is not None and (key.limits.rpm is not None or key.limits.tpm is not None):
            scopes.append((f"k:{key.id}", f"API key {key.id}", key.limits.rpm, key.limits.tpm))
        if self.user is not None and request.user:
            owner = key.id if key is not None else "-"
            bucket = f"u:{owner}:{_short(request.user)}"
            scopes.append((bucket, f"user {request.user!r}", self.user.rpm, self.user.tpm))
        model = self.models.get(request.model)
        if model is not None:
            scopes.append((f"m:{request.model}", f"model {request.model}", model.rpm, model.tpm))
        if not scopes:
            return []
        limits: list[Limit] = []
        tokens = 0
        for bucket, scope, rpm, tpm in scopes:
            if rpm is not None:
                limits.append(Limit(f"{bucket}:r", rpm, 1, "requests", scope))
            if tpm is not None:
                if not tokens:
                    upstream = self.tokenizers.get(request.model, request.model)
                    tokens = await reserved_tokens(request, upstream, self.default_max_tokens)
                if tokens > tpm:
                    raise too_large_error(tokens, tpm, scope)
                limits.append(Limit(f"{bucket}:t", tpm, tokens, "tokens", scope))
        return limits

    def _refused(
        self, limits: Sequence[Limit], levels: Sequence[float] | None, retry_after: float
    ) -> RateLimitError:
        # Name the bucket that refused (the one needing the longest wait, when several did).
        worst, level = limits[0], 0.0
        if levels is not None:
            worst, level = max(
                zip(limits, levels, strict=True), key=lambda pair: (pair[0].amount - pair[1]) / pair[0].rate
            )
        self.stats.reject(_SCOPE_KINDS[worst.key[0]])
        noun, short = _UNITS[worst.kind]
        return RateLimitError(
            f"Rate limit reached for {worst.scope} on {noun} per min ({short}): limit {worst.per_minute}, "
            f"remaining {max(0, int(level))}, requested {worst.amount:g}. Try again in {_duration(retry_after)}.",
            retry_after=retry_after,
        )

    def _settle(self, call: Call, tokens: list[Limit], usage: Usage | None, *, answered: bool) -> None:
        """Give back (or take) the difference between the tokens reserved and those spent."""
        if call.status == "cache_hit":
            used = 0
        elif usage is not None:
            used = usage.prompt_tokens + usage.completion_tokens
        elif answered:
            return  # an answer without usage: keep the reservation, the best guess there is
        else:
            used = 0
        reserved = tokens[0].amount
        if used != reserved:
            self.limiter.adjust([_amount(limit, used - reserved) for limit in tokens])


def _amount(limit: Limit, amount: float) -> Limit:
    return Limit(limit.key, limit.per_minute, amount, limit.kind, limit.scope)


def _short(user: str) -> str:
    """The end user's id as a bucket name: a digest when long (the field is the client's to fill)."""
    return user if len(user) <= 64 and ":" not in user else hashlib.sha256(user.encode()).hexdigest()[:32]


def ratelimit_headers(limits: Sequence[Limit], levels: Sequence[float]) -> dict[str, str]:
    """OpenAI's ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``, each for the bucket of
    that kind with the least left (the one that refuses first)."""
    headers: dict[str, str] = {}
    for kind in ("requests", "tokens"):
        pairs = [(limit, level) for limit, level in zip(limits, levels, strict=True) if limit.kind == kind]
        if not pairs:
            continue
        limit, level = min(pairs, key=lambda pair: pair[1])
        headers[f"x-ratelimit-limit-{kind}"] = str(limit.per_minute)
        headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, int(level)))
        headers[f"x-ratelimit-reset-{kind}"] = _duration(limit.reset_s(level))
    return headers


def _duration(seconds: float) -> str:
    """Go-style durations as OpenAI writes them: ``20ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    minutes, rest = divmod(round(seconds, 3), 60)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text
