"""Retry and fallback as a sans-I/O generator: it decides, the executor acts.

``attempt_plan`` yields ``Try(deployment)`` or ``Wait(seconds)``. After a ``Try`` the executor sends
back ``None`` (success: the plan ends) or the ``GatewayError`` it got; after a ``Wait`` it sends
``None`` once it has waited, or an error when it cannot (the wait would pass the deadline), which
ends the plan with what the attempts so far failed with (a 429 keeps its Retry-After for the client). When nothing is left to try the plan raises the error for the client:
a client error at once (never retried), else ``AllAttemptsFailed`` naming every attempt. No clock
and no sleeping here, so every path is tested without waiting (tests/test_policy.py).

Rules, in order of the chain (the model, then its ``fallbacks``):
- a model that cannot serve the request (tools, JSON schema, images, context window) is skipped;
- within a model, up to ``max_attempts`` tries, each on a deployment the balancer picks among those
  whose breaker allows it (a deployment that just failed is avoided while another is available);
- only 429, 5xx, timeouts, connection and protocol failures are retried; any other 4xx goes to the
  client as it is, except "context length exceeded", which moves to a model with a larger window;
- before retrying the same deployment: exponential backoff with full jitter; a 429's Retry-After
  puts that deployment in cooldown, and is waited out only when nothing else is left to try and
  it is no longer than ``retry_after_max_s``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

from ..catalog import Deployment, ModelEntry
from ..config import ExecuteSettings
from ..errors import (
    AllAttemptsFailed,
    GatewayError,
    InvalidRequestError,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamRateLimited,
)
from ..types import ChatRequest
from .capabilities import missing_capabilities


@dataclass(frozen=True, slots=True)
class Try:
    deployment: Deployment


@dataclass(frozen=True, slots=True)
class Wait:
    seconds: float


Step = Try | Wait
Plan = Generator[Step, GatewayError | None, None]
# (model, deployment keys to avoid, whether cooling-down ones may be chosen) -> a deployment or None
Pick = Callable[[ModelEntry, frozenset[str], bool], Deployment | None]


def retryable(error: GatewayError) -> bool:
    """Worth another try: the upstream's trouble, not the request's."""
    return isinstance(error, UpstreamError) and not isinstance(error, UpstreamBadRequest)


def context_too_long(error: GatewayError) -> bool:
    return error.code == "context_length_exceeded"


def backoff(attempt: int, settings: ExecuteSettings, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(max, base * 2^(attempt-1))] (AWS architecture blog)."""
    return rng.uniform(0, min(settings.backoff_max_s, settings.backoff_base_s * 2 ** (attempt - 1)))


def attempt_plan(
    chain: Sequence[ModelEntry],
    request: ChatRequest,
    settings: ExecuteSettings,
    pick: Pick,
    *,
    prompt_tokens: Callable[[], int],
    cooldown: Callable[[str, float], None],
    rng: random.Random,
) -> Plan:
    errors: list[GatewayError] = []
    skipped: list[str] = []
    unfit: list[str] = []
    min_window = 0  # after a context-length error, only larger windows are worth trying
    for position, entry in enumerate(chain):
        reason = _unfit(entry, request, min_window, prompt_tokens)
        if reason is not None:
            unfit.append(reason)
            skipped.append(f"{entry.name}: {reason}")
            continue
        more_models = position < len(chain) - 1
        failed: set[str] = set()
        retry_after: float | None = None  # from this model's last 429
        for attempt in range(1, settings.max_attempts + 1):
            deployment = pick(entry, frozenset(failed), False) or pick(entry, frozenset(), False)
            if deployment is None and retry_after is not None and not more_models:
                if retry_after > settings.retry_after_max_s:
                    break
                interrupted = yield Wait(retry_after)  # nothing else left: honour Retry-After, then retry
                if interrupted is not None:
                    raise AllAttemptsFailed.from_errors(errors, [*skipped, interrupted.message])
                deployment = pick(entry, frozenset(), True)
            elif deployment is None and not more_models:
                # Cooldowns only steer traffic elsewhere; with nowhere else to go, ask anyway: the
                # upstream's own answer (and Retry-After) is better than our guess.
                deployment = pick(entry, frozenset(), True)
            if deployment is None:
                skipped.append(f"{entry.name}: no deployment available (circuit open or cooling down)")
                break
            error = yield Try(deployment)
            if error is None:
                return
            errors.append(error)
            if not retryable(error):
                if context_too_long(error):
                    min_window = max(min_window, entry.settings.context_window)
                    break
                raise error
            failed.add(deployment.key)
            retry_after = error.retry_after if isinstance(error, UpstreamRateLimited) else None
            if retry_after:
                cooldown(deployment.key, retry_after)
            elif (
                attempt < settings.max_attempts
                and pick(entry, frozenset(failed), False) is None  # only the one that failed is left
                and pick(entry, frozenset(), False) is not None  # and its breaker has not just opened
            ):
                interrupted = yield Wait(backoff(attempt, settings, rng))  # only this one is left: back off
                if interrupted is not None:
                    raise AllAttemptsFailed.from_errors(errors, [*skipped, interrupted.message])
    if len(unfit) == len(chain):  # the request itself is the problem: a 400, not an outage
        raise InvalidRequestError(" ".join(unfit), param="model", code="unsupported_capability")
    raise AllAttemptsFailed.from_errors(errors, skipped)


def _unfit(
    entry: ModelEntry, request: ChatRequest, min_window: int, prompt_tokens: Callable[[], int]
) -> str | None:
    missing = missing_capabilities(request, entry.settings.capabilities)
    if missing:
        return f"the model '{entry.name}' does not support {', '.join(missing)}."
    window = entry.settings.context_window
    if window <= min_window:
        return f"its context window ({window}) is no larger than one already exceeded"
    if may_exceed(request, window) and prompt_tokens() + (request.output_limit or 0) > window:
        return f"the request does not fit its context window ({window} tokens)"
    return None


def may_exceed(request: ChatRequest, window: int) -> bool:
    """Cheap bounds before counting tokens: a token is at least one byte of text, and a character
    at most four bytes."""
    texts = [m.text() for m in request.messages if m.content is not None]
    budget = window - (request.output_limit or 0)
    if 4 * sum(map(len, texts)) <= budget:
        return False
    return sum(len(t.encode()) for t in texts) > budget
