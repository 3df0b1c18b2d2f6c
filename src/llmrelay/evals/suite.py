"""Eval suites: a YAML file of cases (inline, or in JSONL/YAML files next to it) and defaults.

    name: tickets
    models: [sim/gpt-4o-mini, sim/claude-haiku]
    system: "Classify the ticket..."
    prompt: "Ticket: {{input}}"          # the user message; {{input}} and {{vars}} are filled in
    params: {temperature: 0, max_tokens: 40}
    defaults: {graders: [{type: json_valid}]}
    cases: tickets.jsonl                  # or a list of cases, or a list of files

A case has ``input`` (text) or ``messages``, and ``expected``, ``category``, ``vars``, ``graders``
(``assert`` is accepted too, as in promptfoo). Everything wrong with a suite is a ``ConfigError``
naming the file and the place (the CLI exits 2 on it), found before any model is called.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ConfigError, GatewayError, first_problem
from ..providers import openai_format
from .grading import BoundGrader, compile_grader

_VAR = re.compile(r"\{\{\s*([A-Za-z_][\w.]*)\s*\}\}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class CaseSpec(_Strict):
    id: str | int | None = None
    input: str | None = None
    messages: list[dict[str, Any]] | None = None
    vars: dict[str, Any] = {}
    expected: Any = None
    category: str | None = None
    graders: list[Any] | None = Field(default=None, alias="assert")
    params: dict[str, Any] = {}  # request fields for this case only
    metadata: dict[str, Any] = {}


class Defaults(_Strict):
    category: str | None = None
    graders: list[Any] = Field(default=[], alias="assert")
    vars: dict[str, Any] = {}


class SuiteSpec(_Strict):
    name: str | None = None
    description: str = ""
    models: list[str] = []
    config: str | dict[str, Any] | None = None  # gateway config: a file, inline, or None (embedded)
    simulator_rules: str | None = None  # a rules file for the embedded simulator (docs/simulator.md)
    system: str | None = None
    prompt: str = "{{input}}"
    params: dict[str, Any] = {}
    concurrency: int = Field(default=4, ge=1, le=256)
    judge_model: str | None = None  # llm_judge's default judge
    defaults: Defaults = Defaults()
    cases: str | list[Any] = []  # files (str) and inline cases (mappings), checked one by one
    thresholds: dict[str, float] = {}  # "overall" or a category -> minimum pass rate


@dataclass(frozen=True)
class Case:
    """One case, ready to run: the messages to send and the graders to apply."""

    id: str
    messages: list[dict[str, Any]]
    params: dict[str, Any]
    expected: Any
    category: str | None
    graders: list[BoundGrader]
    vars: dict[str, Any]
    metadata: dict[str, Any]
    hash: str  # of everything that decides the result: a resumed run re-runs a case that changed

    @property
    def input_text(self) -> str:
        """The last user message's text (reports show it)."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                content = message.get("content")
                return content if isinstance(content, str) else orjson.dumps(content).decode()
        return ""


@dataclass(frozen=True)
class Suite:
    name: str
    path: Path | None
    base_dir: Path  # relative paths in the suite (cases, schemas, python graders) start here
    models: list[str]
    cases: list[Case]
    config: str | dict[str, Any] | None = None
    simulator_rules: Path | None = None
    concurrency: int = 4
    judge_model: str | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    description: str = ""

    @property
    def categories(self) -> list[str]:
        """Categories in order of first appearance (the report's order)."""
        return list(dict.fromkeys(c.category for c in self.cases if c.category is not None))


def load_suite(path: str | Path) -> Suite:
    """Read and check a suite file; every problem is a ``ConfigError`` naming where it is."""
    path = Path(path)
    raw = _read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a suite is a mapping (name, models, cases, ...), not {_kind(raw)}")
    return build_suite(raw, source=str(path), base_dir=path.parent, name=path.stem, path=path)


def build_suite(
    raw: dict[str, Any], *, source: str, base_dir: Path, name: str, path: Path | None = None
) -> Suite:
    """A ``Suite`` from its parsed YAML (``load_suite``), or from a mapping built in code (bench)."""
    spec = _validate(SuiteSpec, raw, source)
    case_specs = _case_specs(spec.cases, base_dir, source)
    if not case_specs:
        raise ConfigError(f"{source}: cases: the suite has no cases")
    cases = [_case(spec, c, i, base_dir, source) for i, c in enumerate(case_specs)]
    seen: set[str] = set()
    for case in cases:
        if case.id in seen:
            raise ConfigError(f"{source}: case id {case.id!r} is used twice")
        seen.add(case.id)
    rules = spec.simulator_rules
    return Suite(
        name=spec.name or name,
        path=path.resolve() if path else None,
        base_dir=base_dir.resolve(),
        models=spec.models,
        cases=cases,
        config=str((base_dir / spec.config).resolve()) if isinstance(spec.config, str) else spec.config,
        simulator_rules=(base_dir / rules).resolve() if rules else None,
        concurrency=spec.concurrency,
        judge_model=spec.judge_model,
        thresholds=spec.thresholds,
        description=spec.description,
    )


def _case_specs(cases: str | list[Any], base_dir: Path, source: str) -> list[tuple[CaseSpec, str]]:
    """(case, where it was written) for inline cases and those of the files named."""
    out: list[tuple[CaseSpec, str]] = []
    for i, item in enumerate([cases] if isinstance(cases, str) else cases):
        if isinstance(item, str):
            out += _cases_file(base_dir / item)
        else:
            where = f"{source}: cases[{i}]"
            out.append((_validate(CaseSpec, item, where), where))
    return out


def _cases_file(path: Path) -> list[tuple[CaseSpec, str]]:
    if path.suffix in (".jsonl", ".ndjson"):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"Cannot read cases file {path}: {exc.strerror}") from None
        rows: list[tuple[Any, str]] = []
        for n, line in enumerate(lines, 1):
            if line.strip():
                try:
                    rows.append((orjson.loads(line), f"{path}:{n}"))
                except orjson.JSONDecodeError as exc:
                    raise ConfigError(f"{path}:{n}: not valid JSON ({exc})") from None
    else:
        data = _read_yaml(path)
        if not isinstance(data, list):
            raise ConfigError(f"{path}: a cases file is a list of cases, not {_kind(data)}")
        rows = [(row, f"{path}: [{i}]") for i, row in enumerate(data)]
    return [(_validate(CaseSpec, row, where), where) for row, where in rows]


def _case(spec: SuiteSpec, item: tuple[CaseSpec, str], index: int, base_dir: Path, source: str) -> Case:
    case, where = item
    variables = {**spec.defaults.vars, **case.vars}
    if case.messages is not None:
        if case.input is not None:
            raise ConfigError(f"{where}: give either input or messages, not both")
        messages = [dict(m) for m in case.messages]
    elif case.input is not None:
        messages = [
            {"role": "user", "content": _fill(spec.prompt, {**variables, "input": case.input}, where)}
        ]
    else:
        raise ConfigError(f"{where}: a case needs input (text) or messages")
    if spec.system is not None and not any(m.get("role") == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": _fill(spec.system, variables, where)})
    params = {"temperature": 0, **spec.params, **case.params}  # temperature 0: comparable and cacheable
    _check_request(messages, params, where)
    specs = case.graders if case.graders is not None else spec.defaults.graders
    if not specs:
        raise ConfigError(f"{where}: the case has no graders (and the suite's defaults have none)")
    graders = [
        compile_grader(g, where=f"{where}: graders[{i}]", base_dir=base_dir, expected=case.expected)
        for i, g in enumerate(specs)
    ]
    digest = hashlib.sha256(
        orjson.dumps([messages, params, case.expected, specs], option=orjson.OPT_SORT_KEYS, default=str)
    ).hexdigest()[:16]
    return Case(
        id=str(case.id) if case.id is not None else f"case-{index + 1}",
        messages=messages,
        params=params,
        expected=case.expected,
        category=case.category or spec.defaults.category,
        graders=graders,
        vars=variables,
        metadata=case.metadata,
        hash=digest,
    )


def _fill(template: str, variables: dict[str, Any], where: str) -> str:
    def sub(m: re.Match[str]) -> str:
        value: Any = variables
        for part in m.group(1).split("."):
            if not isinstance(value, dict) or part not in value:
                raise ConfigError(f"{where}: the template uses {{{{{m.group(1)}}}}}, which is not set")
            value = value[part]
        return value if isinstance(value, str) else orjson.dumps(value).decode()

    return _VAR.sub(sub, template)


def _check_request(messages: list[dict[str, Any]], params: dict[str, Any], where: str) -> None:
    """Parse the request it will send (any model name), so a bad field fails now, not per model."""
    if "model" in params or "messages" in params or "stream" in params:
        raise ConfigError(f"{where}: params cannot set model, messages or stream")
    try:
        openai_format.parse_request({"model": "-", "messages": messages, **params})
    except GatewayError as exc:
        raise ConfigError(f"{where}: {exc.message}") from None


def _validate(model: type[_Strict], raw: Any, where: str) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {first_problem(exc)}") from None


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"Cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None


def _kind(value: Any) -> str:
    return "nothing" if value is None else f"a {type(value).__name__}"
