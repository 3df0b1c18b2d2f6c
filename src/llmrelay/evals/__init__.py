"""Evals: suites of cases graded on every model, reports, a CI gate, and a model benchmark.

    suite = load_suite("examples/evals/tickets.yaml")
    run = RunFile.create("run.jsonl", run_header(suite, options))
    results = await run_suite(suite, run, RunOptions(models=suite.models))
    summary = summarize(suite.name, results, suite.models, suite.categories)

See docs/evals.md. New graders register in ``grading.py``'s registry (``@grader(name, Params)``).
"""

from __future__ import annotations

from .bench import Recommendation, bench_suite, load_rows, recommend
from .diff import Diff, diff_runs
from .grading import GRADERS, Answer, Grade, GradeEnv, Params, grader
from .render import write_report
from .report import ModelStats, Summary, gate, parse_thresholds, summarize
from .runfile import Result, RunFile
from .runner import RunOptions, gateway_settings, run_header, run_suite
from .suite import Case, Suite, build_suite, load_suite

__all__ = [
    "GRADERS",
    "Answer",
    "Case",
    "Diff",
    "Grade",
    "GradeEnv",
    "ModelStats",
    "Params",
    "Recommendation",
    "Result",
    "RunFile",
    "RunOptions",
    "Suite",
    "Summary",
    "bench_suite",
    "build_suite",
    "diff_runs",
    "gate",
    "gateway_settings",
    "grader",
    "load_rows",
    "load_suite",
    "parse_thresholds",
    "recommend",
    "run_header",
    "run_suite",
    "summarize",
    "write_report",
]
