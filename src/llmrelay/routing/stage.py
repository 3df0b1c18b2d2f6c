"""The ``route`` stage: a request naming a route (``model: auto``) leaves it naming a model.

It sits right inside ``record``, before the guardrails and the cache, so everything after it works
on the chosen model: its guardrail policy, its cache namespace and its retries and fallbacks (a
cached answer is one the chosen model gave; an experiment's variants never share answers). Per call:
1. an experiment, if the route runs one, assigns a variant (experiments.py);
2. the route's rules, then its router, give a score or a tier; thresholds turn a score into a tier;
3. a tier whose model lacks what the request needs (tools, JSON schema, vision...) gives way to the
   next stronger one that has it;
4. the decision goes on the record (``extra["route"]``: route, router, tier, model, score, reason,
   experiment and variant) and in the ``x-llmrelay-route`` header; the response's ``model`` is the
   model that answered;
5. once the usage is known, what the same usage costs on the route's frontier model, and what the
   route saved against it, join the decision (none for a cache hit: the cache saved that one).
With no route configured the stage is not in the chain at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..catalog import ModelEntry
from ..pipeline import Call, Handler, Result, watch_stream
from ..reliability.capabilities import missing_capabilities
from ..types import ChatRequest, ChatResponse, Message, Usage
from .base import Router, Verdict
from .classifier import Classifier
from .experiments import Experiment
from .heuristic import Heuristic
from .rules import Rules
from .settings import (
    ClassifierRouter,
    HeuristicRouter,
    RouterSettings,
    RouteSettings,
    RulesRouter,
    VariantSettings,
)

if TYPE_CHECKING:
    from ..relay import Relay

HEADER = "x-llmrelay-route"
VARIANT_HEADER = "x-llmrelay-variant"


@dataclass(frozen=True, slots=True)
class Arm:
    """What one variant runs (or the route itself, without an experiment): a router and the score
    from which each tier after the first is chosen, or one fixed model; and maybe a system prompt."""

    router: Router | None
    thresholds: tuple[tuple[str, float], ...] = ()
    model: ModelEntry | None = None
    system: str | None = None


class Route:
    def __init__(self, settings: RouteSettings, relay: Relay) -> None:
        self.name = settings.name
        self.settings = settings
        self.catalog = relay.catalog
        self.tiers = [t.name for t in settings.tiers]
        self.models = {t.name: relay.catalog.get(t.model) for t in settings.tiers}
        self.frontier = self.models[settings.frontier_tier]
        self.rules = Rules(settings.rules, settings.default or settings.frontier_tier)
        self.main = self._arm(settings.router, relay)
        self.experiment: Experiment[Arm] | None = None
        if settings.experiment is not None:
            arms = [self._variant(v, relay) for v in settings.experiment.variants]
            self.experiment = Experiment(settings.experiment.name or self.name, settings.experiment, arms)

    def _arm(self, settings: RouterSettings, relay: Relay) -> Arm:
        router = _router(settings, self, relay)
        return Arm(router, self._thresholds(getattr(router, "threshold", None)))

    def _variant(self, variant: VariantSettings, relay: Relay) -> Arm:
        if variant.model is not None:
            return Arm(None, model=relay.catalog.get(variant.model), system=variant.system)
        arm = self._arm(variant.router, relay) if variant.router is not None else self.main
        return Arm(arm.router, arm.thresholds, system=variant.system)

    def _thresholds(self, trained: float | None) -> tuple[tuple[str, float], ...]:
        upper = self.settings.tiers[1:]
        if upper and upper[0].min_score is not None:
            return tuple((t.name, t.min_score) for t in upper if t.min_score is not None)
        if trained is not None and len(upper) == 1:
            return ((upper[0].name, trained),)  # the model's calibrated operating point
        return tuple((t.name, (i + 1) / len(self.tiers)) for i, t in enumerate(upper))

    async def decide(self, call: Call) -> tuple[ModelEntry, dict[str, Any]]:
        arm, decision = self.main, {"route": self.name}
        if self.experiment is not None:
            assigned = self.experiment.assign(call)
            arm = assigned.variant
            decision.update(experiment=self.experiment.name, variant=assigned.name, assigned_by=assigned.by)
        if arm.system is not None:
            call.request = _with_system(call.request, arm.system)
        if arm.model is not None:
            tier = next((t for t, m in self.models.items() if m is arm.model), None)  # if one serves it
            decision.update(router="variant", tier=tier, model=arm.model.name, score=None)
            decision["reason"] = f"variant {decision['variant']} sends every call to {arm.model.name}"
            return arm.model, decision
        verdict = self.rules.match(call)
        kind = "rules"
        if verdict is None:
            assert arm.router is not None
            verdict, kind = await arm.router.verdict(call), arm.router.kind
        tier = verdict.tier or _tier_for(verdict.score, self.tiers[0], arm.thresholds)
        tier, reason = self._able(tier, call.request, verdict)
        model = self.models[tier]
        decision.update(router=kind, tier=tier, model=model.name, score=verdict.score, reason=reason)
        return model, decision

    def _able(self, tier: str, request: ChatRequest, verdict: Verdict) -> tuple[str, str]:
        """``tier``, or the next stronger one whose model can serve the request."""
        missing = missing_capabilities(request, self.models[tier].settings.capabilities)
        if not missing:
            return tier, verdict.reason
        for stronger in self.tiers[self.tiers.index(tier) + 1 :]:
            if not missing_capabilities(request, self.models[stronger].settings.capabilities):
                return stronger, f"{verdict.reason}; {tier} lacks {', '.join(missing)}"
        return tier, verdict.reason  # none can: the executor says so (a 400)

    def savings(self, call: Call, usage: Usage | None) -> None:
        """What this usage costs on the frontier model, and what the route saved, on the record."""
        deployment = call.deployment
        if usage is None or deployment is None or call.status == "cache_hit":
            return
        frontier = self.catalog.cost(self.frontier.deployments[0], usage)
        paid = self.catalog.cost(deployment, usage)
        if frontier is None or paid is None:
            return  # a price is unknown: no figure rather than a guessed one
        decision = call.extra["route"]
        decision["frontier_cost_usd"] = format(frontier, "f")
        decision["saved_usd"] = format(frontier - paid, "f")


class RouteStage:
    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = {name: route for route in routes for name in route.settings.names}

    @classmethod
    def from_relay(cls, relay: Relay) -> RouteStage | None:
        """The stage, or None when no route is configured (then it is left out of the chain)."""
        routes = relay.settings.routes
        return cls([Route(r, relay) for r in routes]) if routes else None

    async def __call__(self, call: Call, next: Handler) -> Result:
        route = self.routes.get(call.request.model)
        if route is None:  # a model's own name, or no such model (execute says so)
            return await next(call)
        model, decision = await route.decide(call)
        call.extra["route"] = decision
        call.request = call.request.model_copy(update={"model": model.name})
        call.response_headers[HEADER] = f"{route.name}:{decision.get('tier') or model.name}"
        if "variant" in decision:
            call.response_headers[VARIANT_HEADER] = decision["variant"]
        result = await next(call)
        if isinstance(result, ChatResponse):
            route.savings(call, result.usage)
            return result
        # Savings only from a stream that ended normally (a broken one's usage is partial).
        return watch_stream(
            result, lambda usage, failure: route.savings(call, usage) if failure is None else None
        )


def _router(settings: RouterSettings, route: Route, relay: Relay) -> Router:
    if isinstance(settings, HeuristicRouter):
        return Heuristic(settings)
    if isinstance(settings, ClassifierRouter):
        return Classifier(settings, relay.handle, settings.on_error or route.settings.frontier_tier)
    if isinstance(settings, RulesRouter):
        return route.rules
    from .trained_router import Trained  # its model's dependencies only when a route uses one

    return Trained(settings)


def _tier_for(score: float | None, first: str, thresholds: Sequence[tuple[str, float]]) -> str:
    tier = first
    for name, lowest in thresholds:
        if score is not None and score >= lowest:
            tier = name
    return tier


def _with_system(request: ChatRequest, system: str) -> ChatRequest:
    messages = [Message(role="system", content=system), *request.messages]
    return request.model_copy(update={"messages": messages})
