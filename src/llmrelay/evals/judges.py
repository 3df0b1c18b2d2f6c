"""Model-backed graders: ``llm_judge`` (a model grades against a rubric, through llmrelay's own
pipeline, so its calls are cached, priced and on record) and ``similarity`` (local embeddings)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field

from .calls import call_model
from .grading import Answer, Grade, GradeEnv, Params, ValueParams, grader

JUDGE_SYSTEM = (
    "You grade an AI assistant's answer against a rubric. Judge only what the rubric asks; "
    "be strict and consistent."
)
_VERDICT = {
    "pass_fail": "Reply with PASS or FAIL on the first line, then one sentence saying why.",
    "score": (
        "Reply with a score from 0 to 1 on the first line (1: fully meets the rubric, 0: not at "
        "all), then one sentence saying why."
    ),
}
_PASS_FAIL = re.compile(r"\b(PASS|FAIL)\b", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)")


class JudgeParams(Params):
    rubric: str
    model: str | None = None  # default: the suite's judge_model (or --judge-model)
    mode: Literal["pass_fail", "score"] = "pass_fail"
    threshold: float = Field(default=0.5, ge=0, le=1)  # score mode: passes at or above this


def judge_prompt(p: JudgeParams, answer: Answer) -> str:
    parts = [f"Rubric:\n{p.rubric}", f"Input:\n{answer.case.input_text}", f"Answer:\n{answer.text}"]
    if answer.case.expected is not None:
        parts.append(f"Reference answer:\n{answer.case.expected}")
    parts.append(_VERDICT[p.mode])
    return "\n\n".join(parts)


@grader("llm_judge", JudgeParams)
async def llm_judge(p: JudgeParams, answer: Answer, env: GradeEnv) -> Grade:
    model = p.model or env.judge_model
    if model is None or env.relay is None:
        return Grade.of(False, "no judge model: set judge_model in the suite, or model on the grader")
    request = {
        "model": model,
        "temperature": 0,
        "max_tokens": 200,
        "messages": [
            {"role": "system", "content": JUDGE_SYSTEM},
            {"role": "user", "content": judge_prompt(p, answer)},
        ],
    }
    outcome = await call_model(env.relay, request, no_cache=env.no_cache)  # GatewayError: the run's
    if outcome.cost_usd is not None:
        answer.judge_cost_usd += outcome.cost_usd
    verdict = outcome.text.strip()
    why = f"{model}: {verdict[:300]}"
    if p.mode == "pass_fail":
        found = _PASS_FAIL.search(verdict)
        if found is None:
            return Grade.of(False, f"the judge answered neither PASS nor FAIL: {why}")
        return Grade.of(found.group(1).upper() == "PASS", why)
    number = _NUMBER.search(verdict)
    if number is None:
        return Grade.of(False, f"the judge gave no score: {why}")
    score = _unit(float(number.group(1)))
    return Grade(score >= p.threshold, score, why)


def _unit(score: float) -> float:
    """A score on 0..1; a judge that answers on 0..10 or 0..100 anyway is scaled down."""
    for scale in (1, 10, 100):
        if score <= scale:
            return score / scale
    return 1.0


class SimilarityParams(ValueParams):
    threshold: float = Field(default=0.8, ge=-1, le=1)  # cosine similarity of MiniLM embeddings


@grader("similarity", SimilarityParams)
async def similarity(p: SimilarityParams, answer: Answer, env: GradeEnv) -> Grade:
    wanted: Any = p.wanted(answer)
    vectors = await env.embedder().embed([answer.text, wanted if isinstance(wanted, str) else str(wanted)])
    score = float(vectors[0] @ vectors[1])
    ok = score >= p.threshold
    return Grade(ok, max(score, 0.0), f"similarity {score:.3f} {'>=' if ok else '<'} {p.threshold:g}")
