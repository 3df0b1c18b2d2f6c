"""``llmrelay logs``: recent calls from the call log, as a table or JSON lines."""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime

import orjson

from ..observability.records import CallRecord
from ..tables import table
from ._args import at_least, call_status
from ._store import parse_since, store_from


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("logs", help="show recent calls from the call log")
    p.add_argument("--config", help="the gateway's config file (to find its call log)")
    p.add_argument("-n", "--limit", type=at_least(1), default=20, help="how many calls (default 20)")
    p.add_argument("--model", help="only calls answered by or asked of this model")
    p.add_argument("--key", help="only calls made with this API key id (key_...)")
    p.add_argument(
        "--status",
        type=call_status,
        help="success, error (any error), error:UpstreamTimeout, filtered or cache_hit",
    )
    p.add_argument("--since", help="30m, 2h, 7d or an ISO date")
    p.add_argument("--json", action="store_true", help="one JSON object per line, attempts included")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new calls (Ctrl-C to stop)")


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    store = store_from(args.config)
    await store.open()
    try:
        since = parse_since(args.since)
        records = await _query(store, args, since)
        print(_render(list(reversed(records)), args.json), flush=True)
        seen = {r.id for r in records}
        while args.follow:
            await asyncio.sleep(1)
            newest = max((r.started_at for r in records), default=since or time.time() - 60)
            records = [r for r in await _query(store, args, newest) if r.id not in seen]
            if records:
                seen.update(r.id for r in records)
                print(_render(list(reversed(records)), args.json, header=False), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        await store.close()
    return 0


async def _query(store, args: argparse.Namespace, since: float | None) -> list[CallRecord]:
    return await store.recent(
        limit=args.limit, since=since, model=args.model, api_key_id=args.key, status=args.status
    )


def _render(records: list[CallRecord], as_json: bool, header: bool = True) -> str:
    if as_json:
        return "\n".join(orjson.dumps(r.to_dict()).decode() for r in records)
    rows = [
        [
            datetime.fromtimestamp(r.started_at, UTC).strftime("%Y-%m-%d %H:%M:%S"),
            r.id,
            r.requested_model + (f" -> {r.model}" if r.model and r.model != r.requested_model else ""),
            r.status,
            f"{r.prompt_tokens}/{r.completion_tokens}",
            f"${r.cost_usd}" if r.cost_usd is not None else "-",
            f"{r.latency_ms:.0f}ms",
            str(len(r.attempts)),
        ]
        for r in records
    ]
    if not rows:
        return "(no calls)" if header else ""
    text = table(rows, ["time (UTC)", "id", "model", "status", "tokens in/out", "cost", "latency", "tries"])
    return text if header else "\n".join(text.splitlines()[2:])
