"""``llmrelay logs`` and ``llmrelay costs`` read the call log as a user would, from the shell."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import yaml

from llmrelay.observability.sqlite_store import SqliteCallStore

from .test_calllog import record


async def _seed(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"calllog": {"directory": str(home), "store": "sqlite:///calls.db"}}))
    store = SqliteCallStore(home / "calls.db")
    await store.open()
    now = time.time()
    await store.write(
        [
            record(1, started_at=now - 30, requested_model="a", model="a", cost_usd="0.1"),
            record(
                2,
                started_at=now - 20,
                requested_model="a",
                model="a",
                cost_usd="0.2",
                status="error:UpstreamTimeout",
            ),
            record(3, started_at=now - 10, requested_model="b", model="b", cost_usd="0.3"),
            record(4, started_at=now - 10 * 86_400, requested_model="old", model="old", cost_usd="5"),
        ]
    )
    await store.close()
    return config


def llmrelay(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "llmrelay", *args], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


async def test_logs_table_filters_and_json(tmp_path):
    config = await _seed(tmp_path)
    out = llmrelay("logs", "--config", str(config), "--since", "1h")
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["time", "(UTC)", "id"] and len(lines) == 2 + 3  # header, rule, 3 calls
    assert "old" not in out and "error:UpstreamTimeout" in out
    errors = llmrelay("logs", "--config", str(config), "--status", "error", "--json")
    (only,) = [json.loads(line) for line in errors.splitlines()]
    assert only["status"] == "error:UpstreamTimeout" and only["attempts"][0]["deployment"] == "p/u"
    exact = llmrelay("logs", "--config", str(config), "--status", "error:UpstreamTimeout", "--json")
    assert [json.loads(line)["id"] for line in exact.splitlines()] == [only["id"]]


def test_logs_refuses_a_status_no_call_can_have(tmp_path):
    # A misspelt status would match nothing and read as "no such calls".
    for bad in ("sucess", "errors", "error:", "error:Upstream Timeout"):
        result = subprocess.run(
            [sys.executable, "-m", "llmrelay", "logs", "--config", str(tmp_path / "x.yaml"), "--status", bad],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 2 and "is not a call status" in result.stderr, (bad, result.stderr)
        assert "Traceback" not in result.stderr


async def test_costs_by_model_sums_exactly(tmp_path):
    config = await _seed(tmp_path)
    out = llmrelay("costs", "--config", str(config), "--by", "model", "--since", "1d")
    assert "total $0.600000 over 3 requests" in out
    rows = {
        line.split()[0]: line.split()
        for line in out.splitlines()[2:]
        if line and not line.startswith("total")
    }
    assert rows["a"][1:3] == ["2", "1"] and rows["b"][5] == "$0.300000"
    assert "old" in llmrelay("costs", "--config", str(config))  # all time
