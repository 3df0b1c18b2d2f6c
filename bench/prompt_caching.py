"""Prompt caching: what automatic breakpoints cost per request, and what they save.

1. CPU: ``request_to_wire`` alone against ``request_to_wire`` + ``apply_prompt_caching("auto")``
   for a few prompt shapes, with the prefix seen before and for the first time ("cold": the
   tokenizer estimate, the only real work, is remembered for texts seen before).
2. Dollars: a multi-turn conversation with a long system prompt, sent through the in-process
   gateway (``Relay``) to the embedded simulator, once per mode (``passthrough`` marks nothing,
   ``auto``), priced by the catalog like every call (claude-sonnet-4-5 prices).

    .venv/bin/python bench/prompt_caching.py            # ~10 s
    .venv/bin/python bench/prompt_caching.py --turns 20 --system-tokens 8000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from decimal import Decimal
from typing import Any

from llmrelay import Relay
from llmrelay.providers import anthropic_format as af
from llmrelay.providers.anthropic_format import caching
from llmrelay.providers.openai_format import parse_request
from llmrelay.tokens import count_text

SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank. "  # 14 tokens


def _text(tokens: int) -> str:
    return SENTENCE * max(1, tokens // 14)


def _shapes() -> dict[str, dict[str, Any]]:
    turns = [{"role": r, "content": _text(60)} for r in ("user", "assistant") * 10]
    return {
        "short chat (1 message)": {"messages": [{"role": "user", "content": "hi"}]},
        "5k-token system + question": {
            "messages": [{"role": "system", "content": _text(5000)}, {"role": "user", "content": "q"}]
        },
        "2k system + 20 turns": {
            "messages": [{"role": "system", "content": _text(2000)}, *turns, {"role": "user", "content": "q"}]
        },
        "100k-token document + question": {
            "messages": [
                {"role": "user", "content": _text(100_000)},
                {"role": "assistant", "content": "Read."},
                {"role": "user", "content": "q"},
            ]
        },
    }


def _per_call_us(fn: Any, n: int) -> float:
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(samples)


def cpu(n: int) -> None:
    print(f"{'prompt shape':34} {'to_wire us':>11} {'+ auto us':>10} {'cold us':>8} {'marks':>6}")
    for name, shape in _shapes().items():
        request = parse_request({"model": "m", **shape})

        def plain(request: Any = request) -> dict[str, Any]:
            return af.request_to_wire(request, "claude-sonnet-4-5", stream=False)

        def auto(request: Any = request) -> dict[str, Any]:
            return af.apply_prompt_caching(plain(request), "auto")

        def cold(request: Any = request) -> dict[str, Any]:
            caching._cached_count.cache_clear()  # a prefix seen for the first time
            return auto(request)

        marks = str(auto()).count("cache_control")
        times = [_per_call_us(f, n) for f in (plain, auto, cold)]
        print(f"{name:34} {times[0]:11.1f} {times[1]:10.1f} {times[2]:8.1f} {marks:6d}")


async def dollars(turns: int, system_tokens: int) -> None:
    models = [
        {"name": mode, "provider": "sim", "upstream": "claude-sonnet-4-5", "prompt_caching": {"mode": mode}}
        for mode in ("passthrough", "auto")
    ]
    config = {
        "providers": {"sim": {"kind": "anthropic", "base_url": "http://127.0.0.1:0", "simulated": True}},
        "models": models,
        "simulator": {"enabled": True},
        "calllog": {"enabled": False},
        "metrics": False,
    }
    system = f"[{uuid.uuid4()}] " + _text(system_tokens)
    print(
        f"\n{turns} turns, system prompt ~{count_text(system, 'claude'):,} tokens, claude-sonnet-4-5 prices:"
    )
    async with Relay(config) as relay:
        for mode in ("passthrough", "auto"):
            messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
            total, read, written, prompt = Decimal(0), 0, 0, 0
            for turn in range(turns):
                messages.append({"role": "user", "content": f"Question {turn}: " + _text(40)})
                response = await relay.complete(model=mode, messages=messages)
                usage = response.usage
                deployment = relay.catalog.get(mode).deployments[0]
                total += relay.catalog.cost(deployment, usage) or Decimal(0)
                read, written, prompt = (
                    read + usage.cached_tokens,
                    written + usage.cache_write_tokens,
                    prompt + usage.prompt_tokens,
                )
                messages.append({"role": "assistant", "content": response.choices[0].message.content})
            print(
                f"  {mode:12} ${total:.6f}  prompt tokens {prompt:,}: read from cache {read:,},"
                f" written {written:,}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=200, help="calls per timing sample")
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--system-tokens", type=int, default=5000)
    args = parser.parse_args()
    count_text("warm up the tokenizer", "claude")
    cpu(args.n)
    asyncio.run(dollars(args.turns, args.system_tokens))


if __name__ == "__main__":
    main()
