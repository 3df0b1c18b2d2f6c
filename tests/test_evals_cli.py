"""``llmrelay eval``: bad suites are clear errors (exit 2), and a killed run resumes without
re-running what it finished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from llmrelay.cli import main

ROOT = Path(__file__).parent.parent


def cli(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        env.pop(key, None)
    return subprocess.Popen(
        [sys.executable, "-m", "llmrelay.cli", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **kwargs,
    )  # fmt: skip


GOOD_CASE = {"id": "a", "input": "hi", "graders": [{"type": "contains", "value": "hi"}]}


@pytest.mark.parametrize(
    ("suite", "message"),
    [
        ("name: [unclosed", "is not valid YAML"),
        ("- just a list", "a suite is a mapping"),
        ({"models": ["sim/gpt-4o"], "cases": []}, "cases: the suite has no cases"),
        (
            {"models": ["sim/gpt-4o"], "cases": [{"id": "a", "graders": ["json_valid"]}]},
            "cases[0]: a case needs input",
        ),
        (
            {"models": ["sim/gpt-4o"], "cases": [{"input": "x", "graders": [{"type": "nope"}]}]},
            "unknown grader 'nope'",
        ),
        ({"models": ["sim/gpt-4o"], "cases": [{"input": "x"}]}, "the case has no graders"),
        ({"models": ["sim/gpt-4o"], "cases": [GOOD_CASE, GOOD_CASE]}, "case id 'a' is used twice"),
        ({"models": ["sim/gpt-4o"], "cases": [{**GOOD_CASE, "colour": 1}]}, "cases[0]: colour: Extra inputs"),
        ({"models": ["sim/gpt-4o"], "params": {"temperature": 9}, "cases": [GOOD_CASE]}, "temperature"),
        (
            {"models": ["sim/gpt-4o"], "prompt": "{{missing}}", "cases": [GOOD_CASE]},
            "{{missing}}, which is not set",
        ),
        ({"models": ["sim/gpt-4o"], "cases": "nowhere.jsonl"}, "Cannot read cases file"),
        ({"models": ["sim/gpt-5-imaginary"], "cases": [GOOD_CASE]}, "Unknown model 'sim/gpt-5-imaginary'"),
        (
            {
                "models": ["sim/gpt-4o"],
                "cases": [{"input": "x", "graders": [{"type": "llm_judge", "rubric": "r"}]}],
            },
            "llm_judge needs a model",
        ),
        ({"cases": [GOOD_CASE]}, "no models"),
    ],
)
def test_bad_suite_is_a_clear_error_with_exit_2(tmp_path, capsys, suite, message):
    path = tmp_path / "suite.yaml"
    path.write_text(suite if isinstance(suite, str) else yaml.safe_dump(suite))
    assert main(["eval", "run", str(path), "--run-file", str(tmp_path / "run.jsonl")]) == 2
    err = capsys.readouterr().err
    assert message in err, err


def test_bad_input_from_the_command_line_is_exit_2_without_a_traceback(tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        yaml.safe_dump({"models": ["sim/gpt-4o"], "cases": [{"input": "x", "graders": ["regex"]}]})
    )
    for args in (
        ["eval", "run", str(suite)],
        ["eval", "run", str(tmp_path / "missing.yaml")],
        ["eval", "report", str(suite)],  # not a run file
        ["eval", "run", str(suite), "--threshold", "lots"],
    ):
        process = cli(*args)
        out, err = process.communicate(timeout=60)
        assert process.returncode == 2, (args, err)
        assert err.startswith("llmrelay: ") and "Traceback" not in err, err


SLOW_SUITE = {
    "name": "slow",
    "models": ["slow-model"],
    "concurrency": 2,
    # Its own gateway config: one simulated model answering each call after 250 ms.
    "config": {
        "providers": {"sim": {"kind": "openai", "base_url": "http://127.0.0.1:0/v1", "simulated": True}},
        "models": [
            {
                "name": "slow-model",
                "provider": "sim",
                "upstream": "gpt-4o-mini",
                "price_ref": "gpt-4o-mini",
                "price_provider": "openai",
            }
        ],
        "simulator": {"enabled": True, "settings": {"latency_ms": 250}},
        "calllog": {"enabled": False},
    },
    "cases": [
        {
            "id": f"c{i:02d}",
            "input": f"question {i}",
            "graders": [{"type": "contains", "value": f"question {i}"}],
        }
        for i in range(16)
    ],
}


def result_lines(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text().splitlines():
        row = json.loads(line)  # every line is whole: a half-written one was cut off on resume
        if row["kind"] == "result":
            rows.append(row)
    return rows


def test_a_killed_run_resumes_without_rerunning_finished_cases(tmp_path):
    suite, run = tmp_path / "slow.yaml", tmp_path / "run.jsonl"
    suite.write_text(yaml.safe_dump(SLOW_SUITE))
    process = cli("eval", "run", str(suite), "--run-file", str(run))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not run.exists() or run.read_text().count('"kind":"result"') < 4):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # no chance to clean up: at most a half-written last line
    process.communicate(timeout=10)
    text = run.read_text()
    complete = text[: text.rfind("\n") + 1]
    finished = [json.loads(line)["case"] for line in complete.splitlines() if '"kind":"result"' in line]
    assert 4 <= len(finished) < 16, "the run should have been killed part-way"

    resumed = cli("eval", "run", "--resume", str(run), "--threshold", "1.0")
    out, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err
    rows = result_lines(run)
    cases = [r["case"] for r in rows]
    assert sorted(cases) == [f"c{i:02d}" for i in range(16)]  # each case once: none ran twice
    assert cases[: len(finished)] == finished  # kept as they were, and not run again after
    assert "slow: 16 cases x 1 models" in out and "gate: passed" in out
    headers = [json.loads(line) for line in run.read_text().splitlines() if '"kind":"run"' in line]
    assert len(headers) == 2 and headers[1]["resumed"] is True


def test_ctrl_c_keeps_the_results_and_says_how_to_resume(tmp_path):
    suite, run = tmp_path / "slow.yaml", tmp_path / "run.jsonl"
    suite.write_text(yaml.safe_dump(SLOW_SUITE))
    process = cli("eval", "run", str(suite), "--run-file", str(run))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not run.exists() or run.read_text().count('"kind":"result"') < 2):
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=20)
    assert process.returncode == 130, err
    assert f"llmrelay eval run --resume {run}" in err and "Traceback" not in err
    assert 2 <= len(result_lines(run)) < 16


def test_a_second_run_is_answered_by_the_cache(tmp_path):
    """By default answers are cached on disk: an unchanged suite run again pays nothing, and its
    report still prices every answer at the model's rate."""
    config = {
        **SLOW_SUITE["config"],
        "cache": {"backend": "sqlite", "sqlite_path": str(tmp_path / "cache.db")},
    }
    config["simulator"] = {"enabled": True}
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({**SLOW_SUITE, "config": config}))
    for name in ("first", "second"):
        assert main(["eval", "run", str(suite), "--run-file", str(tmp_path / f"{name}.jsonl")]) == 0
    first, second = result_lines(tmp_path / "first.jsonl"), result_lines(tmp_path / "second.jsonl")
    assert not any(r["cached"] for r in first) and all(r["cached"] for r in second)
    assert {r["case"]: r["cost_usd"] for r in first} == {r["case"]: r["cost_usd"] for r in second}
    assert all(r["spent_usd"] == "0" for r in second) and all(r["spent_usd"] != "0" for r in first)
    assert main(["eval", "run", str(suite), "--no-cache", "--run-file", str(tmp_path / "third.jsonl")]) == 0
    assert not any(r["cached"] for r in result_lines(tmp_path / "third.jsonl"))


def test_suite_defaults_templates_messages_and_case_files(tmp_path):
    from llmrelay.evals import load_suite

    (tmp_path / "more.jsonl").write_text(
        json.dumps({"id": "j1", "input": "from jsonl", "expected": "x"}) + "\n"
    )
    (tmp_path / "more.yaml").write_text(
        yaml.safe_dump([{"id": "y1", "input": "from yaml", "category": "other"}])
    )
    suite_file = tmp_path / "s.yaml"
    suite_file.write_text(
        yaml.safe_dump(
            {
                "models": ["sim/gpt-4o"],
                "system": "You work for {{company}}.",
                "prompt": "{{company}} customer ({{tier}}): {{input}}",
                "params": {"max_tokens": 30},
                "defaults": {
                    "category": "general",
                    "vars": {"company": "Acme", "tier": "free"},
                    "graders": ["json_valid"],
                },
                "cases": [
                    {"id": "t1", "input": "hi", "vars": {"tier": "gold"}},
                    {
                        "id": "m1",
                        "messages": [
                            {"role": "user", "content": "a"},
                            {"role": "assistant", "content": "b"},
                            {"role": "user", "content": "c"},
                        ],
                        "params": {"temperature": 0.5},
                    },
                    "more.jsonl",
                    "more.yaml",
                ],
            }
        )
    )
    suite = load_suite(suite_file)
    cases = {c.id: c for c in suite.cases}
    assert list(cases) == ["t1", "m1", "j1", "y1"] and suite.name == "s"
    assert cases["t1"].messages == [
        {"role": "system", "content": "You work for Acme."},
        {"role": "user", "content": "Acme customer (gold): hi"},
    ]
    assert cases["t1"].params == {"temperature": 0, "max_tokens": 30}
    assert cases["m1"].messages[0]["role"] == "system" and cases["m1"].input_text == "c"
    assert cases["m1"].params["temperature"] == 0.5
    assert cases["j1"].expected == "x" and suite.categories == ["general", "other"]
    # A changed case changes its hash (a resumed run re-runs it); an unchanged one keeps it.
    again = {c.id: c.hash for c in load_suite(suite_file).cases}
    assert again == {c.id: c.hash for c in suite.cases}
    (tmp_path / "more.jsonl").write_text(json.dumps({"id": "j1", "input": "changed", "expected": "x"}) + "\n")
    changed = {c.id: c.hash for c in load_suite(suite_file).cases}
    assert changed["j1"] != again["j1"] and changed["t1"] == again["t1"]
