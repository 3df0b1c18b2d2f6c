"""10,000 batch requests through llmrelay's own workers, end to end over loopback.

A gateway (``llmrelay serve``, a subprocess) in front of the simulator (another); this process is the
client, with the official ``openai`` SDK, as a user's would be. It prints:

1. **local batch**: requests per second from ``batches.create`` to ``completed`` (each request a
   queue job run through the pipeline by the gateway's workers), and whether every ``custom_id``
   came back exactly once (output + error files): none lost, none duplicated;
2. **cost**: the batch's cost, the same requests sent synchronously (``/v1/chat/completions``,
   ``--concurrency`` at a time), and the same requests as a batch forwarded to the (simulated)
   provider's batch API, priced at its discount.

    .venv/bin/python bench/jobs.py                        # ~1-2 min on 2 cores
    .venv/bin/python bench/jobs.py --items 2000 --workers 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import free_port, serve_config, start_process, stop_process  # noqa: E402

FINAL = ("completed", "failed", "expired", "cancelled")


def requests_file(model: str, n: int) -> bytes:
    return "".join(
        json.dumps(
            {
                "custom_id": f"ticket-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": model, "messages": [{"role": "user", "content": body(i)}]},
            }
        )
        + "\n"
        for i in range(n)
    ).encode()


def body(i: int) -> str:
    return f"Classify ticket {i}: the invoice for order {i * 7} was charged twice."


def run_batch(c: openai.OpenAI, model: str, n: int, deadline: float) -> tuple[object, float]:
    file = c.files.create(file=("tickets.jsonl", requests_file(model, n)), purpose="batch")
    started = time.perf_counter()
    batch = c.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h")
    while batch.status not in FINAL:
        if time.monotonic() > deadline:
            raise SystemExit(f"bench/jobs.py: batch {batch.id} still {batch.status} at the time limit")
        time.sleep(0.2)
        batch = c.batches.retrieve(batch.id)
    return batch, time.perf_counter() - started


def check_ids(c: openai.OpenAI, batch: object, n: int) -> tuple[int, int, int]:
    """(answered, lost, duplicated) custom ids across the output and error files."""
    seen: dict[str, int] = {}
    answered = 0
    for file_id in (batch.output_file_id, batch.error_file_id):  # type: ignore[attr-defined]
        if file_id:
            for line in c.files.content(file_id).text.splitlines():
                item = json.loads(line)
                seen[item["custom_id"]] = seen.get(item["custom_id"], 0) + 1
                answered += (item.get("response") or {}).get("status_code") == 200
    expected = {f"ticket-{i}" for i in range(n)}
    lost = len(expected - seen.keys())
    duplicated = sum(count - 1 for count in seen.values() if count > 1)
    return answered, lost, duplicated


async def sync_cost(url: str, model: str, n: int, concurrency: int) -> tuple[Decimal, float]:
    total = Decimal(0)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal total
        while not queue.empty():
            i = queue.get_nowait()
            r = await client.post(
                "/v1/chat/completions",
                json={"model": model, "messages": [{"role": "user", "content": body(i)}]},
            )
            r.raise_for_status()
            total += Decimal(r.headers["x-llmrelay-cost-usd"])

    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return total, time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=10_000)
    p.add_argument("--workers", type=int, default=32, help="worker concurrency of the model's tier")
    p.add_argument("--concurrency", type=int, default=32, help="synchronous requests at once")
    p.add_argument("--timeout", type=float, default=600, help="give up after this many seconds in all")
    args = p.parse_args()
    deadline = time.monotonic() + args.timeout
    tmp = Path(tempfile.mkdtemp(prefix="llmrelay-bench-jobs-"))
    (tmp / "sim.yaml").write_text(yaml.safe_dump({"batch_delay_s": 0.5}))
    sim = start_process(
        ["simulate", "--config", str(tmp / "sim.yaml")], free_port(), tmp, ready_path="/v1/models"
    )
    config = {
        "calllog": {"directory": str(tmp / "home")},
        "jobs": {"workers": {"small": args.workers}},
        "batch": {"poll_interval_s": 0.5, "models": {"tickets": "local", "tickets-fwd": "provider"}},
        "providers": {"oa": {"kind": "openai", "base_url": sim.url + "/v1"}},
        "models": [
            {"name": n, "provider": "oa", "upstream": "gpt-4o-mini", "tier": "small"}
            for n in ("tickets", "tickets-fwd")
        ],
    }
    gateway = serve_config(config, tmp)
    try:
        c = openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-bench", max_retries=0, timeout=120)
        batch, elapsed = run_batch(c, "tickets", args.items, deadline)
        answered, lost, duplicated = check_ids(c, batch, args.items)
        counts = batch.request_counts
        print(
            f"local batch: {args.items} requests, {args.workers} workers (tier small), status {batch.status}"
        )
        print(f"  {elapsed:.1f} s from create to completed: {args.items / elapsed:.0f} requests/s")
        print(f"  counts: completed {counts.completed}, failed {counts.failed}; answered lines {answered}")
        print(f"  custom_ids lost: {lost}, duplicated: {duplicated}")
        local_cost = Decimal(batch.model_extra["x_llmrelay"]["cost_usd"])
        sync, sync_s = asyncio.run(sync_cost(gateway.url, "tickets", args.items, args.concurrency))
        print(
            f"synchronous: {args.items} requests in {sync_s:.1f} s ({args.items / sync_s:.0f} requests/s, {args.concurrency} at a time)"
        )
        fwd, fwd_s = run_batch(c, "tickets-fwd", args.items, deadline)
        fwd_cost = Decimal(fwd.model_extra["x_llmrelay"]["cost_usd"])
        _, fwd_lost, fwd_dup = check_ids(c, fwd, args.items)
        print(
            f"forwarded batch (simulated provider): {fwd.status} in {fwd_s:.1f} s, lost {fwd_lost}, duplicated {fwd_dup}"
        )
        print("cost (USD):")
        print(f"  synchronous           {sync:.6f}  1.00")
        print(f"  local batch           {local_cost:.6f}  {local_cost / sync:.2f}")
        print(f"  forwarded batch       {fwd_cost:.6f}  {fwd_cost / sync:.2f}")
    finally:
        stop_process(gateway)
        stop_process(sim)


if __name__ == "__main__":
    main()
