"""The detection engines the guard stages use, built once at start-up and shared by the routes.

The engines (injection.py, pii.py, moderation.py, limits.py) are libraries with no knowledge of
the pipeline; this is where a route's policy meets them. Each is loaded only when some route's
policy needs it, so a gateway without guardrails never imports them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Self

from ..config import GuardMode, GuardrailPolicy, ModerationGuard
from ..errors import GatewayError, UpstreamUnavailable
from ..pipeline import Call
from .moderation import LocalModerator, Moderator, ProviderModerator
from .policy import KeyPolicies, label
from .verdicts import found, note

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from ..providers.base import HTTPProvider
    from ..relay import Relay
    from .injection import InjectionDetector
    from .pii import PiiRedactor


class Engines:
    def __init__(self, providers: dict[str, HTTPProvider]) -> None:
        self.providers = providers
        self._injection: InjectionDetector | None = None
        self._moderators: dict[tuple[str | None, str, float], Moderator] = {}
        self._redactors: dict[tuple[str, ...], PiiRedactor] = {}

    def prepare(self, policy: GuardrailPolicy, *, input: bool, output: bool) -> None:
        """Load what ``policy`` needs now, so a missing engine or model fails the start, not a call."""
        if input and policy.injection.mode != "off":
            self.injection()
        if (input and policy.pii.input != "off") or (output and policy.pii.output != "off"):
            self.redactor(policy.pii.types)
        if (input and policy.moderation.input != "off") or (output and policy.moderation.output != "off"):
            self.moderator(policy.moderation)

    def injection(self) -> InjectionDetector:
        if self._injection is None:
            from .injection import InjectionDetector  # numpy and the model file: only when used

            self._injection = InjectionDetector.load()
        return self._injection

    def redactor(self, types: tuple[str, ...]) -> PiiRedactor:
        redactor = self._redactors.get(types)
        if redactor is None:
            from .pii import PiiRedactor

            redactor = self._redactors[types] = PiiRedactor(types or None)
        return redactor

    def moderator(self, guard: ModerationGuard) -> Moderator:
        key = (guard.provider, guard.model, guard.timeout_s)
        moderator = self._moderators.get(key)
        if moderator is None:
            if guard.provider is None:
                moderator = LocalModerator()
            else:
                moderator = ProviderModerator(self.providers[guard.provider], guard.model, guard.timeout_s)
            self._moderators[key] = moderator
        return moderator

    async def moderate(
        self, call: Call, stage: str, mode: GuardMode, guard: ModerationGuard, texts: list[str]
    ) -> None:
        """Moderate ``texts`` for ``call`` and act on the result by ``mode`` (verdicts.found)."""
        if not texts:
            return
        try:
            results = await self.moderator(guard).moderate(texts)
        except GatewayError as exc:
            # The endpoint failed: on_error says whether that stops the call (a 503) or not.
            note(call, "moderation", stage, "error", reason=f"{type(exc).__name__}: {exc.message}")
            if guard.on_error == "block":
                raise UpstreamUnavailable(
                    f"The moderation check could not be made ({exc.message}); this route requires it.",
                    code="guardrail_moderation_unavailable",
                ) from None
            log.warning(
                "moderation unavailable for %s (%s); allowed by on_error: allow", call.id, exc.message
            )
            return
        scores: dict[str, float] = {}
        for result in results:
            for category, score in result.scores.items():
                scores[category] = max(score, scores.get(category, 0.0))
        flagged = sorted(
            {c for r in results if r.flagged for c in r.categories if _counts(c, guard.categories)}
        )
        top = max(scores.values(), default=0.0)
        if not flagged:
            note(call, "moderation", stage, "pass", score=round(top, 4))
            return
        what = "input" if stage == "input" else "answer"
        found(
            call,
            "moderation",
            stage,
            mode,
            f"The {what} was blocked by the moderation guardrail (categories: {', '.join(flagged)}).",
            score=round(max(scores.get(c, 1.0) for c in flagged), 4),
            categories=flagged,
        )


def _counts(category: str, only: tuple[str, ...]) -> bool:
    """Whether ``category`` is one the policy acts on (``violence`` covers ``violence/graphic``)."""
    return not only or any(category == c or category.startswith(c + "/") for c in only)


class RouteGuard:
    """What both guard stages share: a policy per route (for routes that check this ``side``), an
    API key's own policy on top (``policy.py``: it only tightens the route's), the engines those
    policies need loaded at start, and the stage left out when nothing needs it."""

    side: str  # "input" or "output"

    def __init__(
        self, policies: Mapping[str, GuardrailPolicy], engines: Engines, keys: KeyPolicies | None = None
    ) -> None:
        self.policies = dict(policies)  # model name -> its policy; a model without one is not checked
        self.engines = engines
        self.keys = keys  # None: no key presented here can carry a policy of its own
        named = keys.named() if keys is not None else []
        for policy in [*self.policies.values(), *named]:
            engines.prepare(policy, input=self.side == "input", output=self.side == "output")

    @classmethod
    def from_relay(cls, relay: Relay) -> Self | None:
        """The stage, or None when neither a route nor a key can need this side (then it is left
        out of the chain)."""
        settings = relay.settings
        routes = {
            entry.name: settings.guardrails.merged(entry.settings.guardrails) for entry in relay.catalog
        }
        policies = {name: policy for name, policy in routes.items() if getattr(policy, f"{cls.side}_on")}
        keys = KeyPolicies(settings, routes, cls.side) if relay.keys.guardrails_possible else None
        if not policies and keys is None:
            return None
        return cls(policies, Engines(relay.providers), keys)

    def policy(self, call: Call) -> GuardrailPolicy | None:
        """The call's policy on this side, or None when it checks nothing here."""
        key = call.key
        if key is None or key.guardrails is None or self.keys is None:
            return self.policies.get(call.request.model)
        call.extra["guardrail_policy"] = label(key.guardrails)
        return self.keys.policy(call.request.model, key)
