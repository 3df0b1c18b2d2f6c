"""Exact-cache throughput through the gateway: hits, against misses and the cache off, in one run.

Starts an upstream (nginx returning one fixed chat completion, else ``llmrelay simulate``) and,
as subprocesses on free loopback ports, one ``llmrelay serve`` per configuration:

    off       the pipeline without the cache stage (record, execute): every request goes upstream
    memory    the default pipeline and store (record, cache, execute; in-process LRU)
    sqlite    the same with cache.backend sqlite (a file in a temp dir)
    redis     the same with cache.backend redis (skipped when no Redis answers)

then sends, in alternating rounds at concurrency 1 and 32 (wrk, keep-alive):

    off          the benchmark body (temperature 0) to the gateway without cache
    miss         a body whose user message carries a request counter: a lookup that misses, the
                 upstream call, and the store of its answer (memory store)
    hit          the fixed body: answered from the cache (one per store)
    hit-stream   the same body with stream: true: the cached answer replayed as SSE (memory store)

and prints req/s, latency p50/p99 and the gateway's CPU per request (/proc/<pid>/stat), with the
ratio to "off" paired per round. Reuses bench/overhead.py's processes, wrk driver and report pieces.

    .venv/bin/python bench/cache.py                      # ~1-2 min
    .venv/bin/python bench/cache.py --rounds 2 --stores memory
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
import overhead  # noqa: E402  (bench/ is not a package: its scripts share code this way)

REDIS_URL = os.environ.get("LLMRELAY_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
BODY = overhead.BODY  # system + user message, max_tokens 32, temperature 0


class CountingWrk(overhead.Wrk):
    """wrk whose every request carries a new number in its user message: each one a cache miss
    (and a run's numbers are prefixed with the time it started, so no run repeats another's)."""

    name = "wrk (1 thread, Lua POST script, a new body per request)"

    def __init__(self, tmp: Path, body: dict[str, Any], key: str) -> None:
        self.template = body
        super().__init__(tmp, b"", key)

    def run(self, url: str, n: int, concurrency: int) -> overhead.Run:
        messages = [*self.template["messages"][:-1], {"role": "user", "content": f"{time.time_ns()} %d"}]
        self.body = json.dumps({**self.template, "messages": messages}, separators=(",", ":"))
        assert self.body.count("%") == 1  # the one placeholder for string.format
        self._scripts.clear()
        return super().run(url, n, concurrency)

    def _script(self, limit: int) -> Path:
        path = super()._script(limit)
        path.write_text(
            path.read_text()
            + f"""
local template = [==[{self.body}]==]
local n = 0
function request()
  n = n + 1
  return wrk.format(nil, nil, nil, string.format(template, n))
end
"""
        )
        return path


def stage_cost(n: int = 20_000, rounds: int = 5) -> None:
    """CPU time the cache stage itself adds per call, in-process (no HTTP, no upstream: the next
    stage returns a fixed answer), on a miss (key, lookup, store) and on a hit (key, lookup, read
    back). CPU time rather than wall time: it hardly moves with the machine's other load."""
    import asyncio

    from llmrelay.cache import CacheStage, MemoryBackend
    from llmrelay.catalog import Catalog
    from llmrelay.config import Settings
    from llmrelay.pipeline import Call
    from llmrelay.providers import openai_format

    settings = Settings.from_dict(
        {
            "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:1/v1"}},
            "models": [{"name": overhead.MODEL, "provider": "p"}],
        }
    )
    catalog = Catalog(settings)
    entry = catalog.get(overhead.MODEL)
    answer = openai_format.parse_response(overhead.UPSTREAM_REPLY, overhead.MODEL)

    async def upstream(call: Call) -> Any:
        call.model, call.deployment = entry, entry.deployments[0]
        return answer

    async def run() -> tuple[float, float]:
        stage = CacheStage(MemoryBackend(1 << 30), catalog, {overhead.MODEL: settings.cache.merged(None)})
        requests = [
            openai_format.parse_request(
                {**BODY, "messages": [*BODY["messages"][:-1], {"role": "user", "content": f"{i}"}]}
            )
            for i in range(n)
        ]
        t = time.process_time()
        for r in requests:
            await upstream(Call(r))
        base = time.process_time() - t
        spent = []
        for _ in range(2):  # misses, then the same requests again: hits
            t = time.process_time()
            for r in requests:
                await stage(Call(r, principal="sk-bench"), upstream)
            spent.append((time.process_time() - t - base) / n * 1e6)
        return spent[0], spent[1]

    runs = [asyncio.run(run()) for _ in range(rounds)]
    miss = overhead.median([r[0] for r in runs])
    hit = overhead.median([r[1] for r in runs])
    print(
        f"cache stage CPU per call, in-process (median of {rounds} x {n}): miss {miss:.1f} us, hit {hit:.1f} us"
    )


def redis_reachable() -> bool:
    parts = urlsplit(REDIS_URL)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=0.5).close()
    except OSError:
        return False
    return True


def start_gateway(
    name: str, upstream_url: str, tmp: Path, procs: list[overhead.Proc], cache: dict | None
) -> str:
    config: dict[str, Any] = {
        "providers": {"upstream": {"kind": "openai", "base_url": upstream_url + "/v1"}},
        "models": [{"name": overhead.MODEL, "provider": "upstream"}],
        # As in bench/overhead.py: the pipeline's own cost (bench/calllog.py has the call log's).
        "calllog": {"enabled": False, "directory": str(tmp)},
        "metrics": False,
    }
    if cache is None:
        config["pipeline"] = ["record", "execute"]
    else:
        config["cache"] = cache
    path = tmp / f"gateway-{name}.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    port = overhead.free_port()
    url = f"http://127.0.0.1:{port}"
    argv = overhead.llmrelay("serve", "--config", str(path), "--port", str(port))
    overhead.start(f"gateway-{name}", argv, url + "/healthz", tmp, procs)
    return url


def check_cached(url: str, body: bytes, key: str) -> None:
    """Two requests by hand: the second must say it was a hit."""
    import urllib.request

    status = []
    for _ in range(2):
        req = urllib.request.Request(
            url, data=body, headers={"content-type": "application/json", "authorization": f"Bearer {key}"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()
            status.append(resp.headers.get("x-llmrelay-cache"))
    if status[-1] != "hit":
        raise SystemExit(f"{url}: expected a cache hit, got x-llmrelay-cache {status}")


def report(targets: list[tuple[overhead.Target, Any]], concurrencies: list[int], upstream: str) -> None:
    off = targets[0][0]
    print()
    print(f"upstream: {upstream}; load generator: wrk (1 thread)")
    print(f"machine: {os.cpu_count()} cores, {overhead._cpu_model()}; Python {sys.version.split()[0]}")
    print("medians over rounds; ratios are paired per round (same run)")
    print()
    header = f"{'target':<21}{'conc':>5}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'CPU/req':>10}{'vs off':>8}{'errors':>8}"
    print(header)
    print("-" * len(header))
    med = overhead.median
    for c in concurrencies:
        for t, _ in targets:
            runs = t.runs.get(c, [])
            reqs = sum(r.total for r in runs)
            cpu = [r.server_cpu_s for r in runs if r.server_cpu_s is not None]
            srv = f"{sum(cpu) / reqs * 1e6:.0f} us" if cpu and reqs else "-"
            pairs = list(zip(off.runs.get(c, []), runs, strict=False))
            ratio = med([r.rps / o.rps for o, r in pairs if o.rps])
            print(
                f"{t.name:<21}{c:>5}{med([r.rps for r in runs]):>10.0f}{med([r.p50_ms for r in runs]):>9.3f}"
                f"{med([r.p99_ms for r in runs]):>9.3f}{srv:>10}{ratio:>8.2f}{sum(r.errors for r in runs):>8}"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per concurrency (default 3)")
    ap.add_argument("--requests-c1", type=int, default=2000, help="requests per run at concurrency 1")
    ap.add_argument("--requests-c32", type=int, default=5000, help="requests per run at concurrency 32")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    ap.add_argument(
        "--stores", nargs="+", default=["memory", "sqlite", "redis"], choices=["memory", "sqlite", "redis"]
    )
    ap.add_argument("--keep-logs", action="store_true", help="keep the temp dir with the servers' logs")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    if "redis" in args.stores and not redis_reachable():
        print(f"no Redis at {REDIS_URL}: the redis store is skipped", file=sys.stderr)
        args.stores.remove("redis")

    stage_cost()
    key = "sk-bench"
    plain = json.dumps(BODY, separators=(",", ":")).encode()
    streamed = json.dumps({**BODY, "stream": True}, separators=(",", ":")).encode()
    with overhead.bench_run("llmrelay-bench-cache-", args.keep_logs) as (tmp, procs):
        if overhead._nginx():
            up_proc, up_url = overhead.start_nginx(tmp, procs, overhead.free_port())
            upstream = "nginx (1 worker, fixed chat-completion JSON)"
        else:
            up_proc, up_url = overhead.start_simulator(tmp, procs, overhead.free_port())
            upstream = "llmrelay simulate (fixed_reply mode)"

        def gen(name: str, body: bytes | None = None) -> overhead.Wrk:
            (tmp / name).mkdir()
            return CountingWrk(tmp / name, BODY, key) if body is None else overhead.Wrk(tmp / name, body, key)

        off_url = start_gateway("off", up_url, tmp, procs, None)
        targets: list[tuple[overhead.Target, Any]] = [
            (overhead.Target("off", off_url + "/v1/chat/completions", procs[-1]), gen("off", plain))
        ]
        stores = {
            "memory": {"backend": "memory"},
            "sqlite": {"backend": "sqlite", "sqlite_path": str(tmp / "cache.db")},
            "redis": {"backend": "redis", "redis_url": REDIS_URL, "ttl_s": 300},
        }
        for store in args.stores:
            url = start_gateway(store, up_url, tmp, procs, stores[store]) + "/v1/chat/completions"
            proc = procs[-1]
            check_cached(url, plain, key)
            if store == "memory":
                targets.append((overhead.Target("miss (memory)", url, proc), gen("miss")))
            targets.append((overhead.Target(f"hit ({store})", url, proc), gen(f"hit-{store}", plain)))
            if store == "memory":
                targets.append((overhead.Target("hit-stream (memory)", url, proc), gen("stream", streamed)))

        counts = {1: args.requests_c1, 32: args.requests_c32}
        started = time.monotonic()
        for c in args.concurrency:
            n = counts.get(c, args.requests_c32)
            for t, g in targets:  # warm up: connections, pools; not recorded
                t.measure(g, max(n // 5, 50), c, record=False)
            for i in range(args.rounds):
                line = []
                for t, g in targets:
                    run = t.measure(g, n, c)
                    line.append(f"{t.name} {run.rps:.0f}/s")
                print(f"c={c} round {i + 1}/{args.rounds}: " + ", ".join(line), flush=True)
        print(f"(load phase took {time.monotonic() - started:.0f}s)")
        report(targets, args.concurrency, upstream)


if __name__ == "__main__":
    main()
