"""What every router gives the route stage: a ``Verdict`` (a score, or a tier it names itself)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..pipeline import Call
from ..types import ChatRequest


@dataclass(frozen=True, slots=True)
class Verdict:
    score: float | None  # higher = harder; the route's thresholds turn it into a tier
    reason: str
    tier: str | None = None  # set when the router names the tier itself (a rule, a failure default)


class Router(Protocol):
    kind: str

    async def verdict(self, call: Call) -> Verdict: ...


def last_user_text(request: ChatRequest) -> str:
    """The text a heuristic or classifier judges: the conversation's last user message."""
    for message in reversed(request.messages):
        if message.role == "user":
            return message.text()
    return ""
