"""What rate limits cost, and whether a shared limit holds across gateway processes.

1. Throughput and latency, limits off vs on, in one run: three gateways in front of the same
   upstream (nginx with a fixed reply, else the simulator): ``off`` (no limits at all, so no
   ``limit`` stage), ``local`` (a model rpm + tpm in-process) and ``redis`` (the same limits in
   Redis: one Lua script per request, plus the token reconciliation after it). The limits are
   set far above the load, so every request is admitted and only their cost shows. Alternating
   rounds at concurrency 1 and 32; ratios to ``off`` are paired per round.
2. Accuracy: 2 and 4 gateway processes share one limit (model rpm, in Redis); a client hammers
   them all for a few seconds, round-robin, and the requests admitted are compared with what the
   limit allows in that time (the burst plus the refill). For contrast, the same with in-process
   limits, where each process admits the whole limit by itself (what LiteLLM's local TPM checks do).
3. One check's cost in this process: CPU and wall time per ``acquire`` (a model's rpm + tpm
   buckets) of the in-process limiter and of the Redis one, with redis-py's hiredis parser when
   installed (``hiredis`` is in the ``redis`` extra).

    .venv/bin/python bench/limits.py                 # ~2 min; needs Redis (REDIS_URL or 127.0.0.1:6379)
    .venv/bin/python bench/limits.py --skip-throughput --processes 2 4 8

Reuses bench/overhead.py's processes, wrk driver and helpers. Figures: bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import overhead  # noqa: E402  (bench/ is not a package: its scripts share code this way)

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
HUGE = 1_000_000_000  # a limit no benchmark reaches: only its cost shows


def gateway_config(upstream_url: str, tmp: Path, limits: dict | None, redis: str | None) -> dict:
    model: dict = {"name": overhead.MODEL, "provider": "upstream"}
    if limits is not None:
        model["limits"] = limits
    config: dict = {
        "providers": {"upstream": {"kind": "openai", "base_url": upstream_url + "/v1"}},
        "models": [model],
        # As in bench/overhead.py: the pipeline's own cost, without the cache, call log and metrics.
        "pipeline": ["record", "limit", "execute"],
        "calllog": {"enabled": False, "directory": str(tmp)},
        "metrics": False,
    }
    if redis:
        config["redis_url"] = redis
        config["limits"] = {"redis_prefix": f"llmrelay-bench:{uuid.uuid4().hex}"}
    return config


def start_gateway(
    name: str, config: dict, tmp: Path, procs: list[overhead.Proc]
) -> tuple[overhead.Proc, str]:
    port = overhead.free_port()
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(config))  # JSON is YAML
    url = f"http://127.0.0.1:{port}"
    argv = overhead.llmrelay("serve", "--config", str(path), "--port", str(port))
    return overhead.start(name, argv, url + "/healthz", tmp, procs), url


# --- 1. throughput ------------------------------------------------------------------------------


def throughput(args: argparse.Namespace, tmp: Path, procs: list[overhead.Proc], upstream_url: str) -> None:
    body = json.dumps(overhead.BODY, separators=(",", ":")).encode()
    if shutil.which("wrk"):
        gen: overhead.Wrk | overhead.PyClient = overhead.Wrk(tmp, body, "sk-bench")
    else:
        print("wrk not found (apt-get install -y wrk): using the slower Python client", file=sys.stderr)
        gen = overhead.PyClient(body, "sk-bench")
    limits = {"rpm": HUGE, "tpm": HUGE}
    variants = {"off": (None, None), "local": (limits, None), "redis": (limits, REDIS_URL)}
    targets = []
    for name, (lim, redis) in variants.items():
        proc, url = start_gateway(f"gw-{name}", gateway_config(upstream_url, tmp, lim, redis), tmp, procs)
        targets.append(overhead.Target(name, url + "/v1/chat/completions", proc))
    for t in targets:
        overhead.check(t, body, "sk-bench")
    counts = {1: args.requests_c1, 32: args.requests_c32}
    for c in (1, 32):
        for t in targets:
            t.measure(gen, max(counts[c] // 5, 50), c, record=False)  # warm-up
        for i in range(args.rounds):
            line = []
            for t in targets:
                run = t.measure(gen, counts[c], c)
                line.append(f"{t.name} {run.rps:.0f}/s p99 {run.p99_ms:.2f}ms")
            print(f"c={c} round {i + 1}/{args.rounds}: " + ", ".join(line), flush=True)
    print()
    print(f"upstream: {args.upstream}; load generator: {gen.name}; {os.cpu_count()} cores")
    header = f"{'limits':<8}{'conc':>5}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'CPU/req':>10}{'vs off':>9}{'p99 +ms':>9}{'errors':>8}"
    print(header)
    print("-" * len(header))
    off = targets[0]
    for c in (1, 32):
        for t in targets:
            runs = t.runs[c]
            reqs = sum(r.total for r in runs)
            cpu = sum(r.server_cpu_s or 0 for r in runs)
            pairs = list(zip(off.runs[c], runs, strict=True))
            ratio = overhead.median([r.rps / o.rps for o, r in pairs if o.rps])
            p99_add = overhead.median([r.p99_ms - o.p99_ms for o, r in pairs])
            print(
                f"{t.name:<8}{c:>5}{overhead.median([r.rps for r in runs]):>9.0f}"
                f"{overhead.median([r.p50_ms for r in runs]):>9.3f}{overhead.median([r.p99_ms for r in runs]):>9.3f}"
                f"{(cpu / reqs * 1e6 if reqs else 0):>7.0f} us{ratio:>9.3f}{p99_add:>+9.2f}{sum(r.errors for r in runs):>8}"
            )
    print()


# --- 2. accuracy --------------------------------------------------------------------------------


async def hammer(urls: list[str], seconds: float, concurrency: int) -> tuple[int, int, int, float]:
    """Requests round-robin over ``urls`` for ``seconds``: (admitted, refused, other, elapsed)."""
    import aiohttp

    body = json.dumps(overhead.BODY).encode()
    counts = {"ok": 0, "refused": 0, "other": 0}
    sent = 0
    started = time.monotonic()
    stop_at = started + seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal sent
        while time.monotonic() < stop_at:
            url = urls[sent % len(urls)]
            sent += 1
            try:
                async with session.post(url, data=body, headers={"content-type": "application/json"}) as r:
                    await r.read()
                    counts["ok" if r.status == 200 else "refused" if r.status == 429 else "other"] += 1
            except (aiohttp.ClientError, OSError):
                counts["other"] += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return counts["ok"], counts["refused"], counts["other"], time.monotonic() - started


def accuracy(args: argparse.Namespace, tmp: Path, procs: list[overhead.Proc], upstream_url: str) -> None:
    rpm = args.rpm
    print(f"one limit shared by N gateway processes: model rpm {rpm} (a burst of {rpm}, then {rpm / 60:g}/s)")
    print(
        f"load: {args.concurrency} concurrent requests round-robin over the processes for {args.seconds:g} s"
    )
    header = f"{'store':<7}{'procs':>6}{'admitted':>10}{'allowed':>9}{'error':>9}{'refused':>9}{'req/s':>8}"
    print(header)
    print("-" * len(header))
    for store in ("redis", "local"):
        for n in args.processes:
            run = []
            redis = REDIS_URL if store == "redis" else None
            config = gateway_config(upstream_url, tmp, {"rpm": rpm}, redis)
            for i in range(n):
                run.append(start_gateway(f"acc-{store}-{n}-{i}", config, tmp, procs))
            urls = [url + "/v1/chat/completions" for _, url in run]
            admitted, refused, other, elapsed = asyncio.run(hammer(urls, args.seconds, args.concurrency))
            allowed = rpm + rpm / 60 * elapsed  # the burst plus what refilled while it ran
            error = (admitted - allowed) / allowed
            total = admitted + refused + other
            print(
                f"{store:<7}{n:>6}{admitted:>10}{allowed:>9.0f}{error:>+8.1%}{refused:>9}{total / elapsed:>8.0f}"
                + (f"  ({other} other errors)" if other else ""),
                flush=True,
            )
            for proc, _ in run:
                proc.stop()
                procs.remove(proc)
    print()


async def _check_cost(limiter: object, n: int) -> tuple[float, float]:
    from llmrelay.limits import Limit

    limits = [Limit("m:bench:r", HUGE, 1), Limit("m:bench:t", HUGE, 40, "tokens")]
    for _ in range(200):  # warm-up: connection, script cache
        await limiter.acquire(limits)  # type: ignore[attr-defined]
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(n):
        await limiter.acquire(limits)  # type: ignore[attr-defined]
    result = (time.process_time() - cpu) / n * 1e6, (time.perf_counter() - wall) / n * 1e6
    await limiter.aclose()  # type: ignore[attr-defined]
    return result


def check_cost(n: int) -> None:
    from llmrelay.limits import LocalLimiter
    from llmrelay.limits.redis_limiter import RedisLimiter

    try:
        import hiredis  # noqa: F401

        parser = "hiredis"
    except ImportError:
        parser = "pure-Python parser (pip install hiredis)"
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    print(f"one check (2 buckets), {n} in a row on one event loop:")
    for name, make in (
        ("in-process", LocalLimiter),
        (f"Redis, {parser}", lambda: RedisLimiter(REDIS_URL, prefix=f"llmrelay-bench:{uuid.uuid4().hex}")),
    ):
        cpu_us, wall_us = run(_check_cost(make(), n))
        print(f"  {name:<40} {cpu_us:6.0f} us CPU {wall_us:7.0f} us wall")
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--upstream", choices=["nginx", "simulator"], default=None)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--requests-c1", type=int, default=1500)
    ap.add_argument("--requests-c32", type=int, default=4000)
    ap.add_argument("--processes", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--rpm", type=int, default=600)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--checks", type=int, default=3000, help="checks timed in part 3 (0: skip it)")
    ap.add_argument("--keep-logs", action="store_true")
    args = ap.parse_args()
    with overhead.bench_run("llmrelay-bench-limits-", args.keep_logs) as (tmp, procs):
        port = overhead.free_port()
        if args.upstream is None:
            args.upstream = "nginx" if overhead._nginx() else "simulator"
        if args.upstream == "nginx":
            _, upstream_url = overhead.start_nginx(tmp, procs, port)
        else:
            _, upstream_url = overhead.start_simulator(tmp, procs, port)
        if not args.skip_throughput:
            throughput(args, tmp, procs, upstream_url)
        if not args.skip_accuracy:
            accuracy(args, tmp, procs, upstream_url)
    if args.checks:
        check_cost(args.checks)


if __name__ == "__main__":
    main()
