"""What every router gives the route stage: a ``Verdict`` (a score, or a tier it names itself)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..pipeline import Call


@dataclass(frozen=True, slots=True)
class Verdict:
    score: float | None  # higher = harder; the route's thresholds turn it into a tier
    reason: str
    tier: str | None = None  # set when the router names the tier itself (a rule, a failure default)


class Router(Protocol):
    kind: str

    async def verdict(self, call: Call) -> Verdict: ...
