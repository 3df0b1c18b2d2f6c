"""Fault injection: which fault (if any) a request gets, and the error faults themselves.

Kinds: ``429``, ``500``, ``503`` (error responses in the route's wire format), ``hang`` (no answer
until the client gives up), ``drop`` (connection closed without a response), ``truncate`` (stream
cut before its end / body cut mid-JSON), ``malformed`` (200 with a body or SSE data that is not
JSON) and ``stall`` (a stream goes silent halfway, connection open; a non-streamed request hangs).
The first three are raised as errors here; the rest are acted out by the app.
"""

from __future__ import annotations

import random

from ..errors import GatewayError, InvalidRequestError, RateLimitError
from .settings import FAULT_KINDS

FAULT_HEADER = "x-sim-fault"


class SimulatedServerError(GatewayError):
    status = 500
    openai_type = "server_error"
    anthropic_type = "api_error"


class SimulatedOverloaded(GatewayError):
    status = 503
    openai_type = "server_error"
    anthropic_type = "overloaded_error"


class SimulatedRateLimit(RateLimitError):
    def headers(self) -> dict[str, str]:
        # Retry-After in whole seconds (as the providers send it) plus the exact value in ms,
        # which both official SDKs prefer when present.
        headers = super().headers()
        if self.retry_after is not None:
            headers["retry-after-ms"] = str(round(self.retry_after * 1000))
        return headers


class FaultPicker:
    """Rolls for faults with one seeded RNG, so a seed gives a reproducible sequence of faults."""

    def __init__(self, seed: int | None) -> None:
        self._rng = random.Random(seed)

    def pick(self, forced: str | None, probabilities: dict[str, float]) -> str | None:
        if forced:
            if forced not in FAULT_KINDS:
                raise InvalidRequestError(
                    f"Unknown {FAULT_HEADER} {forced!r}; expected one of {', '.join(FAULT_KINDS)}.",
                    param=FAULT_HEADER,
                )
            return forced
        if not probabilities:
            return None  # no roll: requests without faults configured leave the sequence alone
        roll = self._rng.random()
        total = 0.0
        for kind in FAULT_KINDS:  # a fixed order, so the same seed means the same faults
            total += probabilities.get(kind, 0.0)
            if roll < total:
                return kind
        return None


def error_for(kind: str, retry_after: float) -> GatewayError | None:
    """The error response a fault kind stands for, or None if the fault is not an error response."""
    if kind == "429":
        return SimulatedRateLimit(
            "Rate limit reached (simulated). Please retry later.", retry_after=retry_after
        )
    if kind == "500":
        return SimulatedServerError("The server had an error processing your request (simulated).")
    if kind == "503":
        return SimulatedOverloaded("The server is overloaded (simulated). Please retry later.")
    return None
