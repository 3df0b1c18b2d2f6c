"""What the call log costs and how fast it writes: the stores alone, through ``CallLog``, and a gateway.

Part 1, in this process: ``write`` batches of 500 realistic ``CallRecord``s (1-2 attempts) into
SQLite and PostgreSQL (store alone), then the same number through ``CallLog`` (``submit`` them as
fast as possible, time until all are committed): records/s, CPU per record, the cost of ``submit``.

Part 2, subprocesses on loopback (the machinery of bench/overhead.py): nginx as the upstream and one
gateway per setting in alternating rounds of wrk at c=1 and c=32: ``nolog`` (the call log off,
metrics on: the default config without the call log), ``sqlite`` and ``postgres`` (the call log on,
metrics on) and ``off`` (call log and metrics off: no record is built at all). The call log's cost is
each call-log gateway against ``nolog``, the only difference between them; against ``off`` it is
the cost of recording as a whole (the record, metrics and the call log). Then checks that each store
holds one record per request the gateway served (counted by the upstream's access log and by
/metrics).

    .venv/bin/python bench/calllog.py                    # ~2 min
    .venv/bin/python bench/calllog.py --no-postgres      # SQLite only
    .venv/bin/python bench/calllog.py --stores-only      # part 1 only (~30 s)
    .venv/bin/python bench/calllog.py --records 100000 --rounds 6
    .venv/bin/python bench/calllog.py --gateways-only --control   # + an A/A twin of `off`: the noise
    .venv/bin/python bench/calllog.py --gateways-only --pin       # the writers on a CPU of their own

PostgreSQL: ``--pg-dsn`` (default postgresql://postgres@127.0.0.1:5432/postgres) is used only to
create throwaway databases (``llmrelay_bench_<pid>_*``), which are dropped at the end.
See bench/README.md ("Call log") for the figures measured and what limits them.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
from ulid import ULID

from llmrelay.observability.calllog import CallLog
from llmrelay.observability.journal import pending_bytes
from llmrelay.observability.records import AttemptRecord, CallRecord
from llmrelay.observability.sqlite_store import SqliteCallStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
import overhead  # noqa: E402  (bench/ is not a package: its scripts share code this way)

MODEL = overhead.MODEL
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
GOAL_RPS = 10_000


# --- records ------------------------------------------------------------------------------------


def make_records(n: int, seed: int) -> list[CallRecord]:
    """What the gateway writes for a chat completion, with the mix of a busy day: 25% needed a second
    attempt (a 429 or 5xx first, half of them answered by a fallback), 2% failed, 10% streamed."""
    rng = random.Random(seed)
    now = time.time()
    keys = [f"key_{rng.getrandbits(48):012x}" for _ in range(20)]
    users = [None, None, None, *(f"user-{i}" for i in range(50))]
    out = []
    for _ in range(n):
        upstream = rng.uniform(150, 2500)
        overhead_ms = rng.uniform(0.2, 1.5)
        latency = upstream + overhead_ms
        prompt, completion = rng.randint(20, 4000), rng.randint(1, 800)
        attempts = []
        model, deployment = "gpt-4o-mini", "openai/gpt-4o-mini-2024-07-18"
        if rng.random() < 0.25:
            first = rng.choice([("error:RateLimited", 429), ("error:UpstreamUnavailable", 503)])
            attempts.append(AttemptRecord(1, model, deployment, first[0], first[1], rng.uniform(5, 300), 0.0))
            if rng.random() < 0.5:
                model, deployment = "claude-haiku-4-5", "anthropic/claude-haiku-4-5-20251001"
        failed = rng.random() < 0.02
        attempts.append(
            AttemptRecord(
                len(attempts) + 1,
                model,
                deployment,
                "error:UpstreamTimeout" if failed else "success",
                None if failed else 200,
                upstream,
                rng.uniform(0, 50) if attempts else 0.0,
            )
        )
        stream = rng.random() < 0.1
        ended = now - (n - len(out)) * 1e-4  # finishing in order at 10,000/s; started out of order
        out.append(
            CallRecord(
                id=f"req_{ULID()}",
                started_at=ended - latency / 1000,
                ended_at=ended,
                api_format="openai" if rng.random() < 0.8 else "anthropic",
                api_key_id=rng.choice(keys),
                end_user=rng.choice(users),
                requested_model="gpt-4o-mini",
                model=None if failed else model,
                provider=None if failed else deployment.split("/")[0],
                upstream_model=None if failed else deployment.split("/")[1],
                stream=stream,
                status="error:UpstreamTimeout" if failed else "success",
                error_message="upstream did not answer within 30 s" if failed else None,
                prompt_tokens=0 if failed else prompt,
                completion_tokens=0 if failed else completion,
                cached_tokens=0 if failed else rng.choice([0, 0, 0, 1024]),
                cache_write_tokens=0,
                reasoning_tokens=0,
                cost_usd=None if failed else f"{(prompt * 0.15 + completion * 0.6) / 1e6:.10f}",
                cost_exact=True,
                latency_ms=latency,
                ttft_ms=rng.uniform(100, 400) if stream else None,
                upstream_ms=upstream,
                overhead_ms=overhead_ms,
                attempts=attempts,
            )
        )
    return out


def batches(records: list[CallRecord], size: int) -> list[list[CallRecord]]:
    return [records[i : i + size] for i in range(0, len(records), size)]


# --- PostgreSQL ---------------------------------------------------------------------------------


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


class Postgres:
    """Throwaway databases on the server of ``admin_dsn``, all dropped by ``drop_all``."""

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        self.created: list[str] = []

    async def _admin(self, sql: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.admin_dsn, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    def create(self, suffix: str) -> str:
        name = f"llmrelay_bench_{os.getpid()}_{suffix}"
        asyncio.run(self._admin(f'DROP DATABASE IF EXISTS "{name}"'))
        asyncio.run(self._admin(f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        return with_database(self.admin_dsn, name)

    def drop_all(self) -> None:
        for name in self.created:
            try:
                asyncio.run(self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            except Exception as exc:  # report, and try the others
                print(f"could not drop database {name}: {exc}", file=sys.stderr)
        self.created.clear()


async def pg_counts(dsn: str) -> tuple[int, int]:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        calls = await conn.fetchval("SELECT count(*) FROM calls")
        attempts = await conn.fetchval("SELECT count(*) FROM attempts")
        return calls, attempts
    finally:
        await conn.close()


def sqlite_counts(path: Path) -> tuple[int, int]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return (
            conn.execute("SELECT count(*) FROM calls").fetchone()[0],
            conn.execute("SELECT count(*) FROM attempts").fetchone()[0],
        )
    finally:
        conn.close()


def postgres_ticks() -> dict[int, int]:
    """utime + stime (clock ticks) of every process named postgres on this machine, by pid: the
    server's backends, WAL writer, checkpointer... (it runs on the same 2 cores)."""
    ticks = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        head, _, rest = stat.rpartition(")")
        if head.split("(", 1)[-1] == "postgres":
            fields = rest.split()
            ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
    return ticks


def children_ticks(parent: int) -> dict[int, int]:
    """utime + stime (clock ticks) of ``parent``'s child processes (a gateway's call-log writer)."""
    ticks = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
    return ticks


def runqueue_wait_ns(pid: int) -> int:
    """How long the threads of ``pid`` have waited, runnable, for a CPU (schedstat(5), ns): a
    gateway slowed by another process taking its core waits here; one that is slower for itself
    (more work a request, or a slower core) does not."""
    wait = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            wait += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):  # a thread that ended meanwhile
            continue
    return wait


class CpuMeter:
    """CPU of this process (event loop and the store's threads) and its call-log writer process,
    and, for PostgreSQL, of the server's processes, between ``start`` and ``stop``. Read while the
    store's connections are open: a backend that exits takes its CPU out of /proc."""

    def __init__(self, postgres: bool) -> None:
        self.postgres = postgres
        self.stop_values: tuple[float, float | None] = (0.0, None)
        self.writer_s = 0.0  # of which the call-log writer process (CallLog's child)

    def start(self) -> None:
        self._cpu = time.process_time()
        self._children = children_ticks(os.getpid())
        self._pg = postgres_ticks() if self.postgres else {}

    def stop(self) -> tuple[float, float | None]:
        children = children_ticks(os.getpid())
        cpu = time.process_time() - self._cpu
        self.writer_s = sum(t - self._children.get(pid, 0) for pid, t in children.items()) / overhead.CLK_TCK
        cpu += self.writer_s
        if not self.postgres:
            return cpu, None
        now = postgres_ticks()
        return cpu, sum(t - self._pg.get(pid, 0) for pid, t in now.items()) / overhead.CLK_TCK


def postgres_problem(admin_dsn: str) -> str | None:
    """Why the PostgreSQL parts cannot run, or None."""
    try:
        from llmrelay.observability.postgres_store import PostgresCallStore  # noqa: F401
    except Exception as exc:  # missing, or not importable while it is being written
        return f"llmrelay.observability.postgres_store is not usable: {type(exc).__name__}: {exc}"

    async def ping() -> None:
        import asyncpg

        conn = await asyncpg.connect(admin_dsn, timeout=3)
        await conn.close()

    try:
        asyncio.run(ping())
    except Exception as exc:
        return f"no PostgreSQL at {admin_dsn}: {exc}"
    return None


# --- part 1: the stores -------------------------------------------------------------------------


@dataclass
class StoreRun:
    store: str
    path: str
    records: int
    seconds: float
    cpu_s: float  # this process (event loop + the store's threads)
    server_cpu_s: float | None  # PostgreSQL's processes
    stored: tuple[int, int]  # calls, attempts found in the store afterwards
    attempts: int  # attempts written
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.records / self.seconds


def open_store(kind: str, where: str) -> Any:
    if kind == "sqlite":
        return SqliteCallStore(where)
    from llmrelay.observability.postgres_store import PostgresCallStore

    return PostgresCallStore(where)


def count(kind: str, where: str) -> tuple[int, int]:
    return sqlite_counts(Path(where)) if kind == "sqlite" else asyncio.run(pg_counts(where))


async def _store_alone(
    kind: str, where: str, records: list[CallRecord], batch: int, meter: CpuMeter
) -> tuple[float, list[float], tuple[int, int]]:
    store = open_store(kind, where)
    await store.open()
    try:
        warm = make_records(batch, seed=99)
        await store.write(warm)  # warm-up: connections, partitions, caches
        per_batch = []
        meter.start()
        t0 = time.perf_counter()
        for chunk in batches(records, batch):
            t = time.perf_counter()
            await store.write(chunk)
            per_batch.append(time.perf_counter() - t)
        seconds = time.perf_counter() - t0
        meter.stop_values = meter.stop()
        return seconds, per_batch, (len(warm), sum(len(r.attempts) for r in warm))
    finally:
        await store.close()


def store_alone(kind: str, where: str, records: list[CallRecord], batch: int) -> StoreRun:
    meter = CpuMeter(kind == "postgres")
    seconds, per_batch, warm = run_async(_store_alone(kind, where, records, batch, meter))
    cpu, server = meter.stop_values
    calls, attempts = count(kind, where)
    per_batch.sort()
    return StoreRun(
        kind,
        "store alone",
        len(records),
        seconds,
        cpu,
        server,
        (calls - warm[0], attempts - warm[1]),  # minus the warm-up batch
        sum(len(r.attempts) for r in records),
        {"batch p50 ms": _pct(per_batch, 0.5) * 1e3, "batch max ms": per_batch[-1] * 1e3},
    )


async def _through_calllog(
    kind: str, where: str, journal_dir: Path, records: list[CallRecord], batch: int, meter: CpuMeter
) -> dict[str, Any]:
    url = f"sqlite:///{where}" if kind == "sqlite" else where
    log = CallLog(url, journal_dir, batch_size=batch, flush_interval_s=0.2)
    await log.start()
    try:
        await _writer_started()
        submit_ns = []
        meter.start()
        perf_ns = time.perf_counter_ns
        t0 = time.perf_counter()
        # Back to back: the submit figures are submit's alone (the writer process drains
        # meanwhile, on the other core).
        for record in records:
            t = perf_ns()
            log.submit(record)
            submit_ns.append(perf_ns() - t)
        submitted = time.perf_counter() - t0
        while log.queue_depth > 0:
            await asyncio.sleep(0.002)
        done = time.perf_counter() - t0
        meter.stop_values = meter.stop()
    finally:
        await log.aclose()
    submit_ns.sort()
    return {"submit_ns": submit_ns, "submitted_s": submitted, "done_s": done}


async def _writer_started(timeout: float = 10.0) -> None:
    """Until the call-log writer process is idle: its start-up (imports, opening the store) is not
    work per record, so it stays out of the CPU measured."""
    before = children_ticks(os.getpid())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await asyncio.sleep(0.3)
        now = children_ticks(os.getpid())
        if now == before:
            return
        before = now


def through_calllog(kind: str, where: str, tmp: Path, records: list[CallRecord], batch: int) -> StoreRun:
    journal_dir = tmp / f"journal-{kind}"
    meter = CpuMeter(kind == "postgres")
    r = run_async(_through_calllog(kind, where, journal_dir, records, batch, meter))
    cpu, server = meter.stop_values
    ns = r["submit_ns"]
    return StoreRun(
        kind,
        "via CallLog",
        len(records),
        r["done_s"],
        cpu,
        server,
        count(kind, where),
        sum(len(rec.attempts) for rec in records),
        {
            "submitted_s": r["submitted_s"],
            "submit mean us": statistics.fmean(ns) / 1e3,
            "submit p50 us": _pct(ns, 0.5) / 1e3,
            "submit p99 us": _pct(ns, 0.99) / 1e3,
            "submit max us": ns[-1] / 1e3,
            "writer us": meter.writer_s / len(records) * 1e6,
            "journal MB": sum(len(orjson.dumps(rec, default=str)) + 1 for rec in records) / 1e6,
        },
    )


def run_async(coro: Any) -> Any:
    try:
        import uvloop  # the gateway's event loop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def _pct(ordered: list[float] | list[int], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report_stores(runs: list[StoreRun], batch: int) -> None:
    print()
    print(
        f"Call store throughput: realistic records (25% with 2 attempts), batches of {batch}; goal {GOAL_RPS:,}/s"
    )
    header = (
        f"{'store':<10}{'path':<14}{'records':>9}{'seconds':>9}{'records/s':>11}"
        f"{'CPU/rec':>10}{'PG CPU/rec':>12}  in store (calls / attempts)"
    )
    print(header)
    print("-" * len(header))
    for r in runs:
        server = f"{r.server_cpu_s / r.records * 1e6:.0f} us" if r.server_cpu_s is not None else "-"
        ok = "ok" if r.stored == (r.records, r.attempts) else f"EXPECTED {r.records} / {r.attempts}"
        print(
            f"{r.store:<10}{r.path:<14}{r.records:>9}{r.seconds:>9.2f}{r.rps:>11,.0f}"
            f"{r.cpu_s / r.records * 1e6:>7.0f} us{server:>12}  {r.stored[0]} / {r.stored[1]} {ok}"
        )
    print(
        "  CPU/rec: this process (event loop + store thread); PG CPU/rec: the PostgreSQL server's processes"
    )
    for r in runs:
        e = r.extra
        if r.path == "store alone":
            print(
                f"  {r.store} store alone: a batch of {batch} takes {e['batch p50 ms']:.1f} ms (p50), max {e['batch max ms']:.1f} ms"
            )
        else:
            print(
                f"  {r.store} via CallLog: {r.records} submitted in {e['submitted_s']:.2f} s "
                f"({r.records / e['submitted_s']:,.0f}/s), then drained into the store in "
                f"{r.seconds - e['submitted_s']:.2f} s ({r.records / (r.seconds - e['submitted_s']):,.0f}/s); "
                f"journal {e['journal MB'] * 1e6 / r.records:.0f} B/record; "
                f"the writer process's CPU {e['writer us']:.1f} us/record"
            )
            print(
                f"  {r.store} CallLog.submit() per record (the request path's cost): mean {e['submit mean us']:.1f} us, "
                f"p50 {e['submit p50 us']:.1f}, p99 {e['submit p99 us']:.1f}, max {e['submit max us']:.0f} us"
            )


# --- part 2: gateways ---------------------------------------------------------------------------


def start_upstream(tmp: Path, procs: list[Any], ports: list[int]) -> tuple[Any, Path]:
    """nginx as in bench/overhead.py, listening on one port per gateway and logging the port of every
    request (unbuffered), so each gateway's upstream requests can be counted."""
    nginx = overhead._nginx()
    if nginx is None:
        raise SystemExit("nginx is not installed: apt-get install -y nginx")
    reply = json.dumps(overhead.UPSTREAM_REPLY, separators=(",", ":"))
    d = tmp / "nginx"
    d.mkdir()
    listens = "\n".join(f"        listen 127.0.0.1:{p};" for p in ports)
    access = d / "access.log"
    (d / "nginx.conf").write_text(
        f"""
worker_processes 1;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    log_format port '$server_port $uri';
    access_log {access} port;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server {{
{listens}
        default_type application/json;
        location = /v1/chat/completions {{ return 200 '{reply}'; }}
        location = /health {{ access_log off; return 200 'ok'; }}
        location / {{ return 404 '{{"error":{{"message":"not found"}}}}'; }}
    }}
}}
"""
    )
    argv = [nginx, "-p", str(d), "-c", str(d / "nginx.conf"), "-g", "daemon off;"]
    proc = overhead.start("nginx", argv, f"http://127.0.0.1:{ports[0]}/health", tmp, procs)
    return proc, access


@dataclass
class Gateway:
    name: str
    store: str | None  # None: call log off
    metrics: bool
    upstream_port: int
    journal_dir: Path | None = None
    db: str | None = None  # SQLite path or PostgreSQL DSN
    proc: Any = None
    url: str = ""
    runs: dict[int, list[Any]] = field(default_factory=dict)
    lags: list[float] = field(default_factory=list)  # seconds from the run's end to a drained journal
    answered: int = 0  # responses wrk (or the check) got, warm-ups included
    pg_cpu_s: dict[int, float] = field(default_factory=dict)  # PostgreSQL server CPU, by concurrency
    flush_interval_s: float = 0.2  # the call log's (the config's default)
    writer_cpus: list[int] | None = None  # calllog.writer_cpus

    @property
    def kind(self) -> str:
        return "sqlite" if self.store and self.store.startswith("sqlite") else "postgres"

    def start(self, tmp: Path, procs: list[Any]) -> None:
        port = overhead.free_port()
        config: dict[str, Any] = {
            "providers": {
                "upstream": {"kind": "openai", "base_url": f"http://127.0.0.1:{self.upstream_port}/v1"}
            },
            "models": [{"name": MODEL, "provider": "upstream"}],
            "pipeline": ["record", "execute"],  # no cache: it would answer the fixed body itself
            "metrics": self.metrics,
            "calllog": {"enabled": False},
        }
        if self.store is not None:
            self.journal_dir = tmp / f"gw-{self.name}"
            config["calllog"] = {
                "enabled": True,
                "directory": str(self.journal_dir),
                "store": self.store,
                "batch_size": 500,
                "flush_interval_s": self.flush_interval_s,
            }
            if self.writer_cpus is not None:
                config["calllog"]["writer_cpus"] = self.writer_cpus
        path = tmp / f"gateway-{self.name}.yaml"
        path.write_text(json.dumps(config))  # JSON is YAML
        self.url = f"http://127.0.0.1:{port}"
        argv = overhead.llmrelay("serve", "--config", str(path), "--port", str(port))
        self.proc = overhead.start(f"gateway-{self.name}", argv, self.url + "/healthz", tmp, procs)

    def pending_bytes(self) -> int:
        """Journal bytes not yet committed to the store."""
        return pending_bytes(self.journal_dir) if self.journal_dir is not None else 0

    def wait_drained(self, timeout: float = 30.0) -> float:
        t0 = time.monotonic()
        while self.pending_bytes() > 0:
            if time.monotonic() - t0 > timeout:
                raise SystemExit(f"{self.name}: the call log did not drain within {timeout:.0f} s")
            time.sleep(0.005)
        return time.monotonic() - t0

    def measure(self, gen: Any, n: int, concurrency: int, record: bool = True) -> Any:
        """One wrk run; CPU counted until the call log has committed what the run left (so the
        drain's work is charged to the requests that caused it)."""
        pg = self.store is not None and self.kind == "postgres"
        pg0 = postgres_ticks() if pg else {}
        cpu0 = self.proc.cpu_s()
        writer0 = children_ticks(self.proc.pid)
        client0 = overhead.children_cpu_s()
        wait0 = runqueue_wait_ns(self.proc.pid)
        run = gen.run(self.url + "/v1/chat/completions", n, concurrency)
        run.wait_s = (runqueue_wait_ns(self.proc.pid) - wait0) / 1e9
        run.client_cpu_s = overhead.children_cpu_s() - client0
        lag = self.wait_drained()
        run.server_cpu_s = self.proc.cpu_s() - cpu0
        writer = children_ticks(self.proc.pid)
        run.writer_cpu_s = sum(t - writer0.get(pid, 0) for pid, t in writer.items()) / overhead.CLK_TCK
        self.answered += run.total
        if record:
            self.runs.setdefault(concurrency, []).append(run)
            self.lags.append(lag)
            if pg:
                ticks = sum(t - pg0.get(pid, 0) for pid, t in postgres_ticks().items())
                self.pg_cpu_s[concurrency] = self.pg_cpu_s.get(concurrency, 0.0) + ticks / overhead.CLK_TCK
        return run

    def stored(self) -> tuple[int, int]:
        assert self.db is not None
        return count(self.kind, self.db)

    def metrics_requests(self) -> int:
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as resp:
            text = resp.read().decode()
        return round(
            sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("llmrelay_requests_total{")
            )
        )


def run_gateways(args: argparse.Namespace, tmp: Path, pg: Postgres | None) -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    procs: list[Any] = []
    try:
        specs: list[tuple[str, str | None, bool]] = [
            ("off", None, False),
            ("nolog", None, True),
            ("sqlite", "sqlite:///calls.db", True),
        ]
        if pg is not None:
            specs.append(("postgres", pg.create("gateway"), True))
        if args.split:
            specs.append(("sqlite-nm", "sqlite:///calls.db", False))
        if args.control:  # A/A: the same gateway as `off` again; its ratios are this run's noise
            specs.append(("off-again", None, False))
        if args.pin:  # every child inherits this: nginx, the gateways, wrk
            os.sched_setaffinity(0, {1})
        ports = [overhead.free_port() for _ in specs]
        _, access_log = start_upstream(tmp, procs, ports)
        gateways = [
            Gateway(
                *spec, port, flush_interval_s=args.flush_interval_s, writer_cpus=[0] if args.pin else None
            )
            for spec, port in zip(specs, ports, strict=True)
        ]
        for g in gateways:
            g.start(tmp, procs)
            if g.store is not None:
                assert g.journal_dir is not None
                g.db = str(g.journal_dir / "calls.db") if g.kind == "sqlite" else g.store
        body = json.dumps(overhead.BODY, separators=(",", ":")).encode()
        gen = overhead.Wrk(tmp, body, "sk-bench")
        for g in gateways:
            overhead.check(overhead.Target(g.name, g.url + "/v1/chat/completions", g.proc), body, "sk-bench")
            g.answered += 1

        print()
        print(
            f"Gateway with the call log off vs on: {', '.join(g.name for g in gateways)}; "
            f"{args.rounds} alternating rounds at c=1 ({args.requests_c1} requests) and c=32 ({args.requests_c32})"
        )
        counts = {1: args.requests_c1, 32: args.requests_c32}
        started = time.monotonic()
        for c in (1, 32):
            n = counts[c]
            for g in gateways:
                g.measure(gen, max(n // 5, 50), c, record=False)
            for i in range(args.rounds):
                line = []
                for g in gateways if i % 2 == 0 else gateways[::-1]:  # alternate who goes first
                    run = g.measure(gen, n, c)
                    line.append(f"{g.name} {run.rps:.0f}/s p99 {run.p99_ms:.2f}ms")
                print(f"  c={c} round {i + 1}/{args.rounds}: " + ", ".join(line), flush=True)
        print(f"  (load phase took {time.monotonic() - started:.0f} s)")
        report_gateways(gateways)

        # Nothing lost: every request a call-log gateway sent upstream is in its store.
        logged = [g for g in gateways if g.store is not None]
        before = {g.name: (g.stored(), g.metrics_requests() if g.metrics else None) for g in logged}
        for g in logged:
            g.proc.stop()  # SIGTERM: a clean shutdown drains the journal
        upstream: dict[int, int] = {}
        for line in access_log.read_text().splitlines():
            port, _, uri = line.partition(" ")
            if uri == "/v1/chat/completions":
                upstream[int(port)] = upstream.get(int(port), 0) + 1
        print()
        print("Records in the store vs requests served (nothing lost?):")
        for g in logged:
            (calls, attempts), metric = before[g.name]
            after, _ = g.stored()
            up = upstream.get(g.upstream_port, 0)
            same = calls == after == up and metric in (None, calls)
            verdict = "OK: one record per request" if same else "MISMATCH"
            print(
                f"  {g.name:<9} store {calls} calls ({attempts} attempts), after shutdown {after}; "
                f"upstream saw {up} requests, /metrics {metric if metric is not None else '-'}, "
                f"wrk got {g.answered} responses: {verdict}"
            )
        print(
            "  (wrk stops reading at its n-th response: the requests still in flight then are served and\n"
            "   recorded, but not counted by wrk; the upstream's access log counts every one)"
        )
    finally:
        for p in reversed(procs):
            p.stop()


def report_gateways(gateways: list[Gateway]) -> None:
    print()
    header = (
        f"{'gateway':<10}{'conc':>5}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'CPU/req':>10}{'wait/req':>10}"
        f"{'writer/req':>11}{'drain lag':>11}{'errors':>8}{'PG CPU/req':>12}"
    )
    print(header)
    print("-" * len(header))
    for c in (1, 32):
        for g in gateways:
            runs = g.runs[c]
            reqs = sum(r.total for r in runs)
            cpu = sum(r.server_cpu_s for r in runs) / reqs * 1e6
            wait = sum(r.wait_s for r in runs) / reqs * 1e6
            writer = f"{sum(r.writer_cpu_s for r in runs) / reqs * 1e6:.0f} us" if g.store else "-"
            lag = f"{max(g.lags) * 1e3:.0f} ms" if g.store else "-"
            pg = f"{g.pg_cpu_s[c] / reqs * 1e6:.0f} us" if c in g.pg_cpu_s else "-"
            print(
                f"{g.name:<10}{c:>5}{overhead.median([r.rps for r in runs]):>9.0f}"
                f"{overhead.median([r.p50_ms for r in runs]):>9.3f}{overhead.median([r.p99_ms for r in runs]):>9.3f}"
                f"{cpu:>7.0f} us{wait:>7.1f} us{writer:>11}{lag:>11}{sum(r.errors for r in runs):>8}{pg:>12}"
            )
    print(
        "  medians over rounds; CPU/req: the gateway process (threads included) from the start of a run\n"
        "  until its journal is committed, / responses; wait/req: time its threads waited for a CPU\n"
        "  during the runs, / responses; writer/req: its call-log writer process over the\n"
        "  same span (same 2 cores, not in CPU/req); drain lag: max time from a run's end to that;\n"
        "  PG CPU/req: the PostgreSQL server's processes over the same span (same 2 cores, not in CPU/req)"
    )
    print()
    by_name = {g.name: g for g in gateways}
    for g in gateways[1:]:
        # A call-log gateway with metrics against the one without the call log (the call log's own
        # cost); every gateway against `off` (what recording costs as a whole).
        bases = ["nolog", "off"] if g.store is not None and g.metrics else ["off"]
        for base, c in itertools.product([by_name[b] for b in bases], (1, 32)):
            pairs = list(zip(base.runs[c], g.runs[c], strict=True))
            rps_ratios = sorted(on.rps / off.rps for off, on in pairs)
            p99_ratios = sorted(on.p99_ms / off.p99_ms for off, on in pairs)
            rps = overhead.median(rps_ratios)
            p50 = overhead.median([on.p50_ms / off.p50_ms for off, on in pairs])
            p99 = overhead.median(p99_ratios)
            cpu_on = sum(r.server_cpu_s for r in g.runs[c]) / sum(r.total for r in g.runs[c])
            cpu_off = sum(r.server_cpu_s for r in base.runs[c]) / sum(r.total for r in base.runs[c])
            verdict = "within 10%" if rps >= 0.9 and p99 <= 1.1 else "NOT within 10%"
            print(
                f"  {g.name} vs {base.name}, c={c}: throughput x{rps:.3f}, p50 x{p50:.3f}, p99 x{p99:.3f}, "
                f"CPU/req x{cpu_on / cpu_off:.3f} (+{(cpu_on - cpu_off) * 1e6:.0f} us): {verdict}"
            )
            print(
                f"      per-round ratios, middle half: throughput x{_quartiles(rps_ratios)}, "
                f"p99 x{_quartiles(p99_ratios)}"
            )
    print("  (ratios paired per round, median over rounds; every round counted, none dropped)")


def _quartiles(ordered: list[float]) -> str:
    """The first and third quartiles of sorted values (nearest rank): the spread behind a median."""
    n = len(ordered)
    return f"{ordered[(n - 1) // 4]:.2f}-{ordered[(3 * (n - 1) + 3) // 4]:.2f}"


# --- main ---------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--records", type=int, default=60_000, help="records per store measurement (default 60000)"
    )
    ap.add_argument("--batch", type=int, default=500, help="records per store write (default 500)")
    ap.add_argument("--pg-dsn", default=os.environ.get("LLMRELAY_BENCH_POSTGRES_DSN", ADMIN_DSN))
    ap.add_argument("--no-postgres", action="store_true", help="SQLite only")
    ap.add_argument("--stores-only", action="store_true", help="part 1 only (no gateways)")
    ap.add_argument("--gateways-only", action="store_true", help="part 2 only")
    ap.add_argument(
        "--split",
        action="store_true",
        help="also a gateway with the SQLite call log and no metrics (against `off`: the call log alone)",
    )
    ap.add_argument(
        "--control",
        action="store_true",
        help="also a second gateway identical to `off` (A/A): how far apart two equal gateways measure",
    )
    ap.add_argument(
        "--pin",
        action="store_true",
        help="nginx, wrk and every gateway on CPU 1, the call-log writers on CPU 0 "
        "(calllog.writer_cpus): the writer with a core of its own, as on a machine with one to "
        "spare (SQLite only: the PostgreSQL server is not ours to place)",
    )
    ap.add_argument("--rounds", type=int, default=5, help="alternating gateway rounds per concurrency")
    ap.add_argument(
        "--flush-interval-s", type=float, default=0.2, help="the gateways' calllog.flush_interval_s"
    )
    ap.add_argument("--requests-c1", type=int, default=2000)
    ap.add_argument("--requests-c32", type=int, default=6000)
    ap.add_argument(
        "--keep-logs", action="store_true", help="keep the temp dir (logs, journals, SQLite files)"
    )
    args = ap.parse_args()
    if args.pin:
        if (os.cpu_count() or 1) < 2:
            raise SystemExit("--pin needs two CPUs")
        args.no_postgres = True

    started = time.monotonic()
    print(f"machine: {os.cpu_count()} cores, {overhead._cpu_model()}; Python {sys.version.split()[0]}")
    pg: Postgres | None = None
    if not args.no_postgres:
        problem = postgres_problem(args.pg_dsn)
        if problem:
            print(f"PostgreSQL: pending, measuring SQLite only ({problem})")
        else:
            pg = Postgres(args.pg_dsn)
    tmp = Path(tempfile.mkdtemp(prefix="llmrelay-bench-calllog-"))
    try:
        if not args.gateways_only:
            alone = make_records(args.records, seed=1)
            via = make_records(args.records, seed=2)
            runs = [store_alone("sqlite", str(tmp / "alone.db"), alone, args.batch)]
            runs.append(through_calllog("sqlite", str(tmp / "calllog.db"), tmp, via, args.batch))
            if pg is not None:
                runs.append(store_alone("postgres", pg.create("alone"), alone, args.batch))
                runs.append(through_calllog("postgres", pg.create("calllog"), tmp, via, args.batch))
            runs.sort(key=lambda r: r.store == "postgres")
            report_stores(runs, args.batch)
        if not args.stores_only:
            run_gateways(args, tmp, pg)
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        if pg is not None:
            pg.drop_all()
        if args.keep_logs:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n(whole run {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
