"""``llmrelay costs``: spend and traffic from the call log, grouped."""

from __future__ import annotations

import argparse
import asyncio
from decimal import Decimal

from ..tables import table
from ._store import parse_since, store_from


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("costs", help="spend, tokens and latency from the call log, grouped")
    p.add_argument("--config", help="the gateway's config file (to find its call log)")
    p.add_argument(
        "--by",
        choices=["model", "key", "user", "day", "status", "variant"],
        default="model",
        help="variant: an experiment's arms, as experiment/variant (docs/routing.md)",
    )
    p.add_argument("--since", help="30m, 2h, 7d or an ISO date (default: all time)")


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    store = store_from(args.config)
    await store.open()
    try:
        rows = await store.totals(by=args.by, since=parse_since(args.since))
    finally:
        await store.close()
    if not rows:
        print("(no calls)")
        return 0
    total = sum((Decimal(r["cost_usd"]) for r in rows), Decimal(0))
    saved = sum((Decimal(r["saved_usd"]) for r in rows), Decimal(0))
    body = [
        [
            str(r["group"] if r["group"] is not None else "-"),
            str(r["requests"]),
            str(r["errors"]),
            f"{r['prompt_tokens']:,}",
            f"{r['completion_tokens']:,}",
            f"${Decimal(r['cost_usd']):.6f}",
            f"{r['latency_p50_ms']:.0f}" if r["latency_p50_ms"] is not None else "-",
            f"{r['latency_p95_ms']:.0f}" if r["latency_p95_ms"] is not None else "-",
            f"${Decimal(r['saved_usd']):.6f}",
        ]
        for r in rows
    ]
    header = [args.by, "requests", "errors", "tokens in", "tokens out", "cost", "p50 ms", "p95 ms"]
    print(table(body, [*header, "routing saved"]))
    print(f"\ntotal ${total:.6f} over {sum(r['requests'] for r in rows)} requests")
    # Against each routed call's frontier model at the same usage (docs/routing.md, "Savings").
    print(f"routing saved ${saved:.6f}")
    return 0
