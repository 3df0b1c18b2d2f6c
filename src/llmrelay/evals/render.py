"""A run's report as a terminal table, JSON, Markdown, HTML or JUnit XML (chosen by file suffix)."""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from ..errors import ConfigError
from ..tables import table
from .report import ModelStats, Summary
from .runfile import Result

MODEL_COLUMNS = [
    "model", "pass rate", "passed", "errors", "p50 ms", "p95 ms", "tokens in", "tokens out",
    "cost", "cost/request", "cost/correct", "cached",
]  # fmt: skip


def usd(value: Decimal | None, places: int = 6) -> str:
    return "-" if value is None else f"${value:.{places}f}"


def model_row(m: ModelStats) -> list[str]:
    return [
        m.model,
        f"{m.pass_rate:.1%}",
        f"{m.passed}/{m.cases}",
        str(m.errors),
        _ms(m.latency_p50_ms),
        _ms(m.latency_p95_ms),
        f"{m.prompt_tokens:,}",
        f"{m.completion_tokens:,}",
        usd(m.cost_usd),
        usd(m.cost_per_request, 8),
        usd(m.cost_per_correct, 8),
        str(m.cached),
    ]


def category_rows(summary: Summary) -> list[list[str]]:
    rows = []
    for cat, by_model in summary.categories.items():
        cells = [
            f"{p / n:.1%} ({p}/{n})" if n else "-"
            for p, n in (by_model.get(m.model, (0, 0)) for m in summary.models)
        ]
        rows.append([cat, *cells])
    return rows


def failed(summary: Summary) -> list[Result]:
    return [r for r in summary.results if not r.passed]


def why(result: Result) -> str:
    if result.error:
        return result.error
    reasons = [
        f"{g['grader']}: {g['reason']}" if g["reason"] else g["grader"]
        for g in result.grades
        if not g["passed"]
    ]
    return "; ".join(reasons)


def terminal(summary: Summary, gate_failures: list[str] | None = None, *, max_failures: int = 20) -> str:
    cases = len({r.case for r in summary.results})
    out = [f"{summary.suite}: {cases} cases x {len(summary.models)} models", ""]
    out.append(table([model_row(m) for m in summary.models], MODEL_COLUMNS))
    if summary.categories:
        out += ["", table(category_rows(summary), ["category", *(m.model for m in summary.models)])]
    bad = failed(summary)
    if bad:
        out += ["", f"failed ({len(bad)}{f', first {max_failures}' if len(bad) > max_failures else ''}):"]
        out += [f"  {r.case}  {r.model}  {_one_line(why(r), 140)}" for r in bad[:max_failures]]
    out += _gate_lines(gate_failures)
    return "\n".join(out)


def _gate_lines(gate_failures: list[str] | None) -> list[str]:
    if gate_failures is None:
        return []
    if not gate_failures:
        return ["", "gate: passed"]
    return ["", "gate: FAILED", *(f"  {f}" for f in gate_failures)]


def to_json(summary: Summary, gate_failures: list[str] | None = None) -> str:
    body: dict[str, Any] = {
        **summary.to_json(),
        "gate": None if gate_failures is None else {"passed": not gate_failures, "failures": gate_failures},
        "results": [{k: v for k, v in r.to_json().items() if k != "kind"} for r in summary.results],
    }
    return orjson.dumps(body, default=str, option=orjson.OPT_INDENT_2).decode()


def markdown(summary: Summary, gate_failures: list[str] | None = None) -> str:
    out = [f"# Eval: {summary.suite}", "", _md_table(MODEL_COLUMNS, [model_row(m) for m in summary.models])]
    if summary.categories:
        out += [
            "",
            "## By category",
            "",
            _md_table(["category", *(m.model for m in summary.models)], category_rows(summary)),
        ]
    bad = failed(summary)
    if bad:
        out += ["", f"## Failed ({len(bad)})", ""]
        out.append(
            _md_table(["case", "model", "why"], [[r.case, r.model, _one_line(why(r), 200)] for r in bad])
        )
    if gate_failures is not None:
        out += ["", "## Gate", ""] + (["passed"] if not gate_failures else [f"- {f}" for f in gate_failures])
    return "\n".join(out) + "\n"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows])


_STYLE = (
    "body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
    "th{background:#f3f3f3}.pass{background:#e8f6e8}.fail{background:#fbe9e9}.error{background:#fff3cd}"
    "pre{white-space:pre-wrap;margin:0;max-width:60em}"
)


def to_html(summary: Summary, gate_failures: list[str] | None = None) -> str:
    e = html.escape
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>Eval: {e(summary.suite)}</title>",
        f"<style>{_STYLE}</style></head><body><h1>Eval: {e(summary.suite)}</h1>",
        _html_table(MODEL_COLUMNS, [model_row(m) for m in summary.models]),
    ]
    if summary.categories:
        parts += [
            "<h2>By category</h2>",
            _html_table(["category", *(m.model for m in summary.models)], category_rows(summary)),
        ]
    if gate_failures is not None:
        verdict = "passed" if not gate_failures else "FAILED: " + "; ".join(gate_failures)
        parts.append(f"<h2>Gate</h2><p>{e(verdict)}</p>")
    parts.append("<h2>Cases</h2><table><tr><th>case</th><th>category</th><th>model</th><th>result</th>")
    parts.append("<th>input</th><th>output</th><th>why</th><th>ms</th><th>cost</th></tr>")
    for r in summary.results:
        parts.append(
            f"<tr class='{r.status}'><td>{e(r.case)}</td><td>{e(r.category or '')}</td><td>{e(r.model)}</td>"
            f"<td>{r.status}</td><td><pre>{e(r.input)}</pre></td><td><pre>{e(r.output)}</pre></td>"
            f"<td>{e(why(r))}</td><td>{r.latency_ms:.0f}</td><td>{usd(r.cost_usd, 8)}</td></tr>"
        )
    parts.append("</table></body></html>\n")
    return "".join(parts)


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def junit(summary: Summary, gate_failures: list[str] | None = None) -> str:
    """One ``testsuite`` per model, one ``testcase`` per case (classname: suite.category)."""
    root = ET.Element("testsuites", name=summary.suite)
    totals = {"tests": 0, "failures": 0, "errors": 0}
    for stats in summary.models:
        rows = [r for r in summary.results if r.model == stats.model]
        fails = sum(r.status == "fail" for r in rows)
        suite = ET.SubElement(
            root, "testsuite", name=f"{summary.suite} [{stats.model}]", tests=str(len(rows)),
            failures=str(fails), errors=str(stats.errors), skipped="0",
            time=f"{sum(r.latency_ms for r in rows) / 1000:.3f}",
        )  # fmt: skip
        for r in rows:
            case = ET.SubElement(
                suite, "testcase", name=r.case, classname=f"{summary.suite}.{r.category or 'cases'}",
                time=f"{r.latency_ms / 1000:.3f}",
            )  # fmt: skip
            if r.status != "pass":
                tag = "error" if r.status == "error" else "failure"
                problem = ET.SubElement(case, tag, message=_xml_safe(_one_line(why(r), 500)), type=tag)
                problem.text = _xml_safe(why(r))
            ET.SubElement(case, "system-out").text = _xml_safe(r.output)
        for key, value in (("tests", len(rows)), ("failures", fails), ("errors", stats.errors)):
            totals[key] += value
    for key, value in totals.items():
        root.set(key, str(value))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


WRITERS: dict[str, Callable[[Summary, list[str] | None], str]] = {
    ".json": to_json,
    ".md": markdown,
    ".html": to_html,
    ".htm": to_html,
    ".xml": junit,
    ".txt": terminal,
}


def write_report(path: str | Path, summary: Summary, gate_failures: list[str] | None = None) -> None:
    path = Path(path)
    writer = WRITERS.get(path.suffix.lower())
    if writer is None:
        raise ConfigError(f"--output {path}: the suffix picks the format: {', '.join(WRITERS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(writer(summary, gate_failures), encoding="utf-8")


_NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml_safe(text: str) -> str:
    """XML 1.0 cannot carry most control characters, even escaped: a model's output may hold some."""
    return _NOT_XML.sub("\ufffd", text)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
