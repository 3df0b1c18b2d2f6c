"""What a client sees when the primary upstream fails half the time: the chaos benchmark.

Starts ``llmrelay serve --config examples/chaos.yaml`` (its embedded simulator is the upstream) on a
free loopback port, then sends the same load twice at a fixed concurrency: to ``chaotic`` (a
simulated OpenAI-format primary failing ~50% of the time with 429, 500, 503, hang, drop, truncate,
malformed and stall faults, falling back to ``backup``, a healthy Anthropic-format upstream), then
to ``steady`` (the same primary without faults). A share of the requests stream; each stream is read
to its end and classified: complete (``data: [DONE]``), ended by an error event, or cut.

It prints the client-visible failures (non-2xx, error events, cut streams, wrong answers) by
cause, latency p50/p99 for both models (and time to first token for streams), attempts per request
(``x-llmrelay-attempts``), the share answered by the fallback (``x-llmrelay-model``), how long the
primary's circuit breaker spent in each state (polled from ``GET /admin/breakers``) and its state
at the end.

    .venv/bin/python bench/chaos.py                  # ~45 s: 2,000 requests per model, c=24
    .venv/bin/python bench/chaos.py --no-breaker     # the same with the breaker effectively off
    .venv/bin/python bench/chaos.py --requests 5000 --concurrency 32 --stream-share 0.5

Loopback only; a hard time cap (``--cap-s``, default 180 s) bounds the whole run; the gateway is a
subprocess in its own session, stopped on exit, on errors, on Ctrl-C and at the cap. See
bench/README.md ("Chaos") for the figures and what they mean.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import overhead  # noqa: E402  (bench/ is not a package: its scripts share code this way)

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "chaos.yaml"
# About 30 tokens of echo ("You said: ..."), so a stream has ~10 chunks and a cut lands mid-answer.
PROMPT = (
    "Summarise in two sentences why a gateway should retry a failed call on another provider, "
    "and when it must not."
)
EXPECTED = "You said: " + PROMPT
CLIENT_TIMEOUT_S = 30.0  # well above the config's total deadline (10 s): hitting it is a gateway bug


class CapReached(Exception):
    """The hard time cap (``--cap-s``) passed."""


# --- the gateway --------------------------------------------------------------------------------


@dataclass
class Gateway:
    """``llmrelay serve`` started with bench/overhead.py's process machinery."""

    proc: overhead.Proc
    url: str

    def cpu_s(self) -> float:
        """utime + stime of the gateway (and its embedded simulator: the same process), seconds."""
        return self.proc.cpu_s()

    def log(self) -> str:
        try:
            return self.proc.log_path.read_text(errors="replace")
        except OSError:
            return ""


def start_gateway(config: Path, tmp: Path, procs: list[overhead.Proc]) -> Gateway:
    port = overhead.free_port()
    url = f"http://127.0.0.1:{port}"
    argv = overhead.llmrelay("serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port))
    return Gateway(overhead.start("gateway", argv, url + "/healthz", tmp, procs), url)


def config_without_breaker(config: Path, tmp: Path) -> Path:
    """A copy of ``config`` whose breaker never trips (thresholds no run can reach)."""
    raw = yaml.safe_load(config.read_text())
    raw["breaker"] = {**(raw.get("breaker") or {}), "consecutive_failures": 10**9, "min_requests": 10**9}
    path = tmp / "chaos-no-breaker.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# --- one request ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    stream: bool
    cause: str | None = None  # None = success; else what the client saw
    latency_s: float = 0.0  # request sent -> answer (or stream) read to its end
    ttft_s: float | None = None  # streams: request sent -> first content
    attempts: int | None = None
    model: str | None = None
    at_s: float = 0.0  # when it was sent, seconds into its phase


def _error_cause(body: Any) -> str:
    """A short, stable name for an error object from the gateway (code and what happened)."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return "unrecognised error body"
    message = str(error.get("message", ""))
    what = next(
        (
            label
            for word, label in (
                ("stalled", "stall"),
                ("truncated", "truncated"),
                ("not JSON", "malformed event"),
                ("dropped", "dropped"),
                ("deadline", "deadline"),
                ("circuit open", "circuit open"),
            )
            if word in message
        ),
        message[:60],
    )
    return f"{error.get('code') or error.get('type')}: {what}"


async def one(session: aiohttp.ClientSession, url: str, model: str, stream: bool, t0: float = 0.0) -> Outcome:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": PROMPT}]}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    out = Outcome(stream, at_s=started - t0)
    try:
        async with session.post(
            url, data=orjson.dumps(body), headers={"content-type": "application/json"}
        ) as r:
            raw = r.headers.get("x-llmrelay-attempts")
            out.model = r.headers.get("x-llmrelay-model")
            out.attempts = None if raw is None else int(raw)
            if r.status != 200:
                data = await r.read()
                with contextlib.suppress(orjson.JSONDecodeError):
                    out.cause = f"HTTP {r.status} " + _error_cause(orjson.loads(data))
                out.cause = out.cause or f"HTTP {r.status} (body not JSON)"
            elif not stream:
                data = await r.read()
                try:
                    text = orjson.loads(data)["choices"][0]["message"]["content"]
                except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
                    out.cause = "200 with a body that is not a chat completion"
                else:
                    out.cause = None if text == EXPECTED else "200 with a wrong answer"
            else:
                out.cause = await _read_stream(r, out, started)
    except TimeoutError:
        out.cause = f"no answer within {CLIENT_TIMEOUT_S:g} s (client timeout)"
    except aiohttp.ClientPayloadError:
        out.cause = "stream cut: connection closed mid-body"
    except aiohttp.ClientError as exc:
        out.cause = f"connection error: {type(exc).__name__}"
    out.latency_s = time.perf_counter() - started
    return out


async def _read_stream(r: aiohttp.ClientResponse, out: Outcome, started: float) -> str | None:
    """Read an SSE stream to its end: None if complete and right, else why not."""
    parts: list[str] = []
    async for line in r.content:
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            return None if "".join(parts) == EXPECTED else "stream complete with a wrong answer"
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return "stream event that is not JSON"
        if "error" in event:
            where = "after first tokens" if parts else "before any content"
            return f"error event {where}: " + _error_cause(event)
        for choice in event.get("choices") or ():
            text = (choice.get("delta") or {}).get("content")
            if text:
                if out.ttft_s is None:
                    out.ttft_s = time.perf_counter() - started
                parts.append(text)
    return "stream cut: ended without [DONE] or an error event"


# --- a run ----------------------------------------------------------------------------------------


@dataclass
class Phase:
    model: str
    outcomes: list[Outcome] = field(default_factory=list)
    planned: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    breaker_states: Counter[str] = field(default_factory=Counter)  # polls of the primary's state
    breakers_after: list[dict[str, Any]] = field(default_factory=list)
    capped: bool = False


async def breakers(session: aiohttp.ClientSession, base: str) -> list[dict[str, Any]]:
    async with session.get(base + "/admin/breakers") as r:
        return (await r.json())["breakers"]


async def poll_breaker(session: aiohttp.ClientSession, base: str, key: str, states: Counter[str]) -> None:
    """The primary's breaker state every 100 ms (a deployment not seen yet counts as closed)."""
    while True:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            rows = await breakers(session, base)
            states[next((b["state"] for b in rows if b["key"] == key), "closed")] += 1
        await asyncio.sleep(0.1)


async def run_phase(
    gateway: Gateway,
    model: str,
    plan: list[bool],
    concurrency: int,
    deadline: float,
    primary_key: str | None,
) -> Phase:
    phase = Phase(model, planned=len(plan))
    url = gateway.url + "/v1/chat/completions"
    jobs = iter(plan)
    connector = aiohttp.TCPConnector(limit=concurrency + 2)
    timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        t0 = time.perf_counter()

        async def worker() -> None:
            for stream in jobs:
                phase.outcomes.append(await one(session, url, model, stream, t0))

        poller = None
        if primary_key is not None:
            poller = asyncio.ensure_future(
                poll_breaker(session, gateway.url, primary_key, phase.breaker_states)
            )
        cpu0 = gateway.cpu_s()
        try:
            async with asyncio.timeout_at(asyncio.get_running_loop().time() + (deadline - time.monotonic())):
                await asyncio.gather(*(worker() for _ in range(concurrency)))
        except TimeoutError:
            phase.capped = True
        finally:
            phase.wall_s = time.perf_counter() - t0
            phase.cpu_s = gateway.cpu_s() - cpu0
            if poller is not None:
                poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller
        phase.breakers_after = await breakers(session, gateway.url)
    return phase


async def check(gateway: Gateway, model: str) -> None:
    """One plain and one streamed request to the fault-free model: both answer at the first attempt
    and say so (``x-llmrelay-attempts: 1``), or the figures below would not mean what they say."""
    async with aiohttp.ClientSession() as session:
        for stream in (False, True):
            out = await one(session, gateway.url + "/v1/chat/completions", model, stream)
            if out.cause is not None:
                raise SystemExit(
                    f"a {'streamed' if stream else 'plain'} request to {model!r} failed: {out.cause}"
                )
            if out.attempts != 1 or out.model != model:
                print(
                    f"warning: a {'streamed' if stream else 'plain'} answer from {model!r} says "
                    f"x-llmrelay-attempts {out.attempts}, x-llmrelay-model {out.model} (expected 1, {model})",
                    file=sys.stderr,
                )


# --- the report -----------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def ms(values: list[float], q: float) -> str:
    return f"{pct(values, q) * 1000:8.0f}" if values else "       -"


def report(phases: list[Phase], fallback: str, breaker_note: str) -> None:
    chaotic = phases[0]
    print()
    for p in phases:
        n, streams = len(p.outcomes), sum(o.stream for o in p.outcomes)
        capped = f"  CAPPED: {p.planned - n} requests not sent or not finished" if p.capped else ""
        print(
            f"{p.model:>8}: {n} requests ({streams} streamed) in {p.wall_s:.1f} s = {n / p.wall_s:.0f} req/s; "
            f"gateway+simulator CPU {p.cpu_s / max(n, 1) * 1e6:.0f} us/request{capped}"
        )

    print("\nClient-visible failures (goal: 0):")
    for p in phases:
        failed = [o for o in p.outcomes if o.cause is not None]
        share = len(failed) / max(len(p.outcomes), 1)
        streams = [o for o in p.outcomes if o.stream]
        bad_streams = sum(o.cause is not None for o in streams)
        print(
            f"  {p.model}: {len(failed)} of {len(p.outcomes)} ({share:.2%}); "
            f"non-streamed {len(failed) - bad_streams}, streamed {bad_streams} of {len(streams)}"
        )
        for cause, count in Counter(o.cause for o in failed).most_common():
            print(f"    {count:5d}  {cause}")
        if failed:
            times = sorted(o.at_s for o in failed)
            shown = ", ".join(f"{t:.1f}" for t in times[:12]) + (", ..." if len(times) > 12 else "")
            print(f"           sent at (s into the run): {shown}")

    print("\nLatency, ms            p50      p90      p99      max")
    for p in phases:
        for label, values in (
            ("non-streamed", [o.latency_s for o in p.outcomes if not o.stream and o.cause is None]),
            ("stream, whole", [o.latency_s for o in p.outcomes if o.stream and o.cause is None]),
            ("stream, TTFT", [o.ttft_s for o in p.outcomes if o.stream and o.ttft_s is not None]),
        ):
            row = " ".join(ms(values, q) for q in (50, 90, 99, 100))
            print(f"  {p.model:>8} {label:<14}{row}")
    print("  (successful requests; TTFT of every stream that got content)")

    print("\nAttempts per request (x-llmrelay-attempts):")
    for p in phases:
        counts = Counter(o.attempts for o in p.outcomes)
        known = [o.attempts for o in p.outcomes if o.attempts is not None]
        mean = sum(known) / len(known) if known else float("nan")
        dist = ", ".join(
            f"{k if k is not None else 'none'}: {v} ({v / len(p.outcomes):.1%})"
            for k, v in sorted(counts.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))
        )
        print(f"  {p.model:>8}: mean {mean:.2f}; {dist}")

    answered = [o for o in chaotic.outcomes if o.cause is None]
    by_model = Counter(o.model for o in answered)
    print(
        f"\nAnswered by the fallback ({fallback}): {by_model[fallback]} of {len(answered)} successful "
        f"{chaotic.model} requests ({by_model[fallback] / max(len(answered), 1):.1%}); "
        + ", ".join(f"{k}: {v}" for k, v in by_model.most_common())
    )

    polls = sum(chaotic.breaker_states.values())
    if polls:
        shares = ", ".join(f"{s} {c / polls:.0%}" for s, c in chaotic.breaker_states.most_common())
        print(f"Primary's breaker during the {chaotic.model} run ({breaker_note}; {polls} polls): {shares}")
    print(f"Breakers after the {chaotic.model} run (GET /admin/breakers):")
    for b in chaotic.breakers_after:
        print(
            f"  {b['key']:<36} {b['state']:<9} window {b['window_failures']}/{b['window_requests']} "
            f"failed, {b['consecutive_failures']} in a row, retry in {b['retry_in_s']} s"
        )


# --- main -----------------------------------------------------------------------------------------


async def bench(args: argparse.Namespace, gateway: Gateway, deadline: float, breaker_note: str) -> bool:
    """Both phases and the report; True if the time cap cut a phase short."""
    rng = random.Random(args.seed)
    plan = [rng.random() < args.stream_share for _ in range(args.requests)]  # the same for both models
    await check(gateway, args.steady)
    settings = yaml.safe_load(Path(args.config).read_text())
    primary = next(m for m in settings["models"] if m["name"] == args.chaotic)
    first = (primary.get("deployments") or [primary])[0]  # the breaker polled: its first deployment
    primary_key = f"{first['provider']}/{first.get('upstream') or primary.get('upstream') or primary['name']}"
    phases = []
    for i, model in enumerate((args.chaotic, args.steady)):
        left = deadline - time.monotonic()
        phase_deadline = time.monotonic() + (left * 0.6 if i == 0 else left - 5)
        print(f"{model}: {len(plan)} requests at concurrency {args.concurrency} ...", flush=True)
        phase = await run_phase(
            gateway,
            model,
            plan,
            args.concurrency,
            phase_deadline,
            primary_key if i == 0 else None,
        )
        phases.append(phase)
    report(phases, args.fallback, breaker_note)
    return any(p.capped for p in phases)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(CONFIG), help="gateway config (default examples/chaos.yaml)")
    ap.add_argument("--requests", type=int, default=2000, help="requests per model (default 2000)")
    ap.add_argument("--concurrency", type=int, default=24, help="requests in flight (default 24)")
    ap.add_argument("--stream-share", type=float, default=0.3, help="share of streamed requests (0.3)")
    ap.add_argument(
        "--seed", type=int, default=1, help="which requests stream (the faults' seed is in the config)"
    )
    ap.add_argument("--no-breaker", action="store_true", help="raise the breaker's thresholds out of reach")
    ap.add_argument("--cap-s", type=float, default=180, help="hard cap on the whole run, seconds (180)")
    ap.add_argument("--chaotic", default="chaotic", help="the flaky model (default chaotic)")
    ap.add_argument("--steady", default="steady", help="its fault-free twin (default steady)")
    ap.add_argument("--fallback", default="backup", help="the chaotic model's fallback (default backup)")
    ap.add_argument("--keep-logs", action="store_true", help="keep the temp dir with the gateway's log")
    args = ap.parse_args()

    started = time.monotonic()
    deadline = started + args.cap_s

    def on_signal(signum: int, frame: Any) -> None:
        raise CapReached() if signum == signal.SIGALRM else KeyboardInterrupt()

    signal.signal(signal.SIGALRM, on_signal)  # the last resort if the asyncio caps do not hold
    signal.signal(signal.SIGTERM, on_signal)
    signal.alarm(int(args.cap_s) + 1)
    tmp = Path(tempfile.mkdtemp(prefix="llmrelay-chaos-"))
    holder: list[overhead.Proc] = []
    status = 0
    try:
        config = Path(args.config)
        note = "as configured"
        if args.no_breaker:
            config, note = config_without_breaker(config, tmp), "breaker effectively off"
        args.config = str(config)
        gateway = start_gateway(config, tmp, holder)
        print(
            f"gateway {gateway.url} (pid {gateway.proc.pid}), config {args.config} ({note}); "
            f"{args.stream_share:.0%} of requests streamed",
            flush=True,
        )
        if asyncio.run(bench(args, gateway, deadline, note)):
            status = 2
        log = gateway.log()
        problems = [line for line in log.splitlines() if "Traceback" in line or " ERROR " in line]
        print(f"\nGateway log: {len(problems)} error lines" + (":" if problems else ""))
        for line in problems[:10]:
            print("  " + line)
        print(f"(whole run {time.monotonic() - started:.0f} s)")
    except CapReached:
        print(f"\nthe hard cap of {args.cap_s:g} s passed; stopping", file=sys.stderr)
        status = 2
    except KeyboardInterrupt:
        print("\ninterrupted; stopping the gateway", file=sys.stderr)
        status = 130
    finally:
        signal.alarm(0)
        for g in holder:
            g.stop()
        if args.keep_logs:
            print(f"logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(status)


if __name__ == "__main__":
    main()
