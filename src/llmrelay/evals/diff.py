"""``eval diff A B``: which cases regressed (passed in A, not in B) and which improved.

Results pair by (case, model) when both runs ran the same models (a prompt change), by case when
each ran one model (a model switch: gpt-4o -> gpt-4o-mini), else by (case, model) on the models
both ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from ..tables import table
from .render import why
from .runfile import Result, RunFile


@dataclass(frozen=True)
class Change:
    case: str
    model: str  # "a -> b" when the runs compared different models
    category: str | None
    before: str  # status in A
    after: str  # status in B
    why: str  # why it fails now (a regression) or why it failed before (an improvement)


@dataclass
class Diff:
    a: str
    b: str
    regressions: list[Change] = field(default_factory=list)
    improvements: list[Change] = field(default_factory=list)
    only_a: list[str] = field(default_factory=list)  # "case [model]" not in B
    only_b: list[str] = field(default_factory=list)
    rates: dict[str, tuple[float, float]] = field(default_factory=dict)  # model (or "a -> b") -> rates
    compared: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "compared": self.compared,
            "pass_rates": {m: {"a": round(ra, 6), "b": round(rb, 6)} for m, (ra, rb) in self.rates.items()},
            "regressions": [c.__dict__ for c in self.regressions],
            "improvements": [c.__dict__ for c in self.improvements],
            "only_in_a": self.only_a,
            "only_in_b": self.only_b,
        }


def diff_runs(a: RunFile, b: RunFile) -> Diff:
    models_a, models_b = _models(a), _models(b)
    out = Diff(str(a.path), str(b.path))
    if set(models_a) != set(models_b) and len(models_a) == len(models_b) == 1:
        label = f"{models_a[0]} -> {models_b[0]}"
        pairs = {label: (models_a[0], models_b[0])}
    else:
        pairs = {m: (m, m) for m in models_a if m in models_b}
        out.only_a += [f"model {m}" for m in models_a if m not in models_b]
        out.only_b += [f"model {m}" for m in models_b if m not in models_a]
    for label, (ma, mb) in pairs.items():
        rows_a = {r.case: r for r in a.ordered() if r.model == ma}
        rows_b = {r.case: r for r in b.ordered() if r.model == mb}
        for case, ra in rows_a.items():
            rb = rows_b.get(case)
            if rb is None:
                out.only_a.append(f"{case} [{ma}]")
                continue
            out.compared += 1
            if ra.passed and not rb.passed:
                out.regressions.append(_change(case, label, ra, rb, why(rb)))
            elif rb.passed and not ra.passed:
                out.improvements.append(_change(case, label, ra, rb, why(ra)))
        out.only_b += [f"{case} [{mb}]" for case in rows_b if case not in rows_a]
        common = [c for c in rows_a if c in rows_b]
        if common:
            out.rates[label] = (
                sum(rows_a[c].passed for c in common) / len(common),
                sum(rows_b[c].passed for c in common) / len(common),
            )
    return out


def _change(case: str, label: str, ra: Result, rb: Result, reason: str) -> Change:
    return Change(case, label, rb.category or ra.category, ra.status, rb.status, reason)


def _models(run: RunFile) -> list[str]:
    listed = list(run.header.get("models") or [])
    return listed + sorted({r.model for r in run.results.values()} - set(listed))


def render_diff(d: Diff) -> str:
    out = [f"A: {d.a}", f"B: {d.b}", f"{d.compared} results compared", ""]
    if d.rates:
        rows = [
            [m, f"{ra:.1%}", f"{rb:.1%}", f"{(rb - ra) * 100:+.1f} pts"] for m, (ra, rb) in d.rates.items()
        ]
        out += [table(rows, ["model", "pass rate A", "pass rate B", "change"]), ""]
    for title, changes in (("regressed", d.regressions), ("improved", d.improvements)):
        out.append(f"{title} ({len(changes)}):")
        out += [f"  {c.case}  {c.model}  {c.before} -> {c.after}  {c.why}" for c in changes] or ["  none"]
    for title, keys in (("only in A", d.only_a), ("only in B", d.only_b)):
        if keys:
            out.append(f"{title} ({len(keys)}): {', '.join(keys[:20])}{' ...' if len(keys) > 20 else ''}")
    return "\n".join(out)


def diff_json(d: Diff) -> str:
    return orjson.dumps(d.to_json(), option=orjson.OPT_INDENT_2).decode()
