"""What virtual keys and budgets cost per call, in-process (no HTTP, no upstream: only what they add).

1. Auth: ``KeyService.resolve`` of the master key, and of a virtual key found in the lookup cache
   (the common case: the store is read once per key per ``key_cache_ttl_s``).
2. A pipeline whose next stage returns a fixed answer, with and without the ``budget`` stage, CPU
   per call (median of rounds): no stage (the baseline), the stage with nothing to charge (the
   master key, no user budget), a virtual key with daily and monthly budgets plus an end-user
   budget, counted in-process, and the same counted in Redis (wall time per call too: two Redis
   round trips, the reserve script and the settle).

    .venv/bin/python bench/keys.py                 # ~20 s; the Redis rows need Redis at REDIS_URL
    .venv/bin/python bench/keys.py --rounds 3 --calls 2000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from llmrelay.catalog import Catalog
from llmrelay.config import BudgetSettings, KeyFields, Settings
from llmrelay.keys.budget import BudgetStage
from llmrelay.keys.service import KeyService
from llmrelay.keys.spend import Ledger, LocalCounters, RedisCounters
from llmrelay.keys.store import SqliteKeyStore
from llmrelay.pipeline import Call, compose
from llmrelay.types import ChatRequest, ChatResponse, Choice, Message, Usage

MASTER = "sk-bench-master-0000000000"
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
SETTINGS = {
    "server": {"master_key": MASTER},
    "providers": {"oa": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
    "models": [{"name": "gpt-4o-mini", "provider": "oa"}],
}
REQUEST = ChatRequest(
    model="gpt-4o-mini",
    messages=[
        Message(role="system", content="You are a helpful assistant for the billing team."),
        Message(role="user", content="Summarise last month's invoices in three bullet points."),
    ],
    max_tokens=200,
    user="alice",
)
ANSWER = ChatResponse(
    id="chatcmpl-bench",
    created=0,
    model="gpt-4o-mini",
    choices=[
        Choice(message=Message(role="assistant", content="- one\n- two\n- three"), finish_reason="stop")
    ],
    usage=Usage(prompt_tokens=40, completion_tokens=12),
)


async def measure(run: Any, calls: int, rounds: int) -> tuple[float, float]:
    """Median CPU and wall microseconds per call of ``await run()``."""
    cpu, wall = [], []
    for _ in range(rounds):
        c, w = time.process_time(), time.perf_counter()
        for _ in range(calls):
            await run()
        cpu.append((time.process_time() - c) / calls * 1e6)
        wall.append((time.perf_counter() - w) / calls * 1e6)
    return statistics.median(cpu), statistics.median(wall)


async def main(calls: int, rounds: int) -> None:
    settings = Settings.from_dict(SETTINGS)
    catalog = Catalog(settings)
    deployment = catalog.get("gpt-4o-mini").deployments[0]

    async def upstream(call: Call) -> ChatResponse:
        call.deployment = deployment
        return ANSWER

    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteKeyStore(Path(tmp) / "calls.db")
        keys = KeyService(settings, store)
        await keys.start()
        record, secret = await keys.create(
            KeyFields(owner="bench", budget_daily_usd=Decimal(10**6), budget_monthly_usd=Decimal(10**7))
        )
        key = await keys.resolve(secret)
        admin = await keys.resolve(MASTER)
        rows: list[tuple[str, float, float]] = []
        rows.append(("auth: master key", *await measure(lambda: keys.resolve(MASTER), calls, rounds)))
        rows.append(
            ("auth: virtual key (cached)", *await measure(lambda: keys.resolve(secret), calls, rounds))
        )

        def chain(stage: Any, who: Any) -> Any:
            handler = compose([stage] if stage is not None else [], upstream)

            def run() -> Any:
                call = Call(REQUEST)
                call.key = who
                return handler(call)

            return run

        budgets = BudgetSettings(user_daily_usd=Decimal(1000))
        local = BudgetStage(catalog, Ledger(store, LocalCounters()), budgets)
        await local.ledger.start()
        rows.append(("pipeline: no budget stage", *await measure(chain(None, key), calls, rounds)))
        nothing = BudgetStage(catalog, Ledger(store, LocalCounters()), BudgetSettings())
        rows.append(("budget stage, nothing to charge", *await measure(chain(nothing, admin), calls, rounds)))
        rows.append(
            ("budget stage, key + user, in-process", *await measure(chain(local, key), calls, rounds))
        )
        await local.ledger.aclose()
        try:
            counters = RedisCounters(REDIS_URL, f"llmrelay-bench:{os.getpid()}")
            await counters._redis.ping()
        except Exception as exc:
            print(f"(no Redis at {REDIS_URL}: {exc}; Redis row skipped)")
        else:
            shared = BudgetStage(catalog, Ledger(store, counters), budgets)
            await shared.ledger.start()
            rows.append(
                ("budget stage, key + user, Redis", *await measure(chain(shared, key), calls, rounds))
            )
            await counters._redis.delete(*await counters._redis.keys(f"{counters.prefix}:*"))
            await shared.ledger.aclose()
        await keys.aclose()

    base = rows[2][1]
    print(f"{'':40} {'CPU us/call':>12} {'wall us/call':>13} {'CPU vs no stage':>16}")
    for name, cpu, wall in rows:
        extra = f"{cpu - base:+.1f}" if name.startswith(("pipeline", "budget")) else ""
        print(f"{name:40} {cpu:12.1f} {wall:13.1f} {extra:>16}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.rounds))
