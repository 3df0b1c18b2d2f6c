"""Run a suite: every case on every model, through the in-process pipeline, a few at a time.

Each finished (case, model) is graded and appended to the run file at once, so an interrupted run
resumes where it stopped (``runfile.py``). Calls go through ``Relay.handle`` like any library
call: the cache, prices, retries and the call log all apply, so re-running unchanged cases with
a persistent cache costs nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import ConfigError, GatewayError
from ..relay import Relay
from .calls import call_model
from .grading import Answer, GradeEnv
from .runfile import Result, RunFile
from .suite import Case, Suite

OnResult = Callable[[Result, int, int], None]  # (result, done so far, total to run)


@dataclass(frozen=True)
class RunOptions:
    models: list[str]
    concurrency: int = 4
    no_cache: bool = False
    judge_model: str | None = None
    config: str | Mapping[str, Any] | None = None  # the gateway config; None: the suite's


def gateway_settings(config: str | Path | Mapping[str, Any] | None, simulator_rules: Path | None) -> Settings:
    """The gateway config evals run on (a file, a mapping, or the embedded default), with the
    embedded simulator answering from ``simulator_rules`` when given."""
    if isinstance(config, Mapping):
        settings = Settings.from_dict(dict(config), source="suite config")
    elif config is None:
        # As promptfoo does, answers are cached on disk by default (in LLMRELAY_HOME), so running a
        # suite again costs only its changed cases; --no-cache asks afresh. A config file's own
        # cache settings stand as written.
        settings = Settings.embedded()
        settings = settings.model_copy(
            update={"cache": settings.cache.model_copy(update={"backend": "sqlite"})}
        )
    else:
        settings = Settings.load(config)
    if simulator_rules is None:
        return settings
    if not simulator_rules.exists():
        raise ConfigError(f"simulator_rules: no such file {simulator_rules}")
    sim = settings.simulator
    inline = {**(sim.settings or {}), "rules_path": str(simulator_rules)}
    return settings.model_copy(
        update={"simulator": sim.model_copy(update={"settings": inline, "enabled": True})}
    )


def run_header(suite: Suite, options: RunOptions) -> dict[str, Any]:
    return {
        "suite": suite.name,
        "suite_path": str(suite.path) if suite.path else None,
        "models": options.models,
        "cases": [c.id for c in suite.cases],
        "categories": suite.categories,
        "thresholds": suite.thresholds,
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def pending(suite: Suite, run: RunFile, models: list[str]) -> list[tuple[Case, str]]:
    """The pairs still to run: no result yet, an error last time, or the case changed since."""
    todo = []
    for case in suite.cases:
        for model in models:
            done = run.results.get((case.id, model))
            if done is None or done.status == "error" or done.case_hash != case.hash:
                todo.append((case, model))
    return todo


async def run_suite(
    suite: Suite, run: RunFile, options: RunOptions, on_result: OnResult | None = None
) -> list[Result]:
    """Run what ``run`` lacks, appending each result as it finishes; all results, in report order."""
    todo = pending(suite, run, options.models)
    if todo:
        config = options.config if options.config is not None else suite.config
        settings = gateway_settings(config, suite.simulator_rules)
        env = GradeEnv(judge_model=options.judge_model or suite.judge_model, no_cache=options.no_cache)
        async with Relay(settings) as relay:
            env.relay = relay
            try:
                _preflight(suite, options.models, env)
                await _run_all(todo, run, env, options, on_result)
            finally:
                await env.aclose()
    return run.ordered()


def _preflight(suite: Suite, models: list[str], env: GradeEnv) -> None:
    """Unknown models, a judge without a model, a missing embedding model: say so before any call."""
    catalog = env.relay.catalog
    known = [entry.name for entry in catalog]
    wanted = set(models)
    for case in suite.cases:
        for g in case.graders:
            if g.kind.name == "llm_judge":
                judge = g.params.model or env.judge_model
                if judge is None:
                    raise ConfigError(
                        f"case {case.id!r}: llm_judge needs a model: set judge_model in the suite, "
                        "model on the grader, or --judge-model"
                    )
                wanted.add(judge)
            elif g.kind.name == "similarity":
                env.embedder()  # a ConfigError naming the install command if the model is missing
    for model in sorted(wanted):
        if model not in known:
            raise ConfigError(f"Unknown model {model!r}; this gateway config serves: {', '.join(known)}")


async def _run_all(
    todo: list[tuple[Case, str]], run: RunFile, env: GradeEnv, options: RunOptions, on_result: OnResult | None
) -> None:
    queue: asyncio.Queue[tuple[Case, str]] = asyncio.Queue()
    for pair in todo:
        queue.put_nowait(pair)
    done = 0

    async def worker() -> None:
        nonlocal done
        while not queue.empty():
            case, model = queue.get_nowait()
            result = await evaluate(case, model, env)
            run.append(result)
            done += 1
            if on_result is not None:
                on_result(result, done, len(todo))

    workers = [asyncio.create_task(worker()) for _ in range(min(options.concurrency, len(todo)))]
    try:
        await asyncio.gather(*workers)
    finally:
        for task in workers:
            task.cancel()


async def evaluate(case: Case, model: str, env: GradeEnv) -> Result:
    """One case on one model: the call, then every grader. A failed call is an ``error`` result."""
    base = Result(
        case=case.id, model=model, status="error", category=case.category, case_hash=case.hash,
        input=case.input_text, expected=case.expected,
    )  # fmt: skip
    request = {"model": model, "messages": case.messages, "user": "llmrelay-eval", **case.params}
    try:
        outcome = await call_model(env.relay, request, no_cache=env.no_cache)
    except GatewayError as exc:
        base.error = f"{type(exc).__name__}: {exc.message}"
        return base
    base.output = outcome.text
    base.latency_ms = round(outcome.latency_ms, 3)
    base.prompt_tokens = outcome.usage.prompt_tokens
    base.completion_tokens = outcome.usage.completion_tokens
    base.cost_usd, base.spent_usd, base.cached = outcome.cost_usd, outcome.spent_usd, outcome.cached
    base.answered_by, base.call_id = outcome.answered_by, outcome.call_id
    answer = Answer(outcome.text, case, model, outcome.latency_ms, outcome.cost_usd, outcome.usage)
    try:
        grades = [(g, await g.grade(answer, env)) for g in case.graders]
    except GatewayError as exc:  # a judge's call failed: the case could not be graded
        base.error = f"grading: {type(exc).__name__}: {exc.message}"
        base.judge_cost_usd = answer.judge_cost_usd
        return base
    base.grades = [
        {"grader": g.label, "passed": grade.passed, "score": round(grade.score, 4), "reason": grade.reason}
        for g, grade in grades
    ]
    base.score = round(sum(grade.score for _, grade in grades) / len(grades), 4)
    base.status = "pass" if all(grade.passed for _, grade in grades) else "fail"
    base.judge_cost_usd = answer.judge_cost_usd
    return base
