"""What the gateway adds: the same load straight at the upstream and through ``llmrelay serve``.

Starts an upstream (nginx returning one fixed chat completion, or ``llmrelay simulate`` in
fixed-reply mode) and the gateway in front of it, as subprocesses on free loopback ports; then
sends the same small non-streaming chat-completions body to each target in alternating rounds
(direct, gateway, [extra targets], direct, gateway, ...) at concurrency 1 and 32, and prints
requests/s, latency p50/p99, the gateway/direct throughput ratio, the latency the gateway adds and
the gateway's CPU time per request (from /proc/<pid>/stat). Figures are paired per round and the
median over rounds is shown, so slow drift of the machine affects both sides alike.

    .venv/bin/python bench/overhead.py                       # ~30 s: nginx upstream, wrk
    .venv/bin/python bench/overhead.py --passthrough         # + the floor (bench/passthrough.py)
    .venv/bin/python bench/overhead.py --upstream simulator  # the Python simulator as upstream
    # a peer gateway fronting the same upstream (start it first, pointed at port 8100):
    .venv/bin/python bench/overhead.py --upstream-port 8100 --target other=http://127.0.0.1:4001/v1@PID

Load generator: ``wrk`` (C, one thread) when installed (``apt-get install wrk``), else a Python
aiohttp client in a separate process (costlier: it takes more of the CPU the servers need).
See bench/README.md for what the numbers mean and the figures measured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

MODEL = "gpt-4o-mini"
REPLY = "Hello! I am a fixed benchmark reply."
BODY = {
    "model": MODEL,
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Say hello in one short sentence."},
    ],
    "max_tokens": 32,
    "temperature": 0,
}
# What the nginx upstream answers: the shape the simulator's fixed-reply mode sends.
UPSTREAM_REPLY = {
    "id": "chatcmpl-fixed",
    "object": "chat.completion",
    "created": 1700000000,
    "model": MODEL,
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": REPLY, "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 10,
        "completion_tokens": 9,
        "total_tokens": 19,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    },
    "system_fingerprint": "fp_bench",
}
CLK_TCK = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parent.parent


# --- processes ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Foreign:
    """A process we did not start (a peer given with --target ...@PID): read, never stopped."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def poll(self) -> int:
        return 0  # never ours to stop


@dataclass
class Proc:
    name: str
    process: subprocess.Popen[bytes] | _Foreign
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_s(self) -> float:
        """utime + stime of the process so far, in seconds."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(name: str, argv: list[str], ready_url: str, tmp: Path, procs: list[Proc]) -> Proc:
    """Start ``argv`` (own session: Ctrl-C reaches only us, and we stop it) and wait for ``ready_url``."""
    log_path = tmp / f"{name}.log"
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    proc = Proc(name, process, log_path)
    procs.append(proc)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{name} exited with {process.returncode}:\n{proc.log_tail()}")
        try:
            with urllib.request.urlopen(ready_url, timeout=1) as resp:
                if resp.status < 500:
                    return proc
        except (urllib.error.URLError, OSError):
            time.sleep(0.05)
    raise SystemExit(f"{name} did not answer {ready_url} within 30s:\n{proc.log_tail()}")


def llmrelay(*args: str) -> list[str]:
    return [sys.executable, "-m", "llmrelay.cli", *args]


def start_nginx(tmp: Path, procs: list[Proc], port: int) -> tuple[Proc, str]:
    nginx = _nginx()
    if nginx is None:
        raise SystemExit(
            "nginx is not installed: apt-get install -y nginx (or run with --upstream simulator)"
        )
    reply = json.dumps(UPSTREAM_REPLY, separators=(",", ":"))
    assert "'" not in reply and "$" not in reply and "\\" not in reply  # nginx string literal
    (tmp / "nginx").mkdir()
    conf = tmp / "nginx" / "nginx.conf"
    conf.write_text(
        f"""
worker_processes 1;
master_process off;
pid {tmp}/nginx/nginx.pid;
error_log {tmp}/nginx/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/nginx/body;
    proxy_temp_path {tmp}/nginx/proxy;
    fastcgi_temp_path {tmp}/nginx/fastcgi;
    uwsgi_temp_path {tmp}/nginx/uwsgi;
    scgi_temp_path {tmp}/nginx/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{port};
        default_type application/json;
        location = /v1/chat/completions {{ return 200 '{reply}'; }}
        location = /health {{ return 200 'ok'; }}
        location / {{ return 404 '{{"error":{{"message":"not found"}}}}'; }}
    }}
}}
"""
    )
    url = f"http://127.0.0.1:{port}"
    argv = [nginx, "-p", str(tmp / "nginx"), "-c", str(conf), "-g", "daemon off;"]
    return start("nginx", argv, url + "/health", tmp, procs), url


def _nginx() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )


def start_simulator(tmp: Path, procs: list[Proc], port: int) -> tuple[Proc, str]:
    config = tmp / "simulator.yaml"
    config.write_text(json.dumps({"fixed_reply": REPLY}))  # JSON is YAML
    url = f"http://127.0.0.1:{port}"
    argv = llmrelay("simulate", "--config", str(config), "--port", str(port))
    return start("simulator", argv, url + "/health", tmp, procs), url


def start_gateway(upstream_url: str, tmp: Path, procs: list[Proc]) -> tuple[Proc, str]:
    port = free_port()
    config = tmp / "gateway.yaml"
    config.write_text(
        json.dumps(
            {
                "providers": {"upstream": {"kind": "openai", "base_url": upstream_url + "/v1"}},
                "models": [{"name": MODEL, "provider": "upstream"}],
                # Without the cache stage: it would answer this fixed temperature-0 body from
                # memory (bench/cache.py measures that).
                "pipeline": ["record", "execute"],
                # The pipeline's own cost, comparable across versions; bench/calllog.py measures
                # what the call log and metrics add on top.
                "calllog": {"enabled": False, "directory": str(tmp)},
                "metrics": False,
            }
        )
    )
    url = f"http://127.0.0.1:{port}"
    argv = llmrelay("serve", "--config", str(config), "--port", str(port))
    return start("gateway", argv, url + "/healthz", tmp, procs), url


def start_passthrough(upstream_url: str, tmp: Path, procs: list[Proc]) -> tuple[Proc, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, str(ROOT / "bench" / "passthrough.py"), "--upstream", upstream_url + "/v1"]
    return start("passthrough", [*argv, "--port", str(port)], url + "/healthz", tmp, procs), url


# --- load ---------------------------------------------------------------------------------------


@dataclass
class Run:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    total: int = 0  # every response received (CPU is divided by this)
    server_cpu_s: float | None = None  # the target's own process, when we started it
    client_cpu_s: float = 0.0
    writer_cpu_s: float = 0.0  # a call-log writer process the target started (bench/calllog.py)
    wait_s: float = 0.0  # time the target's threads waited for a CPU during the run (bench/calllog.py)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


WRK_SCRIPT = """
-- POST one body; after {limit} responses stop sending and print the time from the first response
-- to the last (LuaJIT ffi clock), so throughput excludes wrk start-up and connecting.
local ffi = require("ffi")
ffi.cdef[[
typedef struct {{ long tv_sec; long tv_nsec; }} bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
local limit = {limit}
local count = 0
local bad = 0
local first = 0
function response(status, headers, body)
  count = count + 1
  if status ~= 200 then bad = bad + 1 end
  if count == 1 then first = now() end
  if count == limit then
    wrk.thread:stop()
    io.write(string.format("STOP %d %.6f %d\\n", count, now() - first, bad))
    io.stdout:flush()
  end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %d %d %d %d\\n", latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, summary.requests))
end
"""


class Wrk:
    name = "wrk (1 thread, Lua POST script)"

    def __init__(self, tmp: Path, body: bytes, key: str) -> None:
        self.tmp = tmp
        self.body = body.decode()
        self.key = key
        self._scripts: dict[int, Path] = {}

    def _script(self, limit: int) -> Path:
        if limit not in self._scripts:
            path = self.tmp / f"post-{limit}.lua"
            path.write_text(WRK_SCRIPT.format(body=self.body, key=self.key, limit=limit))
            self._scripts[limit] = path
        return self._scripts[limit]

    def run(self, url: str, n: int, concurrency: int) -> Run:
        # wrk runs for a duration; the script says when n responses are in and we end it with
        # SIGINT (wrk then prints its latency distribution). -d is only a backstop.
        argv = [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            "-d120s",
            "--timeout",
            "10s",
            "-s",
            str(self._script(n)),
            url,
        ]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        stop = bench = None
        output = []
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                output.append(line)
                if line.startswith("STOP ") and stop is None:
                    stop = line.split()
                    proc.send_signal(signal.SIGINT)
                elif line.startswith("BENCH "):
                    bench = line.split()
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if stop is None or bench is None:
            raise SystemExit(f"wrk did not complete {n} requests to {url}:\n{''.join(output)}")
        count, seconds, bad = int(stop[1]), float(stop[2]), int(stop[3])
        p50_us, p99_us, io_errors = int(bench[1]), int(bench[2]), int(bench[3])
        # count - 1 intervals between the first response and the count-th one
        return Run(count - 1, seconds, p50_us / 1e3, p99_us / 1e3, bad + io_errors, int(bench[4]))


class PyClient:
    """Fallback: an aiohttp client in its own process (this file with ``--loadgen``)."""

    name = "aiohttp client in a separate process (wrk not found)"

    def __init__(self, body: bytes, key: str) -> None:
        self.body = body
        self.key = key

    def run(self, url: str, n: int, concurrency: int) -> Run:
        argv = [sys.executable, __file__, "--loadgen", url, str(n), str(concurrency), self.key]
        out = subprocess.run(argv, input=self.body, capture_output=True, timeout=300)
        if out.returncode != 0:
            raise SystemExit(f"load generator failed:\n{out.stderr.decode(errors='replace')}")
        r = json.loads(out.stdout)
        return Run(r["requests"], r["seconds"], r["p50_ms"], r["p99_ms"], r["errors"], r["requests"])


def loadgen_main(url: str, n: int, concurrency: int, key: str) -> None:
    import asyncio

    import aiohttp

    body = sys.stdin.buffer.read()
    latencies: list[float] = []
    errors = 0
    left = n

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal left, errors
        headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
        while left > 0:
            left -= 1
            t = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
            except (aiohttp.ClientError, OSError):
                errors += 1
            latencies.append(time.perf_counter() - t)

    async def main() -> float:
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent",)) as session:
            t = time.perf_counter()
            await asyncio.gather(*(worker(session) for _ in range(concurrency)))
            return time.perf_counter() - t

    try:
        import uvloop

        seconds = uvloop.run(main())
    except ImportError:
        seconds = asyncio.run(main())
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3  # noqa: E731
    print(
        json.dumps(
            {
                "requests": len(latencies),
                "seconds": seconds,
                "p50_ms": pick(0.5),
                "p99_ms": pick(0.99),
                "errors": errors,
            }
        )
    )


def children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)  # waited-for children only: the load generator
    return r.ru_utime + r.ru_stime


# --- the run ------------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    url: str  # the chat-completions URL
    proc: Proc | None = None
    runs: dict[int, list[Run]] = field(default_factory=dict)

    def measure(self, gen: Wrk | PyClient, n: int, concurrency: int, record: bool = True) -> Run:
        cpu0 = self.proc.cpu_s() if self.proc else None
        client0 = children_cpu_s()
        run = gen.run(self.url, n, concurrency)
        run.client_cpu_s = children_cpu_s() - client0
        if self.proc is not None and cpu0 is not None:
            run.server_cpu_s = self.proc.cpu_s() - cpu0
        if record:
            self.runs.setdefault(concurrency, []).append(run)
        return run


def check(target: Target, body: bytes, key: str) -> None:
    """One request by hand: the target must answer 200 with a chat completion."""
    req = urllib.request.Request(
        target.url,
        data=body,
        headers={"content-type": "application/json", "authorization": f"Bearer {key}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            data = json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        tail = f"\n{target.proc.log_tail()}" if target.proc else ""
        raise SystemExit(
            f"{target.name} ({target.url}) does not answer the benchmark request: {exc}{tail}"
        ) from None
    if not data.get("choices"):
        raise SystemExit(f"{target.name} answered without choices: {data}")


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(targets: list[Target], concurrencies: list[int], upstream: str, gen_name: str) -> None:
    direct, gateway, *extra = targets
    print()
    print(f"upstream: {upstream}; load generator: {gen_name}")
    print(f"machine: {os.cpu_count()} cores, {_cpu_model()}; Python {sys.version.split()[0]}")
    print("medians over rounds; ratio and added latency are paired per round (same run)")
    print()
    header = f"{'target':<14}{'conc':>5}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'srv CPU/req':>13}{'gen CPU/req':>13}{'errors':>8}"
    print(header)
    print("-" * len(header))
    for c in concurrencies:
        for t in targets:
            runs = t.runs.get(c, [])
            reqs = sum(r.total for r in runs)
            cpu = [r.server_cpu_s for r in runs if r.server_cpu_s is not None]
            srv = f"{sum(cpu) / reqs * 1e6:.0f} us" if cpu and reqs else "-"
            gen = f"{sum(r.client_cpu_s for r in runs) / reqs * 1e6:.0f} us" if reqs else "-"
            print(
                f"{t.name:<14}{c:>5}{median([r.rps for r in runs]):>10.0f}"
                f"{median([r.p50_ms for r in runs]):>9.3f}{median([r.p99_ms for r in runs]):>9.3f}"
                f"{srv:>13}{gen:>13}{sum(r.errors for r in runs):>8}"
            )
    print()
    for t in [gateway, *extra]:
        for c in concurrencies:
            pairs = list(zip(direct.runs.get(c, []), t.runs.get(c, []), strict=False))
            ratio = median([g.rps / d.rps for d, g in pairs if d.rps])
            add50 = median([g.p50_ms - d.p50_ms for d, g in pairs])
            add99 = median([g.p99_ms - d.p99_ms for d, g in pairs])
            print(
                f"{t.name} vs direct, c={c}: throughput ratio {ratio:.3f} "
                f"({median([g.rps for _, g in pairs]):.0f} vs {median([d.rps for d, _ in pairs]):.0f} req/s); "
                f"added latency p50 {add50:+.3f} ms, p99 {add99:+.3f} ms"
            )
    runs = [r for c in concurrencies for r in gateway.runs.get(c, [])]
    reqs = sum(r.total for r in runs)
    if reqs:
        cpu = sum(r.server_cpu_s or 0 for r in runs)
        print(
            f"gateway CPU per request (all gateway rounds): {cpu / reqs * 1e6:.0f} us "
            f"=> at most ~{reqs / cpu:.0f} req/s per core"
            if cpu
            else "gateway CPU: not measurable"
        )
    top = max(concurrencies)
    d_rps = median([r.rps for r in direct.runs.get(top, [])])
    g_rps = median([r.rps for r in gateway.runs.get(top, [])])
    if g_rps:
        print(
            f"upstream direct throughput at c={top}: {d_rps:.0f} req/s = {d_rps / g_rps:.1f}x the gateway's"
        )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


@contextlib.contextmanager
def bench_run(prefix: str, keep_logs: bool) -> Iterator[tuple[Path, list[Proc]]]:
    """A temp dir for one run and the list of processes it starts: they are stopped and the dir
    removed at the end, on errors and on Ctrl-C (``keep_logs`` keeps the dir)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    procs: list[Proc] = []
    try:
        yield tmp, procs
    except KeyboardInterrupt:
        print("\ninterrupted; stopping the servers", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        for p in reversed(procs):
            p.stop()
        if keep_logs:
            print(f"logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--loadgen":
        url, n, c, key = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
        loadgen_main(url, n, c, key)
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--upstream",
        choices=["nginx", "simulator"],
        default=None,
        help="what the gateway fronts (default nginx when installed: ~10 us of CPU a request, it stays "
        "20x above the gateway; the Python simulator costs ~60 us a request on the same 2 cores)",
    )
    ap.add_argument("--rounds", type=int, default=6, help="alternating rounds per concurrency (default 6)")
    ap.add_argument("--requests-c1", type=int, default=3000, help="requests per run at concurrency 1")
    ap.add_argument("--requests-c32", type=int, default=10000, help="requests per run at concurrency 32")
    ap.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 32], help="concurrency levels (default: 1 32)"
    )
    ap.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="NAME=BASE_URL[@PID]",
        help="another OpenAI-compatible base URL (e.g. http://127.0.0.1:4001/v1) measured in the same "
        "rounds; POSTs to BASE_URL/chat/completions (repeatable); with @PID its CPU is measured too",
    )
    ap.add_argument(
        "--passthrough",
        action="store_true",
        help="also measure bench/passthrough.py (uvicorn + aiohttp + orjson, no gateway work): the floor",
    )
    ap.add_argument(
        "--upstream-port",
        type=int,
        default=0,
        help="port for the upstream (default: a free one), "
        "so peers given with --target can be pointed at it beforehand",
    )
    ap.add_argument("--model", default=MODEL, help=f"the model name in the request body (default {MODEL})")
    ap.add_argument("--api-key", default="sk-bench", help="sent as a Bearer token to every target")
    ap.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto")
    ap.add_argument("--keep-logs", action="store_true", help="keep the temp dir with the servers' logs")
    args = ap.parse_args()

    body = json.dumps({**BODY, "model": args.model}, separators=(",", ":")).encode()
    extra = []
    for spec in args.target:
        name, sep, base = spec.partition("=")
        pid = None
        head, at, tail = base.rpartition("@")
        if at and tail.isdigit():
            base, pid = head, int(tail)
        if not sep or not base.startswith("http"):
            ap.error(f"--target wants NAME=BASE_URL[@PID], got {spec!r}")
        proc = Proc(name, _Foreign(pid), Path("/dev/null")) if pid else None
        extra.append(Target(name, base.rstrip("/") + "/chat/completions", proc))

    with bench_run("llmrelay-bench-", args.keep_logs) as (tmp, procs):
        if args.generator == "python" or (args.generator == "auto" and shutil.which("wrk") is None):
            if args.generator == "auto":
                print(
                    "wrk not found: apt-get install -y wrk (a C load generator, far cheaper on CPU); "
                    "falling back to an aiohttp client, which takes more of the CPU the servers need",
                    file=sys.stderr,
                )
            gen: Wrk | PyClient = PyClient(body, args.api_key)
        else:
            if shutil.which("wrk") is None:
                raise SystemExit("wrk is not installed: apt-get install -y wrk")
            gen = Wrk(tmp, body, args.api_key)

        port = args.upstream_port or free_port()
        if args.upstream is None:
            args.upstream = "nginx" if _nginx() else "simulator"
            if args.upstream == "simulator":
                print(
                    "nginx not found (apt-get install -y nginx): using the Python simulator as the "
                    "upstream; it shares the CPU with the gateway, so the gateway's figures are lower",
                    file=sys.stderr,
                )
        if args.upstream == "nginx":
            up_proc, up_url = start_nginx(tmp, procs, port)
            upstream = "nginx (1 worker, fixed chat-completion JSON)"
        else:
            up_proc, up_url = start_simulator(tmp, procs, port)
            upstream = "llmrelay simulate (fixed_reply mode)"
        gw_proc, gw_url = start_gateway(up_url, tmp, procs)
        targets = [
            Target("direct", up_url + "/v1/chat/completions", up_proc),
            Target("gateway", gw_url + "/v1/chat/completions", gw_proc),
        ]
        if args.passthrough:
            pt_proc, pt_url = start_passthrough(up_url, tmp, procs)
            targets.append(Target("passthrough", pt_url + "/v1/chat/completions", pt_proc))
        targets += extra
        for t in targets:
            check(t, body, args.api_key)

        counts = {1: args.requests_c1, 32: args.requests_c32}
        started = time.monotonic()
        for c in args.concurrency:
            n = counts.get(c, args.requests_c32)
            for t in targets:  # warm up: connections, pools, caches; not recorded
                t.measure(gen, max(n // 5, 50), c, record=False)
            for i in range(args.rounds):
                line = []
                for t in targets:
                    run = t.measure(gen, n, c)
                    line.append(f"{t.name} {run.rps:.0f}/s p50 {run.p50_ms:.3f}ms")
                print(f"c={c} round {i + 1}/{args.rounds}: " + ", ".join(line), flush=True)
        print(f"(load phase took {time.monotonic() - started:.0f}s)")
        report(targets, args.concurrency, upstream, gen.name)


if __name__ == "__main__":
    main()
