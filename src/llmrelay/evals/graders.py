"""The deterministic built-in graders: text, JSON, a user's Python function, cost and latency.

Each is registered with its parameters (``grading.grader``); the model-backed ones (``llm_judge``,
``similarity``) are in ``judges.py``.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationInfo, field_validator, model_validator

from ..config import JsonGuard
from ..errors import ConfigError
from ..guardrails.jsonmode import JsonSpec, policy_spec
from .expr import Expr
from .grading import Answer, Grade, GradeEnv, Params, ValueParams, grader, parse_json


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


class ExactParams(ValueParams):
    ignore_case: bool = False
    strip: bool = True  # leading and trailing whitespace do not count


@grader("exact_match", ExactParams)
def exact_match(p: ExactParams, answer: Answer, env: GradeEnv) -> Grade:
    """Text equal to the value; a non-text value (a mapping, a list, a number) is compared as JSON."""
    wanted = p.wanted(answer)
    if not isinstance(wanted, str):
        got = answer.json()
        return Grade.of(got == wanted, "" if got == wanted else f"expected {wanted!r}, got {got!r}")
    got_text = answer.text.strip() if p.strip else answer.text
    want_text = wanted.strip() if p.strip else wanted
    if p.ignore_case:
        got_text, want_text = got_text.casefold(), want_text.casefold()
    ok = got_text == want_text
    return Grade.of(ok, "" if ok else f"expected {wanted!r}, got {_short(answer.text)}")


class ContainsParams(ValueParams):
    ignore_case: bool = False
    any: bool = False  # with a list: one of them is enough (default: all of them)


@grader("contains", ContainsParams)
def contains(p: ContainsParams, answer: Answer, env: GradeEnv) -> Grade:
    wanted = p.wanted(answer)
    needles = [_as_text(w) for w in (wanted if isinstance(wanted, list) else [wanted])]
    text = answer.text.casefold() if p.ignore_case else answer.text
    found = [n for n in needles if (n.casefold() if p.ignore_case else n) in text]
    ok = bool(found) if p.any else len(found) == len(needles)
    missing = [n for n in needles if n not in found]
    return Grade(ok, len(found) / len(needles), "" if ok else f"missing {missing!r}")


class RegexParams(Params):
    value: str
    ignore_case: bool = False
    _pattern: re.Pattern[str]

    @field_validator("value")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"bad regex {v!r}: {exc}") from None
        return v

    def model_post_init(self, _context: Any) -> None:
        self._pattern = re.compile(self.value, re.IGNORECASE if self.ignore_case else 0)


@grader("regex", RegexParams)
def regex(p: RegexParams, answer: Answer, env: GradeEnv) -> Grade:
    ok = p._pattern.search(answer.text) is not None
    return Grade.of(ok, "" if ok else f"no match for /{p.value}/ in {_short(answer.text)}")


@grader("json_valid")
def json_valid(p: Params, answer: Answer, env: GradeEnv) -> Grade:
    answer.json()  # NotJson fails the grade with the parser's reason
    return Grade.of(True)


class SchemaParams(Params):
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    file: str | None = None  # a JSON/YAML schema file, relative to the suite
    _spec: JsonSpec

    model_config = Params.model_config | {"populate_by_name": True}

    @model_validator(mode="after")
    def _load(self, info: ValidationInfo) -> SchemaParams:
        if (self.schema_ is None) == (self.file is None):
            raise ValueError("give exactly one of schema (inline) or file")
        schema = self.schema_
        if schema is None:
            schema = _read_structured(Path((info.context or {}).get("base_dir", ".")) / str(self.file))
        try:
            self._spec = policy_spec(JsonGuard(schema=schema))
        except ConfigError as exc:
            raise ValueError(exc.message.replace("guardrails.json.schema", "schema")) from None
        return self


@grader("json_schema", SchemaParams)
def json_schema(p: SchemaParams, answer: Answer, env: GradeEnv) -> Grade:
    parse_json(answer.text, p._spec)  # NotJson says which rule failed, and where
    return Grade.of(True)


class FieldParams(Params):
    """``field: category`` (equal to ``value``, or the case's expected), or ``expr: 'a == 1'``."""

    field: str | None = None
    expr: str | None = None
    value: Any = None
    _expr: Expr

    @model_validator(mode="after")
    def _compile(self, info: ValidationInfo) -> FieldParams:
        if (self.field is None) == (self.expr is None):
            raise ValueError("give exactly one of field (compared to value or expected) or expr")
        if self.field is not None and self.value is None and (info.context or {}).get("expected") is None:
            raise ValueError("field needs a value to compare with (or the case's expected)")
        self._expr = Expr(self.field or self.expr or "")
        return self


@grader("json_field", FieldParams)
def json_field(p: FieldParams, answer: Answer, env: GradeEnv) -> Grade:
    got = p._expr.evaluate(answer.json())
    if p.expr is not None:
        return Grade.of(bool(got), "" if got else f"{p.expr} is false for {_short(answer.text)}")
    wanted = p.value
    if wanted is None:
        expected = answer.case.expected
        # An expected object holds the field at the same path; anything else is the value itself.
        wanted = p._expr.evaluate(expected) if isinstance(expected, dict) else expected
    ok = got == wanted
    return Grade.of(ok, "" if ok else f"{p.field}: expected {wanted!r}, got {got!r}")


class PythonParams(Params):
    """``value: package.module:function`` or ``value: graders.py:function`` (``grade`` by default)."""

    value: str
    threshold: float = 0.5  # a returned score passes at or above this
    _fn: Callable[..., Any]

    @model_validator(mode="after")
    def _import(self, info: ValidationInfo) -> PythonParams:
        self._fn = load_function(self.value, Path((info.context or {}).get("base_dir", ".")))
        return self


@grader("python", PythonParams)
async def python(p: PythonParams, answer: Answer, env: GradeEnv) -> Grade:
    """Calls ``fn(output, context)``; it returns a bool, a score (0..1), or a mapping with
    ``pass``, ``score`` and ``reason``."""
    context = {
        "input": answer.case.input_text,
        "messages": answer.case.messages,
        "expected": answer.case.expected,
        "vars": answer.case.vars,
        "metadata": answer.case.metadata,
        "category": answer.case.category,
        "case_id": answer.case.id,
        "model": answer.model,
        "latency_ms": answer.latency_ms,
        "cost_usd": float(answer.cost_usd) if answer.cost_usd is not None else None,
    }
    try:
        result = p._fn(answer.text, context)
        if hasattr(result, "__await__"):
            result = await result
    except Exception as exc:  # the user's code: its failure is this grade's failure, not the run's
        return Grade.of(False, f"{p.value} raised {type(exc).__name__}: {exc}")
    return _user_grade(result, p.threshold, p.value)


def _user_grade(result: Any, threshold: float, name: str) -> Grade:
    if isinstance(result, Grade):
        return result
    if isinstance(result, bool):
        return Grade.of(result)
    if isinstance(result, int | float):
        return Grade(result >= threshold, float(result), f"score {result:g}")
    if isinstance(result, dict) and ("pass" in result or "score" in result):
        score = float(result.get("score", 1.0 if result.get("pass") else 0.0))
        passed = bool(result["pass"]) if "pass" in result else score >= threshold
        return Grade(passed, score, str(result.get("reason", "")))
    raise TypeError(f"{name} returned {type(result).__name__}; return a bool, a score or a mapping")


def load_function(ref: str, base_dir: Path) -> Callable[..., Any]:
    """``module:function`` (importable, or a module next to the suite) or ``file.py[:function]``."""
    target, _, name = ref.rpartition(":") if ":" in ref else (ref, "", "grade")
    name = name or "grade"
    if target.endswith(".py"):
        path = (base_dir / target).resolve()
        spec = importlib.util.spec_from_file_location(f"llmrelay_eval_{path.stem}", path)
        if spec is None or spec.loader is None or not path.exists():
            raise ValueError(f"no Python file {path}")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise ValueError(f"importing {path} failed: {type(exc).__name__}: {exc}") from None
    else:
        sys.path.insert(0, str(base_dir))  # a module next to the suite imports like an installed one
        try:
            module = importlib.import_module(target)
        except Exception as exc:
            raise ValueError(f"cannot import {target!r}: {type(exc).__name__}: {exc}") from None
        finally:
            sys.path.remove(str(base_dir))
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ValueError(f"{target} has no function {name!r}")
    return fn


class LimitParams(Params):
    threshold: float  # the most it may be: USD for cost, milliseconds for latency


@grader("cost", LimitParams)
def cost(p: LimitParams, answer: Answer, env: GradeEnv) -> Grade:
    if answer.cost_usd is None:
        return Grade.of(False, "the call's cost is unknown (no price for this model)")
    ok = answer.cost_usd <= Decimal(str(p.threshold))
    return Grade.of(ok, f"${answer.cost_usd:.6f} {'<=' if ok else '>'} ${p.threshold:g}")


@grader("latency", LimitParams)
def latency(p: LimitParams, answer: Answer, env: GradeEnv) -> Grade:
    ok = answer.latency_ms <= p.threshold
    return Grade.of(ok, f"{answer.latency_ms:.0f} ms {'<=' if ok else '>'} {p.threshold:g} ms")


def _read_structured(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))  # YAML reads JSON too
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None


def _short(text: str) -> str:
    text = text.strip()
    return repr(text if len(text) <= 80 else text[:77] + "...")
