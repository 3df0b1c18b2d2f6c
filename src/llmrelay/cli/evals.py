"""``llmrelay eval run|report|diff``: run a suite (resumable), report a run, compare two runs.

Exit codes: 0 done (and the gate passed), 1 below a ``--threshold`` (or a regression with
``diff --fail-on-regression``), 2 bad input (suite, options), 130 interrupted (resume it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from ulid import ULID

from ..errors import ConfigError
from ._args import at_least


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="run eval suites, gate CI on pass rates, compare runs")
    cmds = p.add_subparsers(dest="eval_command", required=True)

    run = cmds.add_parser("run", help="run a suite on its models (or --model ...), resumable")
    run.add_argument("suite", nargs="?", help="suite YAML (optional with --resume: the run names it)")
    run.add_argument("--model", "-m", action="append", dest="models", metavar="MODEL",
                     help="a model to run (repeatable, or a,b,c); default: the suite's models")  # fmt: skip
    run.add_argument("--config", help="gateway config file (default: the suite's, else the embedded one)")
    run.add_argument("--concurrency", "-j", type=int, help="calls in flight (default: the suite's, 4)")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--run-file", help="where results go, one line each (default: $LLMRELAY_HOME/evals/)")
    where.add_argument("--resume", metavar="RUN", help="continue RUN: only the cases it has no result for")
    run.add_argument("--judge-model", help="default model for llm_judge graders")
    run.add_argument("--no-cache", action="store_true", help="bypass the response cache (fresh answers)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar (there is none off a TTY)")
    _report_options(run)

    report = cmds.add_parser("report", help="the report of a finished (or partial) run file")
    report.add_argument("run", help="run file (JSONL)")
    _report_options(report)

    diff = cmds.add_parser("diff", help="cases that regressed and improved from run A to run B")
    diff.add_argument("a", help="the earlier run file")
    diff.add_argument("b", help="the later run file")
    diff.add_argument("--output", "-o", action="append", default=[], help="write .json or .md too")
    diff.add_argument("--fail-on-regression", action="store_true", help="exit 1 when any case regressed")


def _report_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", "-o", action="append", default=[], metavar="FILE", type=_report_path,
                   help="write the report; the suffix picks the format: .json .md .html .xml (JUnit) .txt")  # fmt: skip
    p.add_argument("--threshold", action="append", default=[], metavar="[CATEGORY=]RATE",
                   help="minimum pass rate, overall (0.9) or per category (billing=0.95); exit 1 below it")  # fmt: skip
    p.add_argument("--max-failures", type=at_least(0), default=20, help="failed cases listed in the terminal")


def _report_path(text: str) -> str:
    """Checked before the suite runs, not after: the suffix picks the format."""
    from ..evals.render import WRITERS

    if Path(text).suffix.lower() not in WRITERS:
        raise argparse.ArgumentTypeError(f"{text!r}: the suffix picks the format: {', '.join(WRITERS)}")
    return text


def run(args: argparse.Namespace) -> int:
    command = {"run": _run, "report": _report, "diff": _diff}[args.eval_command]
    return command(args)


def _run(args: argparse.Namespace) -> int:
    from ..evals import RunFile, RunOptions, load_suite, run_header, run_suite

    thresholds = _thresholds(args.threshold)  # bad options fail before any call
    if args.concurrency is not None and args.concurrency < 1:
        raise ConfigError("--concurrency is at least 1")
    resumed = RunFile.open(args.resume) if args.resume else None
    suite_path = args.suite or (resumed.header.get("suite_path") if resumed else None)
    if suite_path is None:
        raise ConfigError("eval run: name a suite file (or --resume a run file)")
    suite = load_suite(suite_path)
    models = _split(args.models) or (resumed.header["models"] if resumed else suite.models)
    if not models:
        raise ConfigError(f"{suite_path}: no models: list them in the suite (models:) or pass --model")
    options = RunOptions(
        models=models,
        concurrency=args.concurrency or suite.concurrency,
        no_cache=args.no_cache,
        judge_model=args.judge_model,
        config=args.config,
    )
    header = run_header(suite, options)
    if resumed is not None:
        run_file = resumed
        run_file.write_header({**header, "resumed": True})
    else:
        run_file = RunFile.create(args.run_file or default_run_path(suite.name), header)
    print(f"run file: {run_file.path}", file=sys.stderr)
    progress = Progress(sys.stderr) if not args.no_progress and sys.stderr.isatty() else None
    try:
        results = asyncio.run(run_suite(suite, run_file, options, on_result=progress))
    except KeyboardInterrupt:
        if progress:
            progress.close()
        print(
            f"\ninterrupted: {len(run_file.results)} results kept; resume with:\n"
            f"  llmrelay eval run --resume {run_file.path}",
            file=sys.stderr,
        )
        return 130
    if progress:
        progress.close()
    merged = {**suite.thresholds, **thresholds}
    return _finish(suite.name, results, models, suite.categories, merged, args)


def _report(args: argparse.Namespace) -> int:
    from ..evals import RunFile

    run_file = RunFile.open(args.run)
    header = run_file.header
    thresholds = {**header.get("thresholds", {}), **_thresholds(args.threshold)}
    return _finish(
        header.get("suite", "run"), run_file.ordered(), header.get("models", []),
        header.get("categories", []), thresholds, args,
    )  # fmt: skip


def _finish(
    name: str,
    results: list,
    models: Sequence[str],
    categories: Sequence[str],
    thresholds: dict[str, float],
    args: argparse.Namespace,
) -> int:
    from ..evals import gate, summarize, write_report
    from ..evals.render import terminal

    summary = summarize(name, results, models, categories)
    failures = gate(summary, thresholds) if thresholds else None
    for path in args.output:
        write_report(path, summary, failures)
    print(terminal(summary, failures, max_failures=args.max_failures))
    return 1 if failures else 0


def _diff(args: argparse.Namespace) -> int:
    from ..evals import RunFile, diff_runs
    from ..evals.diff import diff_json, render_diff

    d = diff_runs(RunFile.open(args.a), RunFile.open(args.b))
    for path in args.output:
        suffix = Path(path).suffix.lower()
        if suffix not in (".json", ".md"):
            raise ConfigError(f"--output {path}: diff writes .json or .md")
        text = diff_json(d) if suffix == ".json" else f"```\n{render_diff(d)}\n```\n"
        Path(path).write_text(text, encoding="utf-8")
    print(render_diff(d))
    return 1 if args.fail_on_regression and d.regressions else 0


def _thresholds(values: list[str]) -> dict[str, float]:
    from ..evals import parse_thresholds

    return parse_thresholds(values)


def _split(values: list[str] | None) -> list[str]:
    return [m.strip() for v in values or [] for m in v.split(",") if m.strip()]


def default_run_path(name: str) -> Path:
    home = Path(os.environ.get("LLMRELAY_HOME", "~/.llmrelay")).expanduser()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return home / "evals" / f"{name}-{stamp}-{str(ULID())[-4:].lower()}.jsonl"


class Progress:
    """``[#####-----] 12/40  pass 10  fail 2  error 0`` on one line of a terminal."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self.counts = {"pass": 0, "fail": 0, "error": 0}
        self.started = time.monotonic()

    def __call__(self, result, done: int, total: int) -> None:  # type: ignore[no-untyped-def]
        self.counts[result.status] += 1
        filled = self.width * done // total
        bar = "#" * filled + "-" * (self.width - filled)
        counts = "  ".join(f"{k} {v}" for k, v in self.counts.items())
        elapsed = time.monotonic() - self.started
        self.stream.write(f"\r[{bar}] {done}/{total}  {counts}  {elapsed:.0f}s ")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()
