"""``llmrelay bench``: which model is the cheapest one accurate enough, on the user's labelled data.

Rows are JSON lines with an input (``input`` or ``text``) and a label (``expected`` or ``label``):
a string for classification (the answer must be that label), or an object for extraction (the
answer must be JSON whose fields equal it). The rows become an eval suite, run by the same runner
(so the same run file, resume and reports), and the models are ranked by cost per request among
those meeting ``--min-accuracy``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..errors import ConfigError
from .report import ModelStats, Summary
from .suite import Suite, build_suite

INPUT_FIELDS = ("input", "text")
LABEL_FIELDS = ("expected", "label")
_MAX_LISTED_VALUES = 30  # a field with more distinct values is not listed in the prompt


def load_rows(
    path: str | Path, input_field: str | None = None, label_field: str | None = None
) -> list[dict[str, Any]]:
    """The rows as ``{id, input, expected, category}``; a clear error for a row that lacks one."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"Cannot read {path}: {exc.strerror}") from None
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{n}: not valid JSON ({exc})") from None
        if not isinstance(row, dict):
            raise ConfigError(f"{path}:{n}: a row is a JSON object")
        text = _pick(row, (input_field,) if input_field else INPUT_FIELDS, f"{path}:{n}", "input")
        label = _pick(row, (label_field,) if label_field else LABEL_FIELDS, f"{path}:{n}", "label")
        rows.append(
            {
                "id": str(row.get("id", f"row-{n}")),
                "input": text,
                "expected": label,
                "category": row.get("category"),
            }
        )
    if not rows:
        raise ConfigError(f"{path}: no rows")
    return rows


def _pick(row: dict[str, Any], names: tuple[str, ...], where: str, what: str) -> Any:
    for name in names:
        if row.get(name) is not None:
            return row[name]
    raise ConfigError(f"{where}: no {what} field ({' or '.join(names)})")


def task_of(rows: list[dict[str, Any]]) -> str:
    kinds = {"extract" if isinstance(r["expected"], dict) else "classify" for r in rows}
    if len(kinds) > 1:
        raise ConfigError("the labels mix strings (classification) and objects (extraction): use one kind")
    return kinds.pop()


def default_system(rows: list[dict[str, Any]], task: str) -> str:
    """A plain instruction naming the labels (or the fields, with their values when few)."""
    if task == "classify":
        labels = sorted({str(r["expected"]) for r in rows})
        return f"Classify the text into exactly one of these labels: {', '.join(labels)}. Answer with the label only."
    fields: dict[str, set[str]] = {}
    for r in rows:
        for key, value in r["expected"].items():
            fields.setdefault(key, set()).add(orjson.dumps(value).decode())
    described = [
        f"{key} (one of: {', '.join(sorted(values))})" if len(values) <= _MAX_LISTED_VALUES else key
        for key, values in fields.items()
    ]
    return f"Read the text and answer with only a JSON object with these keys: {'; '.join(described)}."


def bench_suite(
    rows: list[dict[str, Any]],
    *,
    name: str,
    models: list[str],
    system: str | None = None,
    params: dict[str, Any] | None = None,
    config: str | None = None,
    simulator_rules: str | None = None,
    base_dir: Path = Path("."),
) -> Suite:
    task = task_of(rows)
    if task == "classify":
        graders: list[dict[str, Any]] = [{"type": "exact_match", "ignore_case": True}]
    else:
        keys = list(dict.fromkeys(k for r in rows for k in r["expected"]))
        graders = [{"type": "json_field", "field": k} for k in keys]
    cases = [
        {
            **r,
            "category": r["category"] or (r["expected"] if task == "classify" else None),
            "graders": graders,
        }
        for r in rows
    ]
    raw = {
        "name": name,
        "models": models,
        "system": system or default_system(rows, task),
        "params": params or {},
        "cases": cases,
        "config": config,
        "simulator_rules": simulator_rules,
    }
    return build_suite(raw, source=name, base_dir=base_dir, name=name)


@dataclass(frozen=True)
class Recommendation:
    model: str | None
    message: str


def recommend(summary: Summary, min_accuracy: float | None) -> Recommendation:
    """The cheapest model (per request) at or above ``min_accuracy``; without a bar, the most
    accurate (the cheapest of those tied)."""
    models = summary.models
    if min_accuracy is None:
        best = max(m.pass_rate for m in models)
        pick = _cheapest([m for m in models if m.pass_rate == best])
        return Recommendation(pick.model, f"most accurate: {pick.model} ({_describe(pick)})")
    meeting = [m for m in models if m.pass_rate >= min_accuracy]
    if not meeting:
        top = max(models, key=lambda m: (m.pass_rate, -m.cost_per_request))
        return Recommendation(
            None,
            f"no model reaches {min_accuracy:.1%} accuracy; the most accurate is {top.model} at {top.pass_rate:.1%}",
        )
    pick = _cheapest(meeting)
    return Recommendation(
        pick.model,
        f"recommended: {pick.model}, the cheapest model with accuracy >= {min_accuracy:.1%} ({_describe(pick)})",
    )


def _cheapest(models: list[ModelStats]) -> ModelStats:
    return min(models, key=lambda m: (m.cost_per_request, -m.pass_rate, m.latency_p50_ms or 0.0, m.model))


def _describe(m: ModelStats) -> str:
    return f"accuracy {m.pass_rate:.1%}, ${m.cost_per_request:.8f} per request"
