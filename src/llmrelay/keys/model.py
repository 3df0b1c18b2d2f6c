"""What a virtual API key is: its public identity, what it may reach, its limits and budgets.

The secret itself never lives here (only its hash, in the key store): a ``VirtualKey`` is safe to
log, cache and hand to every stage. The master key resolves to an admin ``VirtualKey``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import GuardrailPolicy


@dataclass(frozen=True, slots=True)
class KeyLimits:
    rpm: int | None = None  # requests per minute
    tpm: int | None = None  # tokens per minute (prompt + max_tokens reserved)


@dataclass(frozen=True, slots=True)
class VirtualKey:
    id: str  # public id, e.g. "key_01J..." (never the secret)
    owner: str
    models: tuple[str, ...] = ()  # allowed models / route aliases; () = all
    limits: KeyLimits = KeyLimits()
    budget_daily_usd: Decimal | None = None
    budget_monthly_usd: Decimal | None = None
    priority: int = 0  # default priority (higher first)
    metadata: Mapping[str, str] = field(default_factory=dict)
    admin: bool = False  # the master key resolves to an admin VirtualKey
    # Its guardrail policy: a name under ``guardrail_policies``, or inline overrides; it only
    # tightens the route's (guardrails/policy.py). None: the route's policy as it is.
    guardrails: str | GuardrailPolicy | None = None

    def allows(self, model: str) -> bool:
        """Whether this key may call ``model`` (a client-facing model name or alias)."""
        return self.admin or not self.models or model in self.models
