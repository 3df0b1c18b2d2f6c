"""What a run's results add up to: per model and per category pass rates, latency, tokens, cost;
and the CI gate (``--threshold``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ..errors import ConfigError
from ..observability.sqlite_store import percentile
from .runfile import Result


@dataclass(frozen=True)
class ModelStats:
    model: str
    cases: int
    passed: int
    errors: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: Decimal  # at the model's price, for all its cases
    spent_usd: Decimal  # actually paid (cache hits are free)
    judge_cost_usd: Decimal
    cached: int

    @property
    def pass_rate(self) -> float:
        return self.passed / self.cases if self.cases else 0.0

    @property
    def cost_per_request(self) -> Decimal:
        return self.cost_usd / self.cases if self.cases else Decimal(0)

    @property
    def cost_per_correct(self) -> Decimal | None:
        return self.cost_usd / self.passed if self.passed else None

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "cases": self.cases,
            "passed": self.passed,
            "errors": self.errors,
            "pass_rate": round(self.pass_rate, 6),
            "latency_p50_ms": _round(self.latency_p50_ms),
            "latency_p95_ms": _round(self.latency_p95_ms),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": str(self.cost_usd),
            "cost_per_request_usd": str(round(self.cost_per_request, 10)),
            "cost_per_correct_usd": str(round(c, 10)) if (c := self.cost_per_correct) is not None else None,
            "spent_usd": str(self.spent_usd),
            "judge_cost_usd": str(self.judge_cost_usd),
            "cached": self.cached,
        }


@dataclass(frozen=True)
class Summary:
    suite: str
    models: list[ModelStats]
    categories: dict[str, dict[str, tuple[int, int]]]  # category -> model -> (passed, cases)
    results: list[Result] = field(repr=False)

    def model(self, name: str) -> ModelStats:
        return next(m for m in self.models if m.model == name)

    def category_rate(self, category: str, model: str) -> float | None:
        passed, total = self.categories.get(category, {}).get(model, (0, 0))
        return passed / total if total else None

    def to_json(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "models": [m.to_json() for m in self.models],
            "categories": {
                cat: {m: {"passed": p, "cases": n, "pass_rate": round(p / n, 6)} for m, (p, n) in by.items()}
                for cat, by in self.categories.items()
            },
        }


def summarize(
    suite: str, results: Sequence[Result], models: Sequence[str], categories: Sequence[str]
) -> Summary:
    """``results`` in report order; models and categories in the order to show them."""
    stats = [_model_stats(m, [r for r in results if r.model == m]) for m in models]
    by_category: dict[str, dict[str, tuple[int, int]]] = {}
    for cat in [*categories, *sorted({r.category for r in results if r.category} - set(categories))]:
        by_category[cat] = {}
        for m in models:
            rows = [r for r in results if r.model == m and r.category == cat]
            if rows:
                by_category[cat][m] = (sum(r.passed for r in rows), len(rows))
    return Summary(suite, stats, by_category, list(results))


def _model_stats(model: str, rows: list[Result]) -> ModelStats:
    # A cached answer's latency says nothing about the model: only fresh answers count.
    answered = sorted(r.latency_ms for r in rows if r.status != "error" and not r.cached)
    zero = Decimal(0)
    return ModelStats(
        model=model,
        cases=len(rows),
        passed=sum(r.passed for r in rows),
        errors=sum(r.status == "error" for r in rows),
        latency_p50_ms=percentile(answered, 0.5) if answered else None,
        latency_p95_ms=percentile(answered, 0.95) if answered else None,
        prompt_tokens=sum(r.prompt_tokens for r in rows),
        completion_tokens=sum(r.completion_tokens for r in rows),
        cost_usd=sum((r.cost_usd or zero for r in rows), zero),
        spent_usd=sum((r.spent_usd or zero for r in rows), zero),
        judge_cost_usd=sum((r.judge_cost_usd for r in rows), zero),
        cached=sum(r.cached for r in rows),
    )


def parse_thresholds(values: Sequence[str]) -> dict[str, float]:
    """``0.9`` (overall) and ``billing=0.95`` (a category) -> {"overall": 0.9, "billing": 0.95}."""
    out: dict[str, float] = {}
    for value in values:
        name, _, number = value.rpartition("=")
        try:
            rate = float(number)
        except ValueError:
            raise ConfigError(f"--threshold takes 0.9 or CATEGORY=0.9, not {value!r}") from None
        if not 0 <= rate <= 1:
            raise ConfigError(f"--threshold {value!r}: a pass rate is between 0 and 1")
        out[name or "overall"] = rate
    return out


def gate(summary: Summary, thresholds: dict[str, float]) -> list[str]:
    """What is below its threshold, for every model (empty: the gate passes)."""
    unknown = [c for c in thresholds if c != "overall" and c not in summary.categories]
    if unknown:
        raise ConfigError(
            f"--threshold names unknown categories {unknown}; the suite has: {', '.join(summary.categories)}"
        )
    failures = []
    for stats in summary.models:
        for name, minimum in thresholds.items():
            rate = stats.pass_rate if name == "overall" else summary.category_rate(name, stats.model)
            if rate is not None and rate < minimum:
                failures.append(f"{stats.model}: {name} pass rate {rate:.1%} is below {minimum:.1%}")
    return failures


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
