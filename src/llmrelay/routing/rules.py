"""Explicit routing rules: a request's metadata, headers, API key, user or the alias it named ->
a tier. Checked before the route's router (whatever it is); the first rule that matches decides."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase

from ..observability.records import key_id
from ..pipeline import Call
from .base import Verdict
from .settings import Match, RuleSettings


class Rules:
    kind = "rules"

    def __init__(self, rules: Sequence[RuleSettings], default: str) -> None:
        self.rules = tuple(rules)
        self.default = default  # as a router: the tier when no rule matches

    def match(self, call: Call) -> Verdict | None:
        for i, rule in enumerate(self.rules):
            if _holds(rule, call):
                return Verdict(None, f"rule {i} ({_describe(rule)})", tier=rule.tier)
        return None

    async def verdict(self, call: Call) -> Verdict:
        return self.match(call) or Verdict(None, "no rule matched: the default tier", tier=self.default)


def _holds(rule: RuleSettings, call: Call) -> bool:
    request = call.request
    return (
        _all(rule.metadata, request.metadata or {})
        and _all({k.lower(): v for k, v in rule.header.items()}, call.headers)
        and _one(rule.key, key_id(call.principal))
        and _one(rule.user, request.user)
        and _one(rule.alias, request.model)  # still the name the client sent: routing comes after
    )


def _all(wanted: Mapping[str, Match], values: Mapping[str, str]) -> bool:
    return all(_one(pattern, values.get(name)) for name, pattern in wanted.items())


def _one(pattern: Match | None, value: str | None) -> bool:
    if pattern is None:
        return True
    if value is None:
        return False
    patterns = (pattern,) if isinstance(pattern, str) else pattern
    return any(fnmatchcase(value, p) for p in patterns)


def _describe(rule: RuleSettings) -> str:
    parts = [f"metadata.{k}" for k in rule.metadata] + [f"header {k}" for k in rule.header]
    parts += [name for name in ("key", "user", "alias") if getattr(rule, name) is not None]
    return ", ".join(parts)
