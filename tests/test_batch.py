"""The batch API end to end: the official ``openai`` SDK against a gateway (``llmrelay serve``) in
front of the simulator, for local batches (workers, pipeline) and forwarded ones (OpenAI and
Anthropic batch APIs), with cancel, bad files, costs at the discount and keys kept apart."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import pytest

from .conftest import MASTER_KEY, Server, serve_config, simulate_config, stop_process

KEYS = {name: f"sk-batch-test-{name}-0123456789" for name in ("a", "b", "c")}
FINAL = ("completed", "failed", "expired", "cancelled")


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    settings = {
        "batch_delay_s": 0.3,
        "per_model": {"fault-500*": {"faults": {"500": 1.0}}, "slow-*": {"latency_ms": 300}},
    }
    server = simulate_config(settings, tmp_path_factory.mktemp("batch-sim"))
    yield server
    stop_process(server)


@pytest.fixture(scope="module")
def gateway(upstream: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("batch-gw")
    sim = upstream.url
    config = {
        "server": {"master_key": MASTER_KEY},
        "calllog": {"directory": str(tmp / "home"), "flush_interval_s": 0.05},
        "execute": {"timeout_s": 5, "max_attempts": 1},
        "jobs": {"max_attempts": 1, "poll_interval_s": 0.05},
        "batch": {
            "poll_interval_s": 0.2,
            "models": {"gpt-fwd": "provider", "claude-fwd": "provider", "broken-fwd": "provider"},
        },
        "keys": [{"id": f"key_{n}", "secret": s, "owner": f"team-{n}"} for n, s in KEYS.items()],
        "providers": {
            "oa": {"kind": "openai", "base_url": sim + "/v1"},
            "an": {"kind": "anthropic", "base_url": sim},
        },
        "models": [
            {"name": "gpt-local", "provider": "oa", "upstream": "gpt-4o-mini", "tier": "small"},
            {"name": "gpt-fwd", "provider": "oa", "upstream": "gpt-4o-mini"},
            {"name": "claude-fwd", "provider": "an", "upstream": "claude-haiku-4-5"},
            {"name": "slow-local", "provider": "oa", "upstream": "slow-gpt", "tier": "small"},
            {"name": "broken-local", "provider": "oa", "upstream": "fault-500-batch", "tier": "small"},
            {"name": "broken-fwd", "provider": "oa", "upstream": "fault-500-batch"},
        ],
    }
    server = serve_config(config, tmp)
    yield server
    stop_process(server)


def client(gateway: Server, key: str = "a") -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEYS[key], max_retries=0)


def jsonl(model: str, n: int, prefix: str = "req") -> bytes:
    return "".join(
        json.dumps(
            {
                "custom_id": f"{prefix}-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": model, "messages": [{"role": "user", "content": f"ticket number {i}"}]},
            }
        )
        + "\n"
        for i in range(n)
    ).encode()


def run_batch(c: openai.OpenAI, content: bytes, *, timeout_s: float = 30):
    file = c.files.create(file=("requests.jsonl", content), purpose="batch")
    batch = c.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    return wait(c, batch.id, timeout_s)


def wait(c: openai.OpenAI, batch_id: str, timeout_s: float = 30):
    deadline = time.monotonic() + timeout_s
    while True:
        batch = c.batches.retrieve(batch_id)
        if batch.status in FINAL:
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status} after {timeout_s}s"
        time.sleep(0.1)


def lines(c: openai.OpenAI, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    return [json.loads(x) for x in c.files.content(file_id).text.splitlines() if x.strip()]


def sync_cost(gateway: Server, model: str, i: int, key: str = "a") -> Decimal:
    r = httpx.post(
        gateway.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {KEYS[key]}"},
        json={"model": model, "messages": [{"role": "user", "content": f"ticket number {i}"}]},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return Decimal(r.headers["x-llmrelay-cost-usd"])


def batch_records(gateway: Server, batch_id: str, expected: int) -> list:
    from llmrelay.observability.sqlite_store import SqliteCallStore

    async def read() -> list:
        store = SqliteCallStore(gateway.home / "calls.db")
        await store.open()
        try:
            for _ in range(100):
                found = [
                    r
                    for r in await store.recent(limit=2000)
                    if (r.extra.get("batch") or {}).get("id") == batch_id
                ]
                if len(found) >= expected:
                    return found
                await asyncio.sleep(0.05)
            return found
        finally:
            await store.close()

    return asyncio.run(read())


# --- the SDK flow --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "mode"), [("gpt-local", "local"), ("gpt-fwd", "provider"), ("claude-fwd", "provider")]
)
def test_sdk_batch_flow(gateway: Server, model: str, mode: str) -> None:
    c = client(gateway)
    batch = run_batch(c, jsonl(model, 25))
    assert batch.status == "completed", batch
    assert batch.model == model and batch.model_extra["x_llmrelay"]["mode"] == mode
    assert batch.request_counts.total == 25 and batch.request_counts.completed == 25
    assert batch.error_file_id is None
    out = lines(c, batch.output_file_id)
    assert sorted(x["custom_id"] for x in out) == sorted(f"req-{i}" for i in range(25))  # each exactly once
    for item in out:
        body = item["response"]["body"]
        assert item["response"]["status_code"] == 200 and item["error"] is None
        assert body["object"] == "chat.completion" and body["model"] == model
        n = item["custom_id"].split("-")[1]
        assert body["choices"][0]["message"]["content"] == f"You said: ticket number {n}"
    assert batch.usage is not None and batch.usage.input_tokens > 0
    # Listed and readable through the SDK's own pagination.
    assert c.files.retrieve(batch.output_file_id).purpose == "batch_output"
    assert batch.id in [b.id for b in c.batches.list(limit=2)]


def test_forwarded_batches_cost_half_and_are_charged(gateway: Server) -> None:
    c = client(gateway, "c")
    for model in ("gpt-fwd", "claude-fwd"):
        batch = run_batch(c, jsonl(model, 4))
        sync = sum(sync_cost(gateway, model, i, "c") for i in range(4))
        assert Decimal(batch.model_extra["x_llmrelay"]["cost_usd"]) == sync / 2
        records = batch_records(gateway, batch.id, 4)
        assert len(records) == 4 and all(r.status == "success" and r.api_key_id == "key_c" for r in records)
        assert sum(Decimal(r.cost_usd) for r in records) == sync / 2
    spend = httpx.get(
        gateway.url + "/admin/keys/key_c", headers={"authorization": f"Bearer {MASTER_KEY}"}
    ).json()["spend"]
    # What key c spent: the two batches at half price, plus the synchronous calls at full price.
    assert Decimal(spend["daily_usd"]) > 0


def test_local_batch_costs_what_synchronous_calls_cost(gateway: Server) -> None:
    c = client(gateway, "b")
    batch = run_batch(c, jsonl("gpt-local", 5))
    sync = sum(sync_cost(gateway, "gpt-local", i, "b") for i in range(5))
    assert Decimal(batch.model_extra["x_llmrelay"]["cost_usd"]) == sync
    records = batch_records(gateway, batch.id, 5)
    assert len(records) == 5 and all(r.extra["batch"]["mode"] == "local" for r in records)


@pytest.mark.parametrize("model", ["broken-local", "broken-fwd"])
def test_failed_requests_go_to_the_error_file(gateway: Server, model: str) -> None:
    c = client(gateway)
    batch = run_batch(c, jsonl(model, 3))
    assert batch.status == "completed"
    assert batch.request_counts.failed == 3 and batch.request_counts.completed == 0
    assert batch.output_file_id is None
    errors = lines(c, batch.error_file_id)
    assert sorted(x["custom_id"] for x in errors) == ["req-0", "req-1", "req-2"]
    assert all(x["response"]["status_code"] >= 500 and "error" in x["response"]["body"] for x in errors)


# --- cancel --------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["slow-local", "gpt-fwd"])
def test_cancel(gateway: Server, model: str) -> None:
    c = client(gateway)
    file = c.files.create(file=("r.jsonl", jsonl(model, 40)), purpose="batch")
    batch = c.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    cancelling = c.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled")
    batch = wait(c, batch.id)
    assert batch.status == "cancelled" and batch.cancelled_at is not None
    answered, rest = lines(c, batch.output_file_id), lines(c, batch.error_file_id)
    assert sorted(x["custom_id"] for x in answered + rest) == sorted(f"req-{i}" for i in range(40))
    assert rest and all(x["error"]["code"] == "batch_cancelled" for x in rest)
    assert len(answered) < 40
    with pytest.raises(openai.BadRequestError):
        c.batches.cancel(run_batch(c, jsonl("gpt-local", 1)).id)  # a finished batch cannot be


# --- bad input -----------------------------------------------------------------------------------


GOOD = json.dumps(
    {
        "custom_id": "ok",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "gpt-local", "messages": [{"role": "user", "content": "hi"}]},
    }  # fmt: skip
)


@pytest.mark.parametrize(
    ("bad_line", "words"),
    [
        ("{not json", "not valid JSON"),
        ('["a list"]', "JSON object"),
        ('{"method": "POST", "url": "/v1/chat/completions", "body": {}}', "custom_id"),
        ('{"custom_id": "ok", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "gpt-local", "messages": [{"role": "user", "content": "b"}]}}', "repeats line 1"),
        ('{"custom_id": "x", "method": "POST", "url": "/v1/embeddings", "body": {}}', "url"),
        ('{"custom_id": "x", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "gpt-local"}}', "messages"),
        ('{"custom_id": "x", "url": "/v1/chat/completions", "body": {"model": "gpt-local", "messages": [{"role": "user", "content": "a"}], "stream": true}}', "stream"),
        # Read (orjson takes 1,024 levels) but not writable into a job (254): refused up front.
        ('{"custom_id": "x", "url": "/v1/chat/completions", "body": {"model": "gpt-local", "messages": [{"role": "user", "content": "a"}], "x": ' + "[" * 300 + "]" * 300 + "}}", "levels deep"),
    ],
)  # fmt: skip
def test_bad_jsonl_names_the_line(gateway: Server, bad_line: str, words: str) -> None:
    content = f"{GOOD}\n\n{bad_line}\n".encode()  # the bad request sits on line 3
    with pytest.raises(openai.BadRequestError) as caught:
        client(gateway).files.create(file=("bad.jsonl", content), purpose="batch")
    message = caught.value.body["message"]
    assert caught.value.status_code == 400 and "line 3" in message and words in message, message


def test_bad_batch_requests(gateway: Server) -> None:
    c = client(gateway)
    with pytest.raises(openai.BadRequestError, match="purpose"):
        c.files.create(file=("x.jsonl", GOOD.encode()), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError, match="no requests"):
        c.files.create(file=("x.jsonl", b"\n\n"), purpose="batch")
    mixed = jsonl("gpt-local", 2) + jsonl("gpt-fwd", 1, prefix="other")
    file = c.files.create(file=("mixed.jsonl", mixed), purpose="batch")
    with pytest.raises(openai.BadRequestError, match="line 3.*one model"):
        c.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        c.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h")
    r = httpx.post(gateway.url + "/v1/files", headers={"authorization": f"Bearer {KEYS['a']}"}, content=b"{}")
    assert r.status_code == 400 and r.json()["error"]["param"] == "file"
    r = httpx.post(
        gateway.url + "/v1/batches", headers={"authorization": f"Bearer {KEYS['a']}"}, content=b"not json"
    )
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    # A list's limit: ASCII digits only ("²" passes str.isdigit but not int), and not 5,000 of them.
    for limit in ("%C2%B2", "%D9%A3", "9" * 5000, "0", "-1"):
        for path in ("/v1/files", "/v1/batches"):
            r = httpx.get(
                f"{gateway.url}{path}?limit={limit}", headers={"authorization": f"Bearer {KEYS['a']}"}
            )
            assert r.status_code == 400 and r.json()["error"]["param"] == "limit", (path, limit, r.text)


# --- ownership -----------------------------------------------------------------------------------


def test_a_key_cannot_see_another_keys_files_or_batches(gateway: Server) -> None:
    a, b = client(gateway, "a"), client(gateway, "b")
    batch = run_batch(a, jsonl("gpt-local", 2))
    for call in (
        lambda: b.batches.retrieve(batch.id),
        lambda: b.batches.cancel(batch.id),
        lambda: b.files.retrieve(batch.input_file_id),
        lambda: b.files.content(batch.output_file_id),
        lambda: b.files.delete(batch.output_file_id),
        lambda: b.batches.create(
            input_file_id=batch.input_file_id, endpoint="/v1/chat/completions", completion_window="24h"
        ),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert batch.id not in [x.id for x in b.batches.list()]
    assert batch.output_file_id not in [f.id for f in b.files.list()]
    assert a.files.delete(batch.output_file_id).deleted


def test_list_pagination(gateway: Server) -> None:
    c = client(gateway, "b")
    ids = [run_batch(c, jsonl("gpt-local", 1)).id for _ in range(3)]
    first = c.batches.list(limit=2)
    assert first.has_more and len(first.data) == 2
    seen = [x.id for x in c.batches.list(limit=2)]  # the SDK follows `after` page by page
    assert seen[:3] == ids[::-1] and len(seen) == len(set(seen))


# --- the CLI -------------------------------------------------------------------------------------


def test_cli_submit_status_results(gateway: Server, tmp_path: Path) -> None:
    bodies = tmp_path / "bodies.jsonl"  # plain chat bodies: the CLI wraps them and sets the model
    bodies.write_text(
        "".join(json.dumps({"messages": [{"role": "user", "content": f"n{i}"}]}) + "\n" for i in range(6))
    )
    base = [sys.executable, "-m", "llmrelay.cli", "batch"]
    auth = ["--base-url", gateway.url, "--api-key", KEYS["a"], "--poll", "0.1"]
    submitted = subprocess.run(
        [*base, "submit", str(bodies), "--model", "gpt-local", "--wait", *auth],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert submitted.returncode == 0, submitted.stderr
    batch_id = submitted.stdout.splitlines()[0]
    assert "completed" in submitted.stdout and "6/6" in submitted.stderr  # the progress bar
    status = subprocess.run([*base, "status", batch_id, *auth], capture_output=True, text=True, timeout=60)
    assert "completed=6" in status.stdout
    out = tmp_path / "out.jsonl"
    results = subprocess.run(
        [*base, "results", batch_id, "-o", str(out), *auth], capture_output=True, text=True, timeout=60
    )
    assert results.returncode == 0, results.stderr
    got = sorted(json.loads(x)["custom_id"] for x in out.read_text().splitlines())
    assert got == sorted(f"line-{i}" for i in range(1, 7))
    missing = subprocess.run(
        [*base, "status", "batch_nope", *auth], capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 1 and "404" in missing.stderr
    # The SDKs' base URL (…/v1) is taken; a malformed one, an output path under a file: one line.
    sdk_style = ["--base-url", gateway.url + "/v1/", "--api-key", KEYS["a"]]
    status = subprocess.run(
        [*base, "status", batch_id, *sdk_style], capture_output=True, text=True, timeout=60
    )
    assert status.returncode == 0 and "completed=6" in status.stdout, status.stderr
    for argv, words in (
        (["status", batch_id, "--base-url", "http://[::1"], "Invalid IPv6 URL"),
        (["status", batch_id, "--base-url", "notaurl"], "http(s) address"),
        (["status", "", *auth], "batch id is empty"),
        (["results", batch_id, "-o", str(out / "under-a-file.jsonl"), *auth], "Not a directory"),
    ):
        done = subprocess.run([*base, *argv], capture_output=True, text=True, timeout=60)
        assert done.returncode == 1 and words in done.stderr and "Traceback" not in done.stderr, done.stderr
