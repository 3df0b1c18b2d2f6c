"""Every grader on a passing and a failing answer; the LLM judge against the simulator."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from llmrelay.errors import ConfigError
from llmrelay.evals import Answer, GradeEnv, RunFile, RunOptions, build_suite, run_header, run_suite
from llmrelay.types import Usage


def case_with(spec, *, expected=None, base_dir: Path = Path(".")):
    raw = {"cases": [{"id": "c1", "input": "hi", "expected": expected, "graders": [spec]}]}
    return build_suite(raw, source="test", base_dir=base_dir, name="t").cases[0]


async def grade(spec, text, *, expected=None, latency_ms=10.0, cost=Decimal("0.0001"), base_dir=Path(".")):
    case = case_with(spec, expected=expected, base_dir=base_dir)
    answer = Answer(text, case, "m", latency_ms, cost, Usage())
    return await case.graders[0].grade(answer, GradeEnv())


async def test_exact_match():
    assert (await grade({"type": "exact_match"}, " billing\n", expected="billing")).passed
    failed = await grade({"type": "exact_match", "value": "billing"}, "Billing")
    assert not failed.passed and "expected 'billing'" in failed.reason
    assert (await grade({"type": "exact_match", "value": "billing", "ignore_case": True}, "Billing")).passed
    # A non-text expected value is compared as JSON (a code fence around the answer is fine).
    assert (await grade("exact_match", '```json\n{"a": 1}\n```', expected={"a": 1})).passed
    assert not (await grade("exact_match", '{"a": 2}', expected={"a": 1})).passed


async def test_contains_and_its_negation():
    assert (await grade({"type": "contains", "value": "refund"}, "We sent the refund.")).passed
    failed = await grade({"type": "contains", "value": ["refund", "sorry"]}, "We sent the refund.")
    assert not failed.passed and failed.score == 0.5 and "sorry" in failed.reason
    assert (await grade({"type": "contains", "value": ["x", "refund"], "any": True}, "refund")).passed
    assert (await grade({"type": "contains", "value": "REFUND", "ignore_case": True}, "refund")).passed
    assert (await grade({"type": "not-contains", "value": "sorry"}, "We sent the refund.")).passed
    assert not (await grade({"type": "not_contains", "value": "refund"}, "We sent the refund.")).passed


async def test_regex():
    assert (await grade({"type": "regex", "value": r"order #\d+"}, "Your order #123 shipped")).passed
    assert not (await grade({"type": "regex", "value": r"order #\d+"}, "Your order shipped")).passed
    assert (await grade({"type": "regex", "value": "ORDER", "ignore_case": True}, "order")).passed
    with pytest.raises(ConfigError, match="bad regex"):
        case_with({"type": "regex", "value": "("})


async def test_json_valid():
    assert (await grade("json_valid", 'Here:\n```json\n{"ok": true}\n```')).passed
    failed = await grade("json_valid", "Sure! It is billing.")
    assert not failed.passed and "not valid JSON" in failed.reason


async def test_json_schema_inline_and_from_a_file(tmp_path):
    schema = {
        "type": "object",
        "required": ["category"],
        "properties": {"category": {"enum": ["billing", "orders"]}},
    }
    assert (await grade({"type": "json_schema", "schema": schema}, '{"category": "billing"}')).passed
    failed = await grade({"type": "json_schema", "schema": schema}, '{"category": "weather"}')
    assert not failed.passed and "category" in failed.reason
    (tmp_path / "schema.yaml").write_text("type: object\nrequired: [id]\n")
    assert (
        await grade({"type": "json_schema", "file": "schema.yaml"}, '{"id": 1}', base_dir=tmp_path)
    ).passed
    assert not (await grade({"type": "json_schema", "file": "schema.yaml"}, "{}", base_dir=tmp_path)).passed
    with pytest.raises(ConfigError, match="not a valid JSON Schema"):
        case_with({"type": "json_schema", "schema": {"type": "nonsense"}})


async def test_json_field_expressions():
    answer = (
        '{"category": "billing", "priority": "high", "items": [{"sku": "A1"}, {"sku": "B2"}], "total": 12.5}'
    )
    for expr in (
        'category == "billing"',
        'category == "billing" and priority in ["high", "urgent"]',
        'items[0].sku == "A1" and len(items) == 2',
        "total > 10 and not total >= 20",
        'lower(category) != "orders"',
    ):
        assert (await grade({"type": "json_field", "expr": expr}, answer)).passed, expr
    failed = await grade({"type": "json_field", "expr": 'category == "orders"'}, answer)
    assert not failed.passed and "is false" in failed.reason
    missing = await grade({"type": "json_field", "expr": 'team == "a"'}, answer)
    assert not missing.passed and "no field 'team'" in missing.reason
    # The field form compares with the case's expected (the same path in an expected object).
    assert (
        await grade({"type": "json_field", "field": "category"}, answer, expected={"category": "billing"})
    ).passed
    assert not (await grade({"type": "json_field", "field": "priority"}, answer, expected="low")).passed


async def test_json_field_is_not_eval():
    for unsafe in (
        '__import__("os").system("true")',
        "(lambda: 1)()",
        "category.__class__.__bases__",
        "x if y else z",
    ):
        try:
            case = case_with({"type": "json_field", "expr": unsafe})
        except ConfigError:
            continue  # refused when the suite loads
        # Attribute access only ever reads JSON keys: no Python object is reachable.
        result = await case.graders[0].grade(
            Answer('{"category": "a"}', case, "m", 1, None, Usage()), GradeEnv()
        )
        assert not result.passed and "no field" in result.reason, unsafe


async def test_python_grader(tmp_path):
    (tmp_path / "checks.py").write_text(
        "def grade(output, context):\n"
        "    return {'pass': output.startswith('Hi'), 'score': 0.7, 'reason': context['case_id']}\n"
        "def length(output, context):\n"
        "    return min(len(output) / 10, 1.0)\n"
        "def broken(output, context):\n"
        "    raise RuntimeError('boom')\n"
    )
    ok = await grade({"type": "python", "value": "checks.py"}, "Hi there", base_dir=tmp_path)
    assert ok.passed and ok.score == 0.7 and ok.reason == "c1"
    assert not (await grade({"type": "python", "value": "checks.py"}, "Bye", base_dir=tmp_path)).passed
    assert (
        await grade(
            {"type": "python", "value": "checks:length", "threshold": 0.5}, "123456", base_dir=tmp_path
        )
    ).passed
    assert not (await grade({"type": "python", "value": "checks:length"}, "1234", base_dir=tmp_path)).passed
    broken = await grade({"type": "python", "value": "checks.py:broken"}, "x", base_dir=tmp_path)
    assert not broken.passed and "RuntimeError: boom" in broken.reason
    with pytest.raises(ConfigError, match="no function 'nope'"):
        case_with({"type": "python", "value": "checks.py:nope"}, base_dir=tmp_path)


async def test_cost_and_latency_assertions():
    assert (await grade({"type": "cost", "threshold": 0.001}, "x", cost=Decimal("0.0002"))).passed
    assert not (await grade({"type": "cost", "threshold": 0.0001}, "x", cost=Decimal("0.0002"))).passed
    assert not (await grade({"type": "cost", "threshold": 1}, "x", cost=None)).passed  # unknown price
    assert (await grade({"type": "latency", "threshold": 500}, "x", latency_ms=120)).passed
    assert not (await grade({"type": "latency", "threshold": 100}, "x", latency_ms=120)).passed


async def test_similarity_with_local_embeddings():
    spec = {"type": "similarity", "threshold": 0.7}
    close = await grade(spec, "How do I reset my password?", expected="How can I reset my password?")
    assert close.passed and close.score > 0.9
    far = await grade(spec, "The parcel left the warehouse today.", expected="How can I reset my password?")
    assert not far.passed and far.score < 0.5


def test_grader_errors_name_the_place():
    with pytest.raises(ConfigError, match=r"cases\[0\]: graders\[0\]: unknown grader 'nope'"):
        case_with({"type": "nope"})
    with pytest.raises(ConfigError, match="contains: needs a value"):
        case_with({"type": "contains"})
    with pytest.raises(ConfigError, match="regex: bogus"):
        case_with({"type": "regex", "value": "x", "bogus": 1})


JUDGE_RULES = """
rules:
  - {model: claude-sonnet-4-5, match: '(?s)Rubric:\\s*Rate the politeness.*Answer:\\s*You said: please', reply: "0.9\\nPolite."}
  - {model: claude-sonnet-4-5, match: '(?s)Rubric:\\s*Rate the politeness', reply: "2/10\\nCurt."}
  - {model: claude-sonnet-4-5, match: '(?s)Answer:\\s*You said: .*refund', reply: "PASS\\nIt promises the refund."}
  - {model: claude-sonnet-4-5, match: 'Rubric:', reply: "FAIL\\nNo refund is mentioned."}
"""


async def test_llm_judge_through_the_pipeline_against_the_simulator(tmp_path):
    (tmp_path / "rules.yaml").write_text(JUDGE_RULES)
    refund = {"type": "llm_judge", "rubric": "The answer promises a refund."}
    polite = {
        "type": "llm_judge",
        "rubric": "Rate the politeness of the answer.",
        "mode": "score",
        "threshold": 0.5,
    }
    raw = {
        "models": ["sim/gpt-4o-mini"],
        "judge_model": "sim/claude-sonnet",
        "simulator_rules": "rules.yaml",
        "cases": [
            {"id": "refund", "input": "your refund is on its way", "graders": [refund]},
            {"id": "no-refund", "input": "we cannot help", "graders": [refund]},
            {"id": "polite", "input": "please wait a moment", "graders": [polite]},
            {"id": "curt", "input": "wait", "graders": [polite]},
        ],
    }
    suite = build_suite(raw, source="judge", base_dir=tmp_path, name="judge")
    options = RunOptions(models=suite.models)
    run = RunFile.create(tmp_path / "run.jsonl", run_header(suite, options))
    results = {r.case: r for r in await run_suite(suite, run, options)}
    assert {k: r.status for k, r in results.items()} == {
        "refund": "pass", "no-refund": "fail", "polite": "pass", "curt": "fail",
    }  # fmt: skip
    assert results["refund"].grades[0]["reason"] == "sim/claude-sonnet: PASS\nIt promises the refund."
    assert results["polite"].score == 0.9 and results["curt"].score == 0.2  # 2/10 scaled to 0..1
    # The judge's calls went through the pipeline and were priced at claude-sonnet-4-5's rates.
    assert all(r.judge_cost_usd > 0 for r in results.values())
    assert results["refund"].judge_cost_usd < Decimal("0.01")
