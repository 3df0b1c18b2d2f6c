"""The grader registry: what a grader is, how one is named in a suite, and how it is applied.

A grader is a function ``(params, answer, env) -> Grade`` (or an awaitable of one) registered
under a name with the pydantic model of its parameters:

    @grader("contains", ContainsParams)
    def contains(params, answer, env): ...

Registering is the only step: suites then name it (``{type: contains, value: refund}``), its
parameters are checked when the suite loads, and ``not_contains`` / ``not-contains`` is its
negation. The built-ins live in ``graders.py`` (deterministic) and ``judges.py`` (model-backed).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, model_validator

from ..config import JsonGuard
from ..errors import ConfigError
from ..guardrails.jsonmode import JsonSpec, policy_spec
from ..types import Usage

if TYPE_CHECKING:
    from .suite import Case


@dataclass(frozen=True, slots=True)
class Grade:
    passed: bool
    score: float  # 0..1
    reason: str = ""

    @classmethod
    def of(cls, passed: bool, reason: str = "") -> Grade:
        return cls(passed, 1.0 if passed else 0.0, reason)


class NotJson(ValueError):
    """The answer holds no JSON (the grade fails with this reason)."""


@functools.cache
def any_json() -> JsonSpec:
    """Valid JSON of any shape (the guardrail's parser: a code fence around it is fine)."""
    return policy_spec(JsonGuard(schema={"$comment": "any JSON value"}))


def parse_json(text: str, spec: JsonSpec) -> Any:
    """``text`` as JSON valid against ``spec``; ``NotJson`` saying why not."""
    candidate, error = spec.check(text)
    if error is not None:
        raise NotJson(f"the answer is not valid JSON: {error}")
    return orjson.loads(candidate)


@dataclass(slots=True)
class Answer:
    """What graders see: the model's text, the case, and what the call measured."""

    text: str
    case: Case
    model: str
    latency_ms: float
    cost_usd: Decimal | None  # at the model's price, even when the cache answered
    usage: Usage | None
    judge_cost_usd: Decimal = Decimal(0)  # graders that call a model add their cost here
    _json: Any = field(default=None, repr=False)
    _json_error: NotJson | None = field(default=None, repr=False)
    _parsed: bool = field(default=False, repr=False)

    def json(self) -> Any:
        """The answer parsed as JSON (once); ``NotJson`` if it is not."""
        if not self._parsed:
            try:
                self._json = parse_json(self.text, any_json())
            except NotJson as exc:
                self._json_error = exc
            self._parsed = True
        if self._json_error is not None:
            raise self._json_error
        return self._json


@dataclass
class GradeEnv:
    """What a run shares with its graders: the relay (for judges), defaults, a lazy embedder."""

    relay: Any = None  # llmrelay.Relay
    judge_model: str | None = None
    no_cache: bool = False
    _embedder: Any = None

    def embedder(self) -> Any:
        if self._embedder is None:
            from ..cache.semantic import LocalEmbedder

            self._embedder = LocalEmbedder()
        return self._embedder

    async def aclose(self) -> None:
        if self._embedder is not None:
            await self._embedder.aclose()


class Params(BaseModel):
    """A grader's parameters, checked when the suite loads. ``info.context`` has ``base_dir`` and
    ``expected`` (the case's), for validators that read files or need an expected value."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class ValueParams(Params):
    """``value``, or the case's ``expected`` when omitted."""

    value: Any = None

    @model_validator(mode="after")
    def _has_value(self, info: ValidationInfo) -> ValueParams:
        if self.value is None and (info.context or {}).get("expected") is None:
            raise ValueError("needs a value (or the case's expected)")
        return self

    def wanted(self, answer: Answer) -> Any:
        return self.value if self.value is not None else answer.case.expected


GraderFn = Callable[[Any, Answer, GradeEnv], Grade | Awaitable[Grade]]


@dataclass(frozen=True, slots=True)
class GraderType:
    name: str
    params: type[Params]
    fn: GraderFn


GRADERS: dict[str, GraderType] = {}


def grader(name: str, params: type[Params] = Params) -> Callable[[GraderFn], GraderFn]:
    """Register ``fn`` as the grader ``name`` with parameters ``params``."""

    def register(fn: GraderFn) -> GraderFn:
        GRADERS[name] = GraderType(name, params, fn)
        return fn

    return register


@dataclass(frozen=True, slots=True)
class BoundGrader:
    """A grader as a suite names it: its type, checked parameters, negation and label."""

    kind: GraderType
    params: Any
    negate: bool
    label: str

    async def grade(self, answer: Answer, env: GradeEnv) -> Grade:
        try:
            result = self.kind.fn(self.params, answer, env)
            grade = await result if inspect.isawaitable(result) else result
        except (NotJson, LookupError, TypeError, ValueError) as exc:
            grade = Grade.of(False, str(exc))
        if not self.negate:
            return grade
        return Grade(not grade.passed, 1.0 - grade.score, f"not: {grade.reason}" if grade.reason else "")


def compile_grader(spec: Any, *, where: str, base_dir: Path, expected: Any = None) -> BoundGrader:
    """``{type: regex, value: ...}`` (or a bare ``"json_valid"``) -> a checked ``BoundGrader``."""
    _load_builtins()
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
        raise ConfigError(f"{where}: a grader is a mapping with a type (or a grader's name)")
    kind_name = spec["type"].replace("-", "_")
    negate = kind_name.startswith("not_") and kind_name[4:] in GRADERS
    kind = GRADERS.get(kind_name[4:] if negate else kind_name)
    if kind is None:
        raise ConfigError(f"{where}: unknown grader {spec['type']!r}; known: {', '.join(sorted(GRADERS))}")
    raw = {k: v for k, v in spec.items() if k not in ("type", "label")}
    try:
        params = kind.params.model_validate(raw, context={"base_dir": base_dir, "expected": expected})
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{where}: {spec['type']}: {loc + ': ' if loc else ''}{message}") from None
    return BoundGrader(kind, params, negate, str(spec.get("label") or spec["type"]))


def _load_builtins() -> None:
    from . import graders, judges  # noqa: F401  (registering is importing)
