"""What per-key guardrail policies cost per call, in-process: the two guard stages in a pipeline
whose next stage returns a fixed answer (no HTTP, no upstream), CPU microseconds per call, median
of rounds, with the fixed answer's own cost subtracted.

1. A gateway with a master key and no guardrail anywhere: the stages are in the chain (a key made
   through the admin API may bring a policy at any time) and every call takes their fast path.
2. The same policy (injection blocking, PII redaction of answers) on the route, and on the key
   instead (a named policy, resolved once per route and key, then looked up).
3. Resolving a key's policy the first time (``tightened``: the route's policy and the key's).

    .venv/bin/python bench/guard_keys.py                  # ~20 s
    .venv/bin/python bench/guard_keys.py --rounds 3 --calls 500
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from llmrelay import Relay
from llmrelay.config import GuardrailPolicy, Settings
from llmrelay.guardrails.input import GuardInput
from llmrelay.guardrails.output import GuardOutput
from llmrelay.guardrails.policy import tightened
from llmrelay.keys.model import VirtualKey
from llmrelay.pipeline import Call, compose
from llmrelay.providers import openai_format
from llmrelay.types import ChatRequest

PROMPT = "Can you help me write a short email moving Thursday's planning meeting to Friday at 10am?"
ANSWER = "Hi team, the planning meeting moves to Friday at 10am; write to jane.doe@example.com if not."
POLICY = {"injection": {"mode": "block"}, "pii": {"output": "redact"}}


def settings(**extra: Any) -> Settings:
    return Settings.from_dict(
        {
            "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
            "models": [{"name": "m", "provider": "p", "price": {"input": 0.15, "output": 0.6}}],
            "calllog": {"enabled": False},
            **extra,
        }
    )


async def cost(config: Settings, key: VirtualKey | None, calls: int) -> float:
    relay = Relay(config)  # not started: the stages read its settings and catalog only
    stages = [s for s in (GuardInput.from_relay(relay), GuardOutput.from_relay(relay)) if s is not None]
    answer = openai_format.parse_response(
        {
            "id": "x",
            "created": 0,
            "model": "m",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 20, "completion_tokens": 25},
        },
        "m",
    )

    async def upstream(call: Call) -> Any:
        return answer

    handler = compose(stages, upstream)
    request = ChatRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": PROMPT}]})

    def call() -> Call:
        c = Call(request)
        c.key = key
        return c

    await handler(call())  # warm up: engines loaded, the key's policy resolved
    t = time.process_time()
    for _ in range(calls):
        await handler(call())
    spent = time.process_time() - t
    t = time.process_time()
    for _ in range(calls):
        await upstream(call())
    return (spent - (time.process_time() - t)) / calls * 1e6


def median(rounds: int, fn: Any) -> float:
    return statistics.median(fn() for _ in range(rounds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    master = {"server": {"master_key": "sk-bench-master-0123456789"}}
    plain = VirtualKey(id="key_plain", owner="bench")
    named = VirtualKey(id="key_named", owner="bench", guardrails="strict")
    cases = [
        ("no master key, no guardrails (stages not in the chain)", settings(), None),
        ("master key, no guardrails, a key without a policy", settings(**master), plain),
        ("the policy on the route, a key without one", settings(**master, guardrails=POLICY), plain),
        (
            "the policy on the key (named), none on the route",
            settings(**master, guardrail_policies={"strict": POLICY}),
            named,
        ),
    ]
    print(
        f"1-2. The guard stages, CPU per call (fixed answer subtracted), median of {args.rounds} x {args.calls}"
    )
    for name, config, key in cases:
        us = median(args.rounds, lambda c=config, k=key: asyncio.run(cost(c, k, args.calls)))
        print(f"   {name:<60}{us:>8.1f} us")
    route = GuardrailPolicy.model_validate({"injection": {"mode": "block"}, "pii": {"output": "redact"}})
    key_policy = GuardrailPolicy.model_validate(
        {"injection": {"threshold": 0.3}, "pii": {"types": ["EMAIL"]}}
    )

    def resolve() -> float:
        t = time.process_time()
        for _ in range(args.calls):
            tightened(route, key_policy)
        return (time.process_time() - t) / args.calls * 1e6

    print(
        f"3. Resolving a key's policy the first time (per route and key): {median(args.rounds, resolve):.1f} us"
    )


if __name__ == "__main__":
    main()
