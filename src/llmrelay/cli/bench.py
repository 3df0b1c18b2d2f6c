"""``llmrelay bench DATA.jsonl --models a,b,c``: accuracy, latency, tokens and cost of each model on
labelled rows, and the cheapest model meeting ``--min-accuracy`` (exit 1 when none does)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import orjson

from ..errors import ConfigError
from ._args import at_least
from .evals import Progress, _split, default_run_path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="benchmark models on your labelled data; recommend the cheapest good one"
    )
    p.add_argument("data", help="JSONL rows: input (or text) and expected (or label): a string or an object")
    p.add_argument("--models", "-m", action="append", required=True, help="models to compare: a,b,c")
    p.add_argument(
        "--min-accuracy", type=float, help="the bar (0..1): recommend the cheapest model meeting it"
    )
    p.add_argument("--system", help="system prompt (default: one naming the labels or fields)")
    p.add_argument("--input-field", help="the row field holding the input (default: input, else text)")
    p.add_argument("--label-field", help="the row field holding the label (default: expected, else label)")
    p.add_argument("--max-tokens", type=at_least(1), help="max_tokens of each request")
    p.add_argument("--config", help="gateway config file (default: the embedded one)")
    p.add_argument("--simulator-rules", help="rules file for the embedded simulator (docs/simulator.md)")
    p.add_argument("--concurrency", "-j", type=int, default=4)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--run-file", help="where results go (default: $LLMRELAY_HOME/evals/)")
    where.add_argument("--resume", metavar="RUN", help="continue an interrupted benchmark")
    p.add_argument("--no-cache", action="store_true", help="bypass the response cache (measure real latency)")
    p.add_argument("--output", "-o", action="append", default=[], help="also write .json .md .html .xml")
    p.add_argument("--json", action="store_true", help="print the summary and recommendation as JSON")


def run(args: argparse.Namespace) -> int:
    from ..evals import (
        RunFile,
        RunOptions,
        bench_suite,
        load_rows,
        recommend,
        run_header,
        run_suite,
        summarize,
    )
    from ..evals.render import terminal, write_report

    if args.min_accuracy is not None and not 0 <= args.min_accuracy <= 1:
        raise ConfigError("--min-accuracy is between 0 and 1 (0.9 for 90%)")
    if args.concurrency < 1:
        raise ConfigError("--concurrency is at least 1")
    models = _split(args.models)
    rows = load_rows(args.data, args.input_field, args.label_field)
    suite = bench_suite(
        rows,
        name=f"bench-{Path(args.data).stem}",
        models=models,
        system=args.system,
        params={"max_tokens": args.max_tokens} if args.max_tokens else None,
        config=str(Path(args.config).resolve()) if args.config else None,
        simulator_rules=str(Path(args.simulator_rules).resolve()) if args.simulator_rules else None,
    )
    options = RunOptions(models=models, concurrency=args.concurrency, no_cache=args.no_cache)
    header = {**run_header(suite, options), "data": str(Path(args.data).resolve())}
    if args.resume:
        run_file = RunFile.open(args.resume)
        run_file.write_header({**header, "resumed": True})
    else:
        run_file = RunFile.create(args.run_file or default_run_path(suite.name), header)
    print(f"run file: {run_file.path}", file=sys.stderr)
    progress = Progress(sys.stderr) if sys.stderr.isatty() else None
    try:
        results = asyncio.run(run_suite(suite, run_file, options, on_result=progress))
    except KeyboardInterrupt:
        print(
            f"\ninterrupted; resume with: llmrelay bench {args.data} ... --resume {run_file.path}",
            file=sys.stderr,
        )
        return 130
    finally:
        if progress:
            progress.close()
    summary = summarize(suite.name, results, models, suite.categories)
    choice = recommend(summary, args.min_accuracy)
    for path in args.output:
        write_report(path, summary)
    if args.json:
        body = {
            **summary.to_json(),
            "min_accuracy": args.min_accuracy,
            "recommendation": choice.model,
            "message": choice.message,
        }
        print(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
    else:
        print(terminal(summary, max_failures=10))
        print(f"\n{choice.message}")
    return 1 if args.min_accuracy is not None and choice.model is None else 0
