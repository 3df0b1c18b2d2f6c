"""examples/evals/tickets.yaml end to end: exact scores and costs, the CI gate, the reports
(JUnit XML read by a real XML parser), diff, and the model benchmark's recommendation.

The simulator's rules (examples/evals/sim_rules.yaml) script each model's mistakes; costs are
the simulator's token counts at the catalog prices of the models the simulated ones mirror.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from decimal import Decimal
from pathlib import Path

import pytest

from llmrelay.cli import main

EXAMPLE = Path(__file__).parent.parent / "examples" / "evals"
SUITE = str(EXAMPLE / "tickets.yaml")
MODELS = ["sim/gpt-4o-mini", "sim/claude-haiku", "sim/gpt-4o", "sim/claude-sonnet"]
# USD per million tokens (input, output) of gpt-4o-mini, claude-haiku-4-5, gpt-4o, claude-sonnet-4-5.
PRICES = {
    "sim/gpt-4o-mini": (Decimal("0.15"), Decimal("0.60")),
    "sim/claude-haiku": (Decimal("1"), Decimal("5")),
    "sim/gpt-4o": (Decimal("2.50"), Decimal("10")),
    "sim/claude-sonnet": (Decimal("3"), Decimal("15")),
}
MISTAKES = {
    "sim/gpt-4o-mini": {"bitext-3374", "bitext-3840", "bitext-4616", "bitext-0083", "bitext-1588"},
    "sim/claude-haiku": {"bitext-0688", "bitext-0239"},
    "sim/gpt-4o": {"bitext-4150"},
    "sim/claude-sonnet": set(),
}


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The example run once on its four models, with every report written."""
    out = tmp_path_factory.mktemp("example")
    code = main(
        ["eval", "run", SUITE, "--run-file", str(out / "run.jsonl"), "--no-progress"]
        + [arg for ext in ("json", "xml", "html", "md") for arg in ("-o", str(out / f"report.{ext}"))]
    )
    assert code == 0  # no threshold: the run itself succeeds
    return out


def test_exact_pass_rates_and_failures(example):
    report = json.loads((example / "report.json").read_text())
    stats = {m["model"]: m for m in report["models"]}
    assert [m["model"] for m in report["models"]] == MODELS
    assert {m: s["passed"] for m, s in stats.items()} == {
        "sim/gpt-4o-mini": 35, "sim/claude-haiku": 38, "sim/gpt-4o": 39, "sim/claude-sonnet": 40,
    }  # fmt: skip
    assert all(s["cases"] == 40 and s["errors"] == 0 for s in stats.values())
    failed = {(r["model"], r["case"]) for r in report["results"] if r["status"] != "pass"}
    assert failed == {(m, c) for m, cases in MISTAKES.items() for c in cases}
    billing = report["categories"]["billing"]
    assert {m: billing[m]["pass_rate"] for m in MODELS} == {
        "sim/gpt-4o-mini": 0.8, "sim/claude-haiku": 0.9, "sim/gpt-4o": 1.0, "sim/claude-sonnet": 1.0,
    }  # fmt: skip
    prose = next(
        r for r in report["results"] if r["case"] == "bitext-0083" and r["model"] == "sim/gpt-4o-mini"
    )
    assert [g["passed"] for g in prose["grades"]] == [False, False, True]  # json_valid, json_field, cost


def test_exact_costs_at_catalog_prices(example):
    stats = {m["model"]: m for m in json.loads((example / "report.json").read_text())["models"]}
    assert {m: s["cost_usd"] for m, s in stats.items()} == {
        "sim/gpt-4o-mini": "0.00070545",
        "sim/claude-haiku": "0.004931",
        "sim/gpt-4o": "0.0117275",
        "sim/claude-sonnet": "0.014793",
    }
    for model, (price_in, price_out) in PRICES.items():
        s = stats[model]
        expected = (s["prompt_tokens"] * price_in + s["completion_tokens"] * price_out) / 1_000_000
        assert Decimal(s["cost_usd"]) == expected
        assert Decimal(s["cost_per_request_usd"]) == round(expected / 40, 10)
        assert Decimal(s["cost_per_correct_usd"]) == round(expected / s["passed"], 10)
    assert stats["sim/gpt-4o-mini"]["prompt_tokens"] == 3731


def test_junit_xml_parses_with_one_suite_per_model(example):
    root = ET.parse(example / "report.xml").getroot()
    assert root.tag == "testsuites" and root.get("tests") == "160" and root.get("failures") == "8"
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert list(suites) == [f"tickets [{m}]" for m in MODELS]
    mini = suites["tickets [sim/gpt-4o-mini]"]
    assert mini.get("failures") == "5" and len(mini.findall("testcase")) == 40
    failures = {
        c.get("name"): c.find("failure") for c in mini.findall("testcase") if c.find("failure") is not None
    }
    assert set(failures) == MISTAKES["sim/gpt-4o-mini"]
    assert "expected 'billing', got 'orders'" in failures["bitext-3374"].get("message")
    assert mini.find("testcase").get("classname") == "tickets.billing"


def test_html_and_markdown_reports(example):
    html = (example / "report.html").read_text()
    assert html.startswith("<!doctype html>") and "bitext-3374" in html and "<script" not in html
    markdown = (example / "report.md").read_text()
    assert "| sim/claude-haiku | 95.0% | 38/40 |" in markdown


@pytest.mark.parametrize(
    ("thresholds", "code"),
    [
        (["0.85"], 0),
        (["0.9"], 1),  # gpt-4o-mini: 87.5%
        (["billing=0.8"], 0),
        (["billing=0.95"], 1),  # gpt-4o-mini 80%, claude-haiku 90%
        (["0.8", "orders=0.9"], 0),
    ],
)
def test_gate_exit_codes(example, capsys, thresholds, code):
    args = ["eval", "report", str(example / "run.jsonl")]
    assert main(args + [a for t in thresholds for a in ("--threshold", t)]) == code
    out = capsys.readouterr().out
    assert ("gate: FAILED" in out) == bool(code) and ("gate: passed" in out) != bool(code)


def test_gate_on_a_run_and_an_unknown_category(example, tmp_path, capsys):
    args = ["eval", "run", SUITE, "--model", "sim/claude-sonnet", "--run-file", str(tmp_path / "r.jsonl")]
    assert main([*args, "--threshold", "1.0", "--threshold", "billing=1"]) == 0
    assert main(["eval", "report", str(tmp_path / "r.jsonl"), "--threshold", "weather=0.9"]) == 2
    assert "unknown categories ['weather']" in capsys.readouterr().err


def test_diff_after_a_model_switch(example, tmp_path, capsys):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert main(["eval", "run", SUITE, "-m", "sim/gpt-4o", "--run-file", str(a)]) == 0
    assert main(["eval", "run", SUITE, "-m", "sim/gpt-4o-mini", "--run-file", str(b)]) == 0
    capsys.readouterr()
    code = main(["eval", "diff", str(a), str(b), "--fail-on-regression", "-o", str(tmp_path / "d.json")])
    assert code == 1
    d = json.loads((tmp_path / "d.json").read_text())
    assert {c["case"] for c in d["regressions"]} == MISTAKES["sim/gpt-4o-mini"]
    assert [c["case"] for c in d["improvements"]] == ["bitext-4150"]
    assert d["pass_rates"] == {"sim/gpt-4o -> sim/gpt-4o-mini": {"a": 0.975, "b": 0.875}}
    out = capsys.readouterr().out
    assert "regressed (5):" in out and "improved (1):" in out
    assert main(["eval", "diff", str(a), str(a), "--fail-on-regression"]) == 0


def bench(*extra: str) -> list[str]:
    return [
        "bench", str(EXAMPLE / "tickets.jsonl"), "--simulator-rules", str(EXAMPLE / "sim_rules.yaml"),
        "--json", *extra,
    ]  # fmt: skip


def test_bench_recommends_the_cheapest_model_meeting_the_bar(tmp_path, capsys):
    args = bench(
        "--models", ",".join(MODELS), "--min-accuracy", "0.9", "--run-file", str(tmp_path / "b.jsonl")
    )
    assert main(args) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["recommendation"] == "sim/claude-haiku"  # gpt-4o-mini is cheaper but at 87.5%
    stats = {m["model"]: m for m in body["models"]}
    assert {m: s["pass_rate"] for m, s in stats.items()} == {
        "sim/gpt-4o-mini": 0.875, "sim/claude-haiku": 0.95, "sim/gpt-4o": 0.975, "sim/claude-sonnet": 1.0,
    }  # fmt: skip
    for model, (price_in, price_out) in PRICES.items():
        s = stats[model]
        assert (
            Decimal(s["cost_usd"])
            == (s["prompt_tokens"] * price_in + s["completion_tokens"] * price_out) / 10**6
        )
    assert stats["sim/claude-haiku"]["cost_per_request_usd"] == "0.0000833000"
    # The same finished run, re-ranked with a higher bar: resumed, nothing left to call.
    assert (
        main(
            [
                *bench("--models", ",".join(MODELS), "--min-accuracy", "0.97"),
                "--resume",
                str(tmp_path / "b.jsonl"),
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["recommendation"] == "sim/gpt-4o"


def test_bench_says_when_no_model_meets_the_bar(tmp_path, capsys):
    args = bench(
        "--models", "sim/gpt-4o-mini", "--min-accuracy", "0.9", "--run-file", str(tmp_path / "b.jsonl")
    )
    assert main(args) == 1
    body = json.loads(capsys.readouterr().out)
    assert body["recommendation"] is None
    assert body["message"] == "no model reaches 90.0% accuracy; the most accurate is sim/gpt-4o-mini at 87.5%"
