"""Every call on record, and nothing lost: the journal-backed call log against real stores."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from decimal import Decimal
from pathlib import Path

import anthropic
import httpx
import openai
import orjson
import pytest
import yaml

from llmrelay.observability.calllog import CallLog
from llmrelay.observability.journal import Appender, pending_bytes, segment_path, segments
from llmrelay.observability.records import CallRecord
from llmrelay.observability.sqlite_store import SqliteCallStore
from llmrelay.observability.writer import JournalWriter

from .conftest import calllog_gateway_config, free_port, recorded, start_process, stop_process
from .factories import call_record

HELLO = [{"role": "user", "content": "hello"}]


def record(i: int, **kw) -> CallRecord:
    return call_record(**{"id": f"req_{i:026d}", "started_at": 1_700_000_000.0 + i, **kw})


class FlakyStore(SqliteCallStore):
    """A real SQLite store that can be made to fail, like a database that went down."""

    down = False

    async def write_json(self, records):  # what the writer calls
        if self.down:
            raise ConnectionError("database is down")
        await super().write_json(records)


async def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(0.05)
    return False


async def test_records_wait_in_the_journal_while_the_store_is_down(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    journal = Appender(home)
    for i in range(300):
        journal.append(orjson.dumps(record(i)) + b"\n")
    store = FlakyStore(tmp_path / "calls.db")
    await store.open()
    store.down = True
    writer = JournalWriter(store, home, batch_size=50, flush_interval_s=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop))
    await asyncio.sleep(0.3)
    assert not writer.store_healthy and journal.uncommitted() == 300
    store.down = False  # the database is back
    assert await wait_for(lambda: _count(store, 300))
    assert journal.uncommitted() == 0
    stop.set()
    await task
    journal.close()
    await store.close()


async def test_a_clean_shutdown_drains_everything(tmp_path):
    log = CallLog("sqlite:///calls.db", tmp_path / "home", batch_size=10_000, flush_interval_s=60)
    await log.start()
    for i in range(1234):
        log.submit(record(i))
    await log.aclose()
    assert pending_bytes(tmp_path / "home") == 0
    reopened = SqliteCallStore(tmp_path / "home" / "calls.db")
    await reopened.open()
    assert len(await reopened.recent(limit=5000)) == 1234
    await reopened.close()


async def test_finished_segments_are_deleted_once_committed(tmp_path):
    home = tmp_path / "home"
    log = CallLog("sqlite:///calls.db", home, flush_interval_s=0.05, segment_bytes=20_000)
    await log.start()
    for i in range(500):
        log.submit(record(i))
    assert len(segments(home)[1]) > 10  # the journal went on in new segments as it grew
    assert await wait_for(lambda: _zero(log))
    assert segments(home)[1] == [max(segments(home)[1])]  # only the newest, still open, is left
    await log.aclose()
    reopened = SqliteCallStore(home / "calls.db")
    await reopened.open()
    assert len(await reopened.recent(limit=1000)) == 500
    await reopened.close()


async def test_a_journal_left_by_a_dead_process_is_replayed_without_duplicates(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    # What a killed gateway leaves: 100 lines, of which the first 40 were already written.
    store = SqliteCallStore(home / "calls.db")
    await store.open()
    await store.write([record(i) for i in range(40)])
    await store.close()
    with open(segment_path(home, 1, 1), "wb") as f:
        for i in range(100):
            f.write(orjson.dumps(record(i)) + b"\n")
        f.write(b'{"id": "req_cut-mid-line"')  # the line being written when it died
    log = CallLog("sqlite:///calls.db", home, flush_interval_s=0.05)
    await log.start()
    assert await wait_for(lambda: _count(log.store, 100))
    await log.aclose()
    assert len(await _all(home / "calls.db")) == 100


async def test_unreadable_journal_lines_are_set_aside(tmp_path, caplog):
    home = tmp_path / "home"
    home.mkdir()
    journal = Appender(home)
    journal.append(orjson.dumps(record(1)) + b"\n")
    bad = [b'{"id": "req_not_json"', b"[1, 2]", b"17", b'{"id": "req_no_fields"}']
    for line in bad:
        journal.append(line + b"\n")
    journal.append(orjson.dumps(record(2)) + b"\n")
    store = SqliteCallStore(tmp_path / "calls.db")
    await store.open()
    try:
        assert await JournalWriter(store, home).drain() == 6
        assert journal.uncommitted() == 0
        assert sorted(r.id for r in await store.recent()) == [record(1).id, record(2).id]
    finally:
        journal.close()
        await store.close()
    assert _rejected(home) == bad
    assert caplog.text.count("set aside in rejected-") == 4


def poison(i: int, **fields) -> bytes:
    """A journal line for record ``i`` with ``fields`` changed as JSON (what no CallRecord allows)."""
    return orjson.dumps({**orjson.loads(orjson.dumps(record(i))), **fields})


async def test_records_the_store_refuses_are_set_aside_and_the_rest_go_in(tmp_path, caplog):
    home = tmp_path / "home"
    home.mkdir()
    journal = Appender(home)
    bad = {
        7: poison(7, prompt_tokens=2**63),  # over SQLite's 64-bit INTEGER: refused by the store
        8: poison(8, attempts=[{**orjson.loads(orjson.dumps(record(8)))["attempts"][0], "n": 2**63}]),
        150: poison(150, completion_tokens="12"),  # SQLite would store the text and break reports
        151: poison(151, latency_ms=None),  # NOT NULL
        299: poison(299, cost_exact=1),
        298: poison(298, cost_eur="0.1"),  # a field this version does not know
    }
    for i in range(300):
        journal.append(bad.get(i, orjson.dumps(record(i))) + b"\n")
    store = SqliteCallStore(tmp_path / "calls.db")
    await store.open()
    writer = JournalWriter(store, home, batch_size=100)
    try:
        assert await writer.drain() == 300
        assert journal.uncommitted() == 0  # nothing holds up the log
        stored = {r.id for r in await store.recent(limit=1000)}
        assert stored == {record(i).id for i in range(300) if i not in bad}
    finally:
        journal.close()
        await store.close()
    assert writer.rejected == 6
    assert sorted(_rejected(home)) == sorted(bad.values())  # as they were: fix them, replay them
    assert caplog.text.count("set aside in rejected-") == 6
    assert all(p.stat().st_mode & 0o077 == 0 for p in home.glob("rejected-*.jsonl"))  # private
    assert "SQLite refused a record: Python int too large" in caplog.text


async def test_a_locked_store_keeps_every_record_and_sets_none_aside(tmp_path):
    import sqlite3

    home = tmp_path / "home"
    home.mkdir()
    journal = Appender(home)
    for i in range(120):
        journal.append(orjson.dumps(record(i)) + b"\n")
    store = SqliteCallStore(tmp_path / "calls.db", busy_timeout_s=0.05)
    await store.open()
    other = sqlite3.connect(tmp_path / "calls.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock: "database is locked"
    writer = JournalWriter(store, home, batch_size=50, flush_interval_s=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop))
    try:
        assert await wait_for(lambda: _false(writer.store_healthy))
        await asyncio.sleep(0.3)  # a few retries
        assert journal.uncommitted() == 120 and writer.rejected == 0
        other.execute("COMMIT")  # the lock is released
        assert await wait_for(lambda: _count(store, 120))
        assert journal.uncommitted() == 0
    finally:
        stop.set()
        await task
        other.close()
        journal.close()
        await store.close()
    assert writer.rejected == 0 and _rejected(home) == []


async def _false(value: bool) -> bool:
    return not value


def _rejected(home: Path) -> list[bytes]:
    return [line for path in sorted(home.glob("rejected-*.jsonl")) for line in path.read_bytes().splitlines()]


async def _zero(log: CallLog) -> bool:
    return log.queue_depth == 0


async def _all(path) -> list[CallRecord]:
    store = SqliteCallStore(path)
    await store.open()
    try:
        return await store.recent(limit=100_000)
    finally:
        await store.close()


async def _count(store, n: int) -> bool:
    return len(await store.recent(limit=n + 10)) >= n


# --- through the gateway --------------------------------------------------------------------


def gateway_config(sim: str, home) -> dict:
    return calllog_gateway_config(sim, home, "calllog", bodies="redacted")


@pytest.fixture
def gateway_home(simulator, tmp_path):
    home = tmp_path / "home"
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(gateway_config(simulator.url, home)))
    return path, home


async def test_records_are_complete_for_success_error_stream_and_fallback(gateway_home, tmp_path):
    path, home = gateway_home
    server = start_process(["serve", "--config", str(path)], free_port(), tmp_path, ready_path="/healthz")
    try:
        with openai.OpenAI(base_url=server.url + "/v1", api_key="sk-user-1", max_retries=0) as client:
            ok = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=HELLO, user="alice"
            )
            list(client.chat.completions.create(model="claude", messages=HELLO, stream=True))
            fell_back = client.chat.completions.with_raw_response.create(model="flaky", messages=HELLO)
            with pytest.raises(openai.APIStatusError):
                client.chat.completions.create(model="broken", messages=HELLO)
        metrics = httpx.get(server.url + "/metrics").text
    finally:
        stop_process(server)  # a clean stop drains the journal
    requests = [line for line in metrics.splitlines() if line.startswith("llmrelay_requests_total{")]
    assert len(requests) == 4 and all('api_key="key_' in line for line in requests)
    assert 'model="claude"' in metrics and 'status="error:UpstreamUnavailable"' in metrics
    assert 'llmrelay_breaker_state{deployment="oa/fault-500-calllog"}' in metrics
    store = SqliteCallStore(home / "calls.db")
    await store.open()
    try:
        records = {r.requested_model: r for r in await store.recent(limit=10)}
        assert set(records) == {"gpt-4o-mini", "claude", "flaky", "broken"}
        success = records["gpt-4o-mini"]
        assert success.id == ok.headers["x-llmrelay-request-id"] and success.status == "success"
        assert success.end_user == "alice" and success.api_key_id and "sk-user-1" not in success.api_key_id
        assert Decimal(success.cost_usd) == Decimal(ok.headers["x-llmrelay-cost-usd"])
        assert success.prompt_tokens > 0 and success.completion_tokens > 0 and success.cost_exact
        assert success.request_body["messages"][0]["content"] == "<5 chars>"  # redacted: shape, no words
        stream = records["claude"]
        assert stream.stream and stream.status == "success" and stream.ttft_ms is not None
        assert stream.completion_tokens > 0 and Decimal(stream.cost_usd) > 0
        fallback = records["flaky"]
        assert fallback.model == "claude" and fallback.status == "success"
        assert [a.outcome for a in fallback.attempts] == [
            "error:UpstreamUnavailable",
            "error:UpstreamUnavailable",
            "success",
        ]
        assert fallback.id == fell_back.headers["x-llmrelay-request-id"]
        failed = records["broken"]
        assert (
            failed.status == "error:UpstreamUnavailable" and failed.error_message and failed.cost_usd is None
        )
        assert len(failed.attempts) == 2
    finally:
        await store.close()


async def test_a_killed_gateway_loses_no_record(gateway_home, tmp_path):
    path, home = gateway_home
    config = yaml.safe_load(path.read_text())
    config["calllog"]["flush_interval_s"] = 3600  # nothing reaches the store before the kill
    config["calllog"]["batch_size"] = 100_000
    path.write_text(yaml.safe_dump(config))
    server = start_process(["serve", "--config", str(path)], free_port(), tmp_path, ready_path="/healthz")
    ids = []
    try:
        with openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as client:
            for _ in range(25):
                raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HELLO)
                ids.append(raw.headers["x-llmrelay-request-id"])
    finally:
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
    # Restarted, it replays its journal into the store.
    server = start_process(["serve", "--config", str(path)], free_port(), tmp_path, ready_path="/healthz")
    stop_process(server)
    store = SqliteCallStore(home / "calls.db")
    await store.open()
    try:
        stored = {r.id for r in await store.recent(limit=100)}
        assert set(ids) <= stored
    finally:
        await store.close()


def writer_pids(parent: int) -> list[int]:
    """The call-log writer processes started by ``parent``."""
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text().rpartition(")")[2].split()
                cmdline = Path(entry.path, "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat[1]) == parent and b"llmrelay.observability.writer" in cmdline:
                pids.append(int(entry.name))
    return pids


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_a_writer_that_dies_is_restarted_and_a_killed_gateway_leaves_no_writer(gateway_home, tmp_path):
    path, home = gateway_home
    server = start_process(["serve", "--config", str(path)], free_port(), tmp_path, ready_path="/healthz")
    try:
        (first,) = writer_pids(server.process.pid)
        os.kill(first, signal.SIGKILL)  # the writer dies: the gateway starts another
        deadline = time.monotonic() + 5
        while not (others := [p for p in writer_pids(server.process.pid) if p != first]):
            assert time.monotonic() < deadline, "the writer was not restarted"
            await asyncio.sleep(0.1)
        with openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as client:
            raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HELLO)
        call_id = raw.headers["x-llmrelay-request-id"]
    finally:
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
    # Its writer sees the gateway gone, commits what the journal holds, and exits.
    deadline = time.monotonic() + 5
    while alive(others[0]):
        assert time.monotonic() < deadline, "the writer outlived its gateway"
        await asyncio.sleep(0.1)
    assert call_id in {r.id for r in await _all(home / "calls.db")}


async def test_two_gateways_sharing_a_directory_lose_nothing_whichever_stops_first(gateway_home, tmp_path):
    path, home = gateway_home
    a = start_process(["serve", "--config", str(path)], free_port(), tmp_path, ready_path="/healthz")
    b = start_process(["serve", "--config", str(path)], free_port(), tmp_path, ready_path="/healthz")
    ids = []

    def calls(server, n: int) -> None:
        with openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as client:
            for _ in range(n):
                raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HELLO)
                ids.append(raw.headers["x-llmrelay-request-id"])

    try:
        calls(a, 10)
        calls(b, 10)
        stop_process(a)  # its writer may be the one draining both: b's takes over
        calls(b, 10)
    finally:
        stop_process(a)
        stop_process(b)
    assert set(ids) <= {r.id for r in await _all(home / "calls.db")} and len(ids) == 30
    assert pending_bytes(home) == 0


async def test_calls_turned_away_before_the_pipeline_are_on_record_too(gateway_home, tmp_path):
    path, home = gateway_home
    config = yaml.safe_load(path.read_text())
    config["server"] = {"master_key": "sk-master"}
    path.write_text(yaml.safe_dump(config))
    server = start_process(["serve", "--config", str(path)], free_port(), tmp_path, ready_path="/healthz")
    url = server.url + "/v1/chat/completions"
    try:
        wrong_key = httpx.post(
            url,
            json={"model": "gpt-4o-mini", "messages": HELLO},
            headers={"authorization": "Bearer sk-wrong"},
        )
        master = {"authorization": "Bearer sk-master"}
        bad_json = httpx.post(url, content=b"{not json", headers=master)
        bad_field = httpx.post(
            url, json={"model": "gpt-4o-mini", "messages": "hi", "user": "bob"}, headers=master
        )
        with openai.OpenAI(base_url=server.url + "/v1", api_key="sk-master", max_retries=0) as client:
            client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    finally:
        stop_process(server)
    assert [r.status_code for r in (wrong_key, bad_json, bad_field)] == [401, 400, 400]
    records = {r.id: r for r in await _all(home / "calls.db")}
    assert len(records) == 4
    auth = records[wrong_key.headers["x-llmrelay-request-id"]]
    assert auth.status == "error:AuthenticationError" and auth.requested_model == ""  # body not read
    assert auth.api_key_id and auth.cost_usd is None and auth.attempts == []
    assert records[bad_json.headers["x-llmrelay-request-id"]].status == "error:InvalidRequestError"
    field = records[bad_field.headers["x-llmrelay-request-id"]]
    assert field.status == "error:InvalidRequestError" and field.end_user == "bob"
    assert "messages" in field.error_message


async def test_a_refused_record_shows_on_metrics_and_the_log_goes_on(gateway_home, tmp_path):
    path, home = gateway_home
    home.mkdir()
    # Left by an earlier gateway (slot 9): one good record, one no store can hold. Recent ones:
    # retention (30 days) would prune the good one.
    good = record(1, started_at=time.time())
    bad = orjson.dumps({**orjson.loads(orjson.dumps(good)), "id": "req_2", "reasoning_tokens": 2**63})
    segment_path(home, 9, 1).write_bytes(orjson.dumps(good) + b"\n" + bad + b"\n")
    server = start_process(["serve", "--config", str(path)], free_port(), tmp_path, ready_path="/healthz")
    try:
        with openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as client:
            raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HELLO)
        await recorded(home, raw.headers["x-llmrelay-request-id"])  # the log goes on
        deadline = time.monotonic() + 10
        while "llmrelay_calllog_rejected_records 1.0" not in (
            metrics := httpx.get(server.url + "/metrics").text
        ):
            assert time.monotonic() < deadline, metrics
            await asyncio.sleep(0.05)
    finally:
        stop_process(server)
    assert good.id in {r.id for r in await _all(home / "calls.db")}
    assert _rejected(home) == [bad]
    assert "set aside in rejected-" in server.log()


async def test_absurd_token_counts_from_an_upstream_are_capped_not_refused(tmp_path):
    from llmrelay.observability.records import MAX_TOKENS
    from llmrelay.pipeline import Call
    from llmrelay.types import ChatRequest, Usage

    call = Call(request=ChatRequest(model="m", messages=HELLO), requested_model="m", status="success")
    call.usage = Usage(prompt_tokens=2**70, completion_tokens=2**40, reasoning_tokens=7)
    built = CallRecord.from_call(call)
    assert (built.prompt_tokens, built.completion_tokens, built.reasoning_tokens) == (
        MAX_TOKENS,
        MAX_TOKENS,
        7,
    )
    home = tmp_path / "home"
    home.mkdir()
    journal = Appender(home)
    journal.append(orjson.dumps(built) + b"\n")  # what submit() writes: 2**70 would not even serialize
    store = SqliteCallStore(tmp_path / "calls.db")
    await store.open()
    try:
        assert await JournalWriter(store, home).drain() == 1
        assert (await store.get(built.id)).prompt_tokens == MAX_TOKENS
    finally:
        journal.close()
        await store.close()


async def test_what_the_writer_stores_reads_back_as_the_record_submitted(tmp_path):
    full = record(
        1,
        api_key_id="key_1",
        end_user="alice",
        stream=True,
        ttft_ms=12.5,
        extra={"route": {"rule": "cheap", "tags": ["a"]}, "cache": "miss"},
        request_body={"model": "m", "messages": [{"role": "user", "content": "héllo ;'\""}]},
        response_body={"choices": [{"message": {"content": "hi"}}], "usage": None},
    )
    bare = record(2, model=None, provider=None, upstream_model=None, cost_usd=None, attempts=[])
    log = CallLog("sqlite:///calls.db", tmp_path / "home", flush_interval_s=0.05)
    await log.start()
    log.submit(full)
    log.submit(bare)
    await log.aclose()
    stored = {r.id: r for r in await _all(tmp_path / "home" / "calls.db")}
    assert stored == {full.id: full, bare.id: bare}


class CountingStore(SqliteCallStore):
    """A real SQLite store that counts the batches it is given."""

    batches = 0

    async def write_json(self, records):
        self.batches += 1
        await super().write_json(records)


async def test_a_steady_trickle_of_records_goes_in_as_batches_not_one_commit_each(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    journal = Appender(home)
    store = CountingStore(tmp_path / "calls.db")
    await store.open()
    writer = JournalWriter(store, home, flush_interval_s=0.2)
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop))
    lines = [orjson.dumps(record(i)) + b"\n" for i in range(3000)]

    def gateway() -> None:  # ~1 s of a busy gateway: a call every ~0.3 ms, as a separate process would
        for line in lines:
            journal.append(line)
            time.sleep(0.0003)

    try:
        await asyncio.to_thread(gateway)
        assert await wait_for(lambda: _count(store, 3000))
    finally:
        stop.set()
        await task
        journal.close()
        await store.close()
    # One batch per flush interval (~5-10), not one per few records (hundreds).
    assert store.batches <= 30, store.batches


async def test_a_line_longer_than_a_read_goes_in(tmp_path, monkeypatch):
    from llmrelay.observability import writer as writer_module

    monkeypatch.setattr(writer_module, "_READ_BYTES", 2000)  # a record with a 4 MB body, in small
    home = tmp_path / "home"
    home.mkdir()
    journal = Appender(home)
    big = record(1, response_body={"text": "x" * 5000})
    for r in (big, record(2)):
        journal.append(orjson.dumps(r) + b"\n")
    store = SqliteCallStore(tmp_path / "calls.db")
    await store.open()
    try:
        assert await JournalWriter(store, home).drain() == 2
        assert (await store.get(big.id)) == big and journal.uncommitted() == 0
    finally:
        journal.close()
        await store.close()


async def test_the_writer_runs_as_background_work(tmp_path):
    log = CallLog("sqlite:///calls.db", tmp_path / "home")
    await log.start()
    try:
        pid = await _writer_up()
        assert os.getpriority(os.PRIO_PROCESS, pid) >= 10
        slices = {_slice(pid, tid) for tid in os.listdir(f"/proc/{pid}/task")}
    finally:
        await log.aclose()
    if slices == {None}:
        pytest.skip("this kernel reports no scheduler slice (before Linux 6.6)")
    # Every thread (the SQLite one too): a waking request-path task preempts it at once.
    assert slices == {50_000_000}, slices


async def _writer_up() -> int:
    """This process's writer, once its SQLite thread runs (started after it set itself up)."""
    deadline = time.monotonic() + 10
    while not (pids := writer_pids(os.getpid())) or len(os.listdir(f"/proc/{pids[0]}/task")) < 2:
        assert time.monotonic() < deadline, "no writer process"
        await asyncio.sleep(0.05)
    (pid,) = pids
    return pid


def _slice(pid: int, tid: str) -> int | None:
    for line in Path(f"/proc/{pid}/task/{tid}/sched").read_text().splitlines():
        if line.startswith("se.slice"):
            return int(line.split(":")[1])
    return None


async def test_redacted_bodies_drop_the_words_of_thinking_too(gateway_home, tmp_path):
    path, home = gateway_home
    server = start_process(["serve", "--config", str(path)], free_port(), tmp_path, ready_path="/healthz")
    try:
        with anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0) as client:
            raw = client.messages.with_raw_response.create(
                model="claude",
                max_tokens=2048,
                thinking={"type": "enabled", "budget_tokens": 1024},
                messages=[{"role": "user", "content": "my secret plan"}],
            )
    finally:
        stop_process(server)
    record = await recorded(home, raw.headers["x-llmrelay-request-id"])
    assert record.request_body["thinking"] == {"type": "enabled", "budget_tokens": 1024}  # the option
    (block,) = record.response_body["choices"][0]["message"]["thinking_blocks"]
    assert block["thinking"].endswith(" chars>") and block["signature"].endswith(" chars>")
    assert b"secret" not in orjson.dumps(record.response_body)


async def test_bodies_follow_the_route_the_client_named(simulator, tmp_path):
    # A support bot's transcripts kept in full for review, an internal tool's only in shape, and
    # every other call (the default) without them.
    config = calllog_gateway_config(simulator.url, tmp_path / "home", "calllog", bodies="none")
    config["routes"] = [
        {"name": "support", "tiers": [{"name": "small", "model": "gpt-4o-mini"}], "bodies": "full"},
        {
            "name": "internal",
            "aliases": ["tools"],
            "tiers": [{"name": "small", "model": "gpt-4o-mini"}],
            "bodies": "redacted",
        },
        {"name": "plain", "tiers": [{"name": "small", "model": "gpt-4o-mini"}]},  # the default
    ]
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    server = start_process(["serve", "--config", str(path)], free_port(), tmp_path, ready_path="/healthz")
    ids = {}
    try:
        with openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as client:
            for model in ("support", "tools", "plain", "gpt-4o-mini"):
                raw = client.chat.completions.with_raw_response.create(model=model, messages=HELLO)
                ids[model] = raw.headers["x-llmrelay-request-id"]
            with client.chat.completions.with_streaming_response.create(
                model="support", messages=HELLO, stream=True
            ) as streamed:
                ids["support streamed"] = streamed.headers["x-llmrelay-request-id"]
                list(streamed.iter_lines())
    finally:
        stop_process(server)
    records = {model: await recorded(tmp_path / "home", call_id) for model, call_id in ids.items()}
    full = records["support"]
    assert full.request_body["messages"][0]["content"] == "hello"
    assert full.response_body["choices"][0]["message"]["content"] == "You said: hello"
    streamed = records["support streamed"]  # a stream's body: the answer it added up to
    assert streamed.stream and streamed.response_body["choices"][0]["message"]["content"] == "You said: hello"
    assert records["tools"].request_body["messages"][0]["content"] == "<5 chars>"  # an alias counts
    assert all(
        records[m].request_body is None and records[m].response_body is None for m in ("plain", "gpt-4o-mini")
    )


def test_a_route_body_policy_is_one_of_the_three():
    from llmrelay.config import Settings
    from llmrelay.errors import ConfigError

    route = {"name": "r", "tiers": [{"name": "small", "model": "m"}], "bodies": "everything"}
    with pytest.raises(ConfigError, match="routes.0.bodies"):
        Settings.from_dict(
            {
                "models": [{"name": "m", "provider": "p"}],
                "providers": {"p": {"kind": "openai", "base_url": "http://x/v1"}},
                "routes": [route],
            }
        )


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux-only")
async def test_the_writer_can_have_cpus_of_its_own(tmp_path):
    # On a machine with cores to spare, the writer on one the serving process is kept off
    # (`taskset` for the gateway) takes the call log's work out of the requests' way entirely.
    cpu = max(os.sched_getaffinity(0))
    log = CallLog("sqlite:///calls.db", tmp_path / "home", writer_cpus=(cpu,))
    await log.start()
    try:
        pid = await _writer_up()
        threads = [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
        assert {frozenset(os.sched_getaffinity(tid)) for tid in threads} == {frozenset({cpu})}
    finally:
        await log.aclose()


def test_writer_cpus_must_exist_here():
    from llmrelay.config import Settings
    from llmrelay.errors import ConfigError

    assert Settings.from_dict({"calllog": {"writer_cpus": [0]}}).calllog.writer_cpus == (0,)
    for bad in ([], [-1], [os.cpu_count()]):
        with pytest.raises(ConfigError, match="calllog.writer_cpus"):
            Settings.from_dict({"calllog": {"writer_cpus": bad}})
