"""Experiments: a route's traffic split between variants by weight, sticky per end user.

A caller's variant is a hash of the experiment's name and who they are (the request's ``user``, or
the API key with ``sticky: key``), so it is the same on every replica and after a restart, and
changing one variant's weight moves only the share of callers it must. A request that does not say
who it is gets a variant by its request id: random, call by call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Generic, TypeVar

from ..observability.records import key_id
from ..pipeline import Call
from .settings import ExperimentSettings

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Assignment(Generic[T]):
    variant: T
    name: str
    by: str  # "user", "key" or "request"


class Experiment(Generic[T]):
    def __init__(self, name: str, settings: ExperimentSettings, arms: Sequence[T]) -> None:
        self.name = name
        self.sticky = settings.sticky
        self.names = [v.name for v in settings.variants]
        self.arms = list(arms)  # what each variant runs, in the order of settings.variants
        total = sum(v.weight for v in settings.variants)
        self.bounds = [b / total for b in accumulate(v.weight for v in settings.variants)]

    def assign(self, call: Call) -> Assignment[T]:
        who = call.request.user if self.sticky == "user" else key_id(call.principal)
        by = self.sticky
        if not who:
            who, by = call.id, "request"
        i = self.index(bucket(self.name, who))
        return Assignment(self.arms[i], self.names[i], by)

    def index(self, u: float) -> int:
        for i, bound in enumerate(self.bounds):
            if u < bound:
                return i
        return len(self.bounds) - 1  # u within float rounding of 1


def bucket(salt: str, who: str) -> float:
    """A stable point in [0, 1) for ``who`` (not Python's ``hash``: that changes per process)."""
    digest = hashlib.blake2b(f"{salt}\0{who}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64
