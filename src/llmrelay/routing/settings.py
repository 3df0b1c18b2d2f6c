"""Routes in the config: model aliases (``auto``) that a router resolves to one of its tiers' models.

``Settings.routes`` holds these; ``check_routes`` checks what only the whole config can tell
(target models exist, tiers and thresholds agree, the pipeline has a ``route`` stage in its place).
No import from the rest of the package here: ``config.py`` imports this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

# Words that mark a request as analysis or reasoning: prefixes of whole words ("analy" matches
# analyse, analyze, analysis), case-insensitive.
ANALYSIS_WORDS: tuple[str, ...] = (
    "analy",
    "compar",
    "contrast",
    "evaluat",
    "assess",
    "prove",
    "proof",
    "deriv",
    "justif",
    "critiq",
    "explain why",
    "reasoning",
    "trade-off",
    "tradeoff",
    "optimi",
    "design",
    "architect",
    "debug",
    "refactor",
    "implement",
    "algorithm",
    "complexity",
    "theorem",
    "step by step",
    "calculat",
    "solve",
    "equation",
    "integral",
)


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HeuristicRouter(_Settings):
    """Complexity from the last user message: its length, code in it, words asking for analysis.
    Score = length_weight * min(words / long_words, 1) + code_weight (code present)
    + analysis_weight per distinct analysis word, capped at 1."""

    kind: Literal["heuristic"] = "heuristic"
    long_words: int = Field(default=300, ge=1)  # a message this long takes the whole length weight
    length_weight: float = Field(default=0.5, ge=0, le=1)
    code_weight: float = Field(default=0.5, ge=0, le=1)
    analysis_weight: float = Field(default=0.25, ge=0, le=1)
    analysis_words: tuple[str, ...] = ANALYSIS_WORDS
    # Regexes (multiline, case-sensitive) of which one found means code; default: heuristic.CODE.
    code_patterns: tuple[str, ...] | None = None


class ClassifierRouter(_Settings):
    """A cheap model, asked through llmrelay's own pipeline, rates the request SIMPLE or COMPLEX."""

    kind: Literal["classifier"] = "classifier"
    model: str  # a model of this config (not a route)
    timeout_s: float = Field(default=3.0, gt=0)
    on_error: str | None = None  # the tier when it fails, times out or answers neither; default: frontier
    cache_ttl_s: float = Field(default=3600.0, gt=0)  # its verdicts, per text
    cache_max_bytes: int = Field(default=4 * 1024 * 1024, ge=1)
    max_chars: int = Field(default=4000, ge=1)  # of the request's text sent to it
    prompt: str | None = None  # the system prompt; default: classifier.PROMPT


class TrainedRouter(_Settings):
    """A model file written by ``llmrelay router train``."""

    kind: Literal["trained"] = "trained"
    path: str


class RulesRouter(_Settings):
    """The route's ``rules`` alone; a request no rule matches goes to the route's ``default`` tier."""

    kind: Literal["rules"] = "rules"


def _router_shorthand(value: Any) -> Any:
    return {"kind": value} if isinstance(value, str) else value  # `router: heuristic`


RouterSettings = Annotated[
    HeuristicRouter | ClassifierRouter | TrainedRouter | RulesRouter,
    Field(discriminator="kind"),
    BeforeValidator(_router_shorthand),
]

Match = str | tuple[str, ...]  # one glob, or any of several


class RuleSettings(_Settings):
    """Conditions (all must hold; values are globs, a list means any of them) -> a tier."""

    tier: str
    metadata: dict[str, Match] = {}  # the request's metadata fields
    header: dict[str, Match] = {}  # request headers (any case)
    key: Match | None = None  # the API key's id as in the call log (key_...), never the key
    user: Match | None = None  # the request's `user`
    alias: Match | None = None  # the name the client sent (the route's name or one of its aliases)

    @model_validator(mode="after")
    def _has_a_condition(self) -> RuleSettings:
        if not (self.metadata or self.header or self.key or self.user or self.alias):
            raise ValueError(f"a rule for tier {self.tier!r} has no condition (use the route's `default`)")
        return self


class VariantSettings(_Settings):
    """One arm of an experiment: the route as configured, or with one thing changed."""

    name: str
    weight: float = Field(default=1.0, gt=0)
    model: str | None = None  # every call to this model, no routing
    router: RouterSettings | None = None  # another router over the route's tiers
    system: str | None = None  # a system message put first in the conversation

    @model_validator(mode="after")
    def _model_or_router(self) -> VariantSettings:
        if self.model is not None and self.router is not None:
            raise ValueError(f"variant {self.name!r} sets both `model` and `router`; choose one")
        return self


class ExperimentSettings(_Settings):
    name: str | None = None  # salts the assignment; default: the route's name. Renaming reshuffles.
    sticky: Literal["user", "key"] = "user"  # who keeps one variant: the `user` field, or the API key
    variants: tuple[VariantSettings, ...] = Field(min_length=2)

    @model_validator(mode="after")
    def _unique_names(self) -> ExperimentSettings:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"experiment variants must have distinct names: {names}")
        return self


class TierSettings(_Settings):
    name: str  # what rules, `frontier`, `default` and the record call it
    model: str  # a model of this config
    # The lowest router score that picks this tier (not for the first: it takes every score below
    # the second's). Default: the trained model's own threshold, else evenly spaced (two tiers: 0.5).
    min_score: float | None = Field(default=None, ge=0, le=1)


class RouteSettings(_Settings):
    """A model alias clients send as ``model``, resolved per request to one of its tiers' models."""

    name: str
    aliases: tuple[str, ...] = ()  # more names for the same route (old model names, say)
    tiers: tuple[TierSettings, ...] = Field(min_length=1)  # cheapest first
    frontier: str | None = None  # the tier savings are measured against; default: the last
    router: RouterSettings = HeuristicRouter()
    rules: tuple[RuleSettings, ...] = ()  # checked first, whatever the router
    default: str | None = None  # the `rules` router's tier when no rule matches; default: frontier
    experiment: ExperimentSettings | None = None
    # Request and response bodies in this route's call records; None: calllog.bodies.
    bodies: Literal["none", "redacted", "full"] | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    @property
    def frontier_tier(self) -> str:
        return self.frontier or self.tiers[-1].name


def check_routes(routes: Sequence[RouteSettings], models: Sequence[str], pipeline: Sequence[str]) -> None:
    """Raise ValueError naming the first thing wrong with ``routes`` in this config."""
    known = set(models)
    seen: set[str] = set()
    for route in routes:
        where = f"routes.{route.name}"
        for name in route.names:
            if name in known:
                raise ValueError(f"{where}: {name!r} is a model's name; a route needs a name of its own")
            if name in seen:
                raise ValueError(f"{where}: the name {name!r} is used by two routes")
            seen.add(name)
        _check_route(route, where, known)
    if not routes:
        return
    if "route" not in pipeline:
        raise ValueError("pipeline: routes are configured but the pipeline has no 'route' stage")
    at = pipeline.index("route")
    # Routing first, so the cache and the guardrails see (and apply the policies of) the chosen model.
    later = [s for s in ("guard_input", "cache", "guard_output", "execute") if s in pipeline[:at]]
    if later:
        raise ValueError(f"pipeline: 'route' must come before {', '.join(map(repr, later))}")


def _check_route(route: RouteSettings, where: str, known: set[str]) -> None:
    tiers = [t.name for t in route.tiers]
    if len(set(tiers)) != len(tiers):
        raise ValueError(f"{where}.tiers: two tiers have the same name ({', '.join(tiers)})")
    for tier in route.tiers:
        if tier.model not in known:
            raise ValueError(f"{where}.tiers.{tier.name}: {tier.model!r} is not a model of this config")
    for field, name in (("frontier", route.frontier), ("default", route.default)):
        if name is not None and name not in tiers:
            raise ValueError(f"{where}.{field}: {name!r} is not one of its tiers ({', '.join(tiers)})")
    scores = [t.min_score for t in route.tiers[1:]]
    if route.tiers[0].min_score is not None:
        raise ValueError(
            f"{where}.tiers.{tiers[0]}: the first tier takes every score below the next; no min_score"
        )
    if any(s is not None for s in scores) and (None in scores or scores != sorted(scores)):
        raise ValueError(
            f"{where}.tiers: give a min_score to every tier after the first, rising from one to the next, "
            "or to none (evenly spaced)"
        )
    for i, rule in enumerate(route.rules):
        if rule.tier not in tiers:
            raise ValueError(
                f"{where}.rules.{i}.tier: {rule.tier!r} is not one of its tiers ({', '.join(tiers)})"
            )
    _check_router(route.router, f"{where}.router", route, known)
    if route.experiment is not None:
        for variant in route.experiment.variants:
            vwhere = f"{where}.experiment.{variant.name}"
            if variant.model is not None and variant.model not in known:
                raise ValueError(f"{vwhere}.model: {variant.model!r} is not a model of this config")
            if variant.router is not None:
                _check_router(variant.router, f"{vwhere}.router", route, known)


def _check_router(router: Any, where: str, route: RouteSettings, known: set[str]) -> None:
    if isinstance(router, ClassifierRouter):
        if router.model not in known:
            raise ValueError(f"{where}.model: {router.model!r} is not a model of this config")
        if router.on_error is not None and router.on_error not in [t.name for t in route.tiers]:
            raise ValueError(f"{where}.on_error: {router.on_error!r} is not one of the route's tiers")
    if isinstance(router, RulesRouter) and not route.rules:
        raise ValueError(f"{where}: the 'rules' router needs the route's `rules`")
