"""``llmrelay worker``: job worker pools without a gateway (docs/jobs.md).

Runs the pools of the given tiers (and webhook deliveries) against the config's ``jobs.queue``
until SIGTERM or Ctrl-C; then its running jobs go back to the queue for another worker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from ..config import Settings
from ..relay import Relay

TIERS = ("small", "mid", "frontier", "open")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="run job worker pools (one per model tier) without a gateway")
    p.add_argument("--config", help="YAML config file (the gateway's: same models, same jobs.queue)")
    p.add_argument(
        "--tier", action="append", choices=TIERS, help="a tier to work for (repeatable; default: every tier)"
    )
    p.add_argument(
        "--concurrency", type=int, help="jobs at once per tier (default: jobs.workers in the config)"
    )
    p.add_argument("--no-webhooks", action="store_true", help="leave webhook deliveries to other workers")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])


def run(args: argparse.Namespace) -> int:
    if args.concurrency is not None and args.concurrency < 1:
        print("llmrelay: --concurrency must be at least 1", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = Settings.load(args.config)
    tiers = args.tier or list(TIERS)
    pools = {t: args.concurrency or settings.jobs.workers.get(t, 1) for t in tiers}  # type: ignore[call-overload]
    asyncio.run(_work(settings, pools, webhooks=not args.no_webhooks))
    return 0


async def _work(settings: Settings, pools: dict[str, int], *, webhooks: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Relay(settings) as relay:
        await relay.jobs.start_workers(pools, webhooks=webhooks)
        names = ", ".join(f"{t} x{n}" for t, n in pools.items()) + (", webhooks" if webhooks else "")
        print(f"llmrelay worker: {names} on {settings.jobs.queue}", file=sys.stderr, flush=True)
        with contextlib.suppress(asyncio.CancelledError):
            await stop.wait()
