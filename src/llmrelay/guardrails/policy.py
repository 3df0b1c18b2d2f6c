"""Which guardrail policy a call runs under: its route's, tightened by its API key's.

Precedence: ``guardrails:`` (global) -> ``models[].guardrails`` (the route; overrides field by field,
``GuardrailPolicy.merged``) -> the key's policy (``guardrails`` on the key: the name of a policy under
``guardrail_policies:``, or inline overrides). A key can only make its route's policy stricter:

- where the route runs no guard of a section (e.g. no injection check), the key's fields apply as
  they are: the key turns that guard on, its own way;
- where it does, each field the key sets is combined with the route's, the stricter winning: modes
  ``off < log < flag < block`` (PII: ``off < log < flag < redact < block``), the lower limit or
  injection threshold, ``scan: all``, ``tool_results``/``hold_streams``/``on_error: block``,
  ``when: always``, and the union of PII types and moderation categories (``[]``, all, covers
  every list). How the route runs the guard (moderation provider, model, timeout; JSON schema and
  re-ask) stays the route's.

So a platform team's blocking guards cannot be turned off by whoever holds a key; a key that wants
less than its route gets the route's policy (a looser route is a model entry of its own).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from ..config import GuardrailPolicy, Settings
from ..errors import ConfigError, PermissionDeniedError

if TYPE_CHECKING:
    from ..keys.model import VirtualKey

KeyPolicy = str | GuardrailPolicy  # a named policy, or inline overrides

_MODE = {"off": 0, "log": 1, "flag": 2, "block": 3}
_PII = {"off": 0, "log": 1, "flag": 2, "redact": 3, "block": 4}
_CACHE_MAX = 10_000  # (route, key) pairs remembered; past this the memory starts over


def _ranked(rank: dict[str, int]) -> Callable[[Any, Any], Any]:
    return lambda route, key: key if rank[key] > rank[route] else route


def _lower(route: int | None, key: int | None) -> int | None:
    """The lower of two limits (None: no limit)."""
    return route if key is None or (route is not None and route <= key) else key


def _threshold(route: float | None, key: float | None) -> float | None:
    """The lower injection threshold (lower flags more); None is the detector's own."""
    from .injection import DEFAULT_THRESHOLD  # only when the route checks injection (loaded anyway)

    def value(t: float | None) -> float:
        return DEFAULT_THRESHOLD if t is None else t

    return key if value(key) < value(route) else route


def _union(route: tuple[str, ...], key: tuple[str, ...]) -> tuple[str, ...]:
    """Both lists (types, categories); an empty list means all, which covers any other."""
    return () if not route or not key else tuple(sorted(set(route) | set(key)))


def _either(strict: Any) -> Callable[[Any, Any], Any]:
    return lambda route, key: strict if strict in (route, key) else route


_mode, _pii = _ranked(_MODE), _ranked(_PII)

# Per section: whether the route runs it, and how each field a key sets combines with the route's
# (a field not listed keeps the route's value).
_SECTIONS: dict[str, tuple[Callable[[Any], bool], dict[str, Callable[[Any, Any], Any]]]] = {
    "limits": (
        lambda g: g.on,
        {"mode": _mode, "max_input_chars": _lower, "max_input_tokens": _lower},
    ),
    "injection": (
        lambda g: g.mode != "off",
        {"mode": _mode, "threshold": _threshold, "scan": _either("all"), "tool_results": _either(True)},
    ),
    "moderation": (
        lambda g: g.input != "off" or g.output != "off",
        {
            "input": _mode,
            "output": _mode,
            "categories": _union,
            "on_error": _either("block"),
            "hold_streams": _either(True),
        },
    ),
    "pii": (
        lambda g: g.input != "off" or g.output != "off",
        {"input": _pii, "output": _pii, "types": _union},
    ),
    "json_": (
        lambda g: g.mode != "off",
        {
            "mode": _mode,
            "when": _either("always"),
            "schema_": lambda route, key: key if route is None else route,
        },
    ),
}


def tightened(route: GuardrailPolicy, key: GuardrailPolicy | None) -> GuardrailPolicy:
    """``route``'s policy with ``key``'s overrides applied without loosening it (see above)."""
    if key is None:
        return route
    plain = route.merged(key)  # sections the route leaves off: the key's fields as they are
    update = {}
    for name in key.model_fields_set:
        base, override = getattr(route, name), getattr(key, name)
        runs, rules = _SECTIONS[name]
        if runs(base):
            fields = {
                f: rules[f](getattr(base, f), getattr(override, f))
                for f in override.model_fields_set
                if f in rules
            }
            update[name] = base.model_copy(update=fields)
    return plain.model_copy(update=update) if update else plain


def sides(key: GuardrailPolicy) -> set[str]:
    """The stages (``input``, ``output``) a key's overrides may turn a guard on in, on some route."""
    touched = key.model_fields_set
    found = set()
    if touched & {"limits", "injection"}:
        found.add("input")
    if "json_" in touched:
        found.add("output")
    for name in ("moderation", "pii"):
        if name in touched:
            found |= {side for side in ("input", "output") if side in getattr(key, name).model_fields_set}
    return found


def overrides(settings: Settings, policy: KeyPolicy) -> GuardrailPolicy:
    """A key's overrides: inline as they are, or the named policy's (KeyError when undefined)."""
    return settings.guardrail_policies[policy] if isinstance(policy, str) else policy


def problem(settings: Settings, policy: KeyPolicy) -> str | None:
    """What is wrong with a key's policy on this gateway, or None: an undefined name; inline, a
    moderation provider without a moderation endpoint, a bad JSON schema, or a guard whose stage
    the pipeline lacks (the config's own policies are checked by ``Settings`` itself)."""
    if isinstance(policy, str):
        if policy in settings.guardrail_policies:
            return None
        defined = ", ".join(sorted(settings.guardrail_policies)) or "none are defined"
        return f"unknown guardrail policy {policy!r} (guardrail_policies: {defined})"
    found = settings.moderation_problem(settings.guardrails.merged(policy))
    if found is not None:
        return f"moderation.provider: {found}"
    missing = [f"guard_{side}" for side in sorted(sides(policy)) if f"guard_{side}" not in settings.pipeline]
    if missing:
        return f"this gateway's pipeline has no {' or '.join(missing)} stage, which the policy needs"
    if "json_" in policy.model_fields_set and policy.json_.schema_ is not None:
        from .jsonmode import policy_spec

        try:
            policy_spec(policy.json_)
        except ConfigError as exc:
            return exc.message
    return None


class KeyPolicies:
    """The policies calls with a key's own policy run under, for one stage (``side``): resolved
    once per (route, key) and remembered, so a call pays a dictionary lookup."""

    def __init__(self, settings: Settings, routes: Mapping[str, GuardrailPolicy], side: str) -> None:
        self.settings = settings
        self.routes = dict(routes)  # every model's own policy, including those this side ignores
        self.side = side
        self._known: dict[tuple[str, str], tuple[KeyPolicy, GuardrailPolicy | None]] = {}

    def named(self) -> list[GuardrailPolicy]:
        """Every policy the config's key policies (named, and its keys' inline ones) can make of a
        route: what the engines load at start. Other keys' engines load on their first call."""
        configured = [*self.settings.guardrail_policies.values()]
        configured += [k.guardrails for k in self.settings.keys if isinstance(k.guardrails, GuardrailPolicy)]
        return [tightened(route, key) for key in configured for route in self.routes.values()]

    def policy(self, model: str, key: VirtualKey) -> GuardrailPolicy | None:
        """The policy of ``key``'s call to ``model`` on this side; None when it checks nothing here."""
        spec = key.guardrails
        assert spec is not None
        known = self._known.get((model, key.id))
        if known is not None and (known[0] is spec or known[0] == spec):
            return known[1]
        try:
            key_policy = overrides(self.settings, spec)
        except KeyError:
            # Stored with a name this gateway's config does not define: refuse rather than run the
            # call with less than its key was given.
            raise PermissionDeniedError(
                f"This API key ({key.id}) has the guardrail policy {spec!r}, which this gateway does "
                "not define; define it under guardrail_policies, or give the key another policy.",
                code="guardrail_policy_unknown",
            ) from None
        policy = tightened(self.routes.get(model, self.settings.guardrails), key_policy)
        resolved = policy if getattr(policy, f"{self.side}_on") else None
        if len(self._known) >= _CACHE_MAX:
            self._known.clear()
        self._known[(model, key.id)] = (spec, resolved)
        return resolved


def label(policy: KeyPolicy) -> str:
    """How the call record names a key's policy: its name, or ``inline``."""
    return policy if isinstance(policy, str) else "inline"


def as_json(policy: KeyPolicy) -> str | dict[str, Any]:
    """A key's policy as JSON: its name, or only the inline fields it sets (so that what it leaves
    to the route stays left when it is read back)."""
    if isinstance(policy, str):
        return policy
    return policy.model_dump(mode="json", by_alias=True, exclude_unset=True)


def cache_scope(policy: KeyPolicy) -> str:
    """What a shared cache adds to a keyed call's namespace: an answer checked under one key's
    policy (say, not redacted) must not be served to a key whose policy differs (say, redacting),
    since a cache hit does not pass the output guards again."""
    if isinstance(policy, str):
        return f"guardrails:{policy}"
    digest = hashlib.sha256(orjson.dumps(as_json(policy), option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"guardrails:inline:{digest[:16]}"


__all__ = [
    "KeyPolicies",
    "KeyPolicy",
    "as_json",
    "cache_scope",
    "label",
    "overrides",
    "problem",
    "sides",
    "tightened",
]
