"""What the guardrail stages cost per call, in-process, and how the local moderation rules do.

1. Each check alone, CPU microseconds per call (median of rounds): the input limits, the injection
   detector (a short prompt; a 2 kB tool result), the local moderation rules, PII redaction of a
   request and of an answer, a stream's redaction per chunk, a JSON answer checked against an
   object and against a schema.
2. The two stages in a pipeline whose next stage returns a fixed answer (no HTTP, no upstream:
   only what the stages add), CPU per call, for several policies, complete and streamed. "off" is
   the default: no route has guardrails, so neither stage is in the chain at all.
3. The local moderation rules on the dev sets in ../shared/data (measuring only): how much of
   XSTest's unsafe prompts they flag, and how many of XSTest's safe prompts and of the benign
   WildGuard and NotInject prompts they pass.

    .venv/bin/python bench/guard_stages.py            # ~1 min
    .venv/bin/python bench/guard_stages.py --rounds 3 --calls 500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmrelay import Relay
from llmrelay.cache.entries import chunks_of
from llmrelay.config import JsonGuard, Settings
from llmrelay.guardrails.input import GuardInput
from llmrelay.guardrails.jsonmode import spec_for
from llmrelay.guardrails.limits import check_limits
from llmrelay.guardrails.moderation import LocalModerator
from llmrelay.guardrails.output import GuardOutput
from llmrelay.guardrails.pii import PiiRedactor
from llmrelay.guardrails.redaction import redact_request, redact_response
from llmrelay.pipeline import Call, compose
from llmrelay.providers import openai_format

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PROMPT = (
    "Can you help me write a short, friendly email to my team about moving Thursday's planning "
    "meeting to Friday at 10am? Mention that the agenda stays the same and ask them to reply if "
    "the new time does not work."
)
TOOL_RESULT = (
    "Quarterly report. Revenue grew 12% year over year, driven by the subscription business. "
    "Operating costs were flat; headcount grew by four engineers. The board approved the budget. "
) * 12  # ~2 kB: a fetched page or document
ANSWER = (
    "Subject: Planning meeting moved to Friday\n\nHi team,\n\nThursday's planning meeting moves to "
    "Friday at 10am. The agenda stays the same. If the new time does not work for you, reply to this "
    "email (or write to jane.doe@example.com) and we will find another slot.\n\nThanks,\nJane"
)
JSON_ANSWER = '{"subject": "Planning meeting moved", "day": "Friday", "time": "10:00", "attendees": 7}'
SCHEMA = {
    "type": "object",
    "properties": {
        "subject": {"type": "string"},
        "day": {"enum": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]},
        "time": {"type": "string", "pattern": "^[0-9]{2}:[0-9]{2}$"},
        "attendees": {"type": "integer", "minimum": 1},
    },
    "required": ["subject", "day", "time"],
}


def cpu_us(fn: Callable[[], Any], calls: int, rounds: int) -> float:
    spent = []
    for _ in range(rounds):
        t = time.process_time()
        for _ in range(calls):
            fn()
        spent.append((time.process_time() - t) / calls * 1e6)
    return statistics.median(spent)


def request(content: str = PROMPT, **kw: Any):
    body = {
        "model": "m",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": content}],
    }
    return openai_format.parse_request({**body, **kw})


def response(content: str = ANSWER):
    return openai_format.parse_response(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "m",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 40, "completion_tokens": 70, "total_tokens": 110},
        },
        "m",
    )


def checks(calls: int, rounds: int) -> None:
    from llmrelay.guardrails.injection import InjectionDetector

    detector = InjectionDetector.load()
    moderator = LocalModerator()
    redactor = PiiRedactor()
    req, answer = request(), response()
    object_spec = spec_for(request(response_format={"type": "json_object"}), JsonGuard(mode="block"))
    schema_spec = spec_for(
        request(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}}),
        JsonGuard(mode="block"),
    )
    assert object_spec is not None and schema_spec is not None
    pieces = [ANSWER[i : i + 12] for i in range(0, len(ANSWER), 12)]  # ~3 tokens a chunk

    def stream_redaction() -> None:
        stream = redactor.stream()
        for piece in pieces:
            stream.feed(piece)
        stream.flush()

    rows = [
        ("input limits (chars + tokens bound)", lambda: check_limits(req, 20_000, 8_000)),
        (f"injection, a {len(PROMPT)}-char prompt", lambda: detector.check(PROMPT, 0.5)),
        (f"injection, a {len(TOOL_RESULT):,}-char tool result", lambda: detector.check(TOOL_RESULT, 0.5)),
        (f"local moderation, a {len(PROMPT)}-char prompt", lambda: moderator.check(PROMPT)),
        (f"local moderation, a {len(ANSWER)}-char answer", lambda: moderator.check(ANSWER)),
        ("PII redaction of the request (2 messages)", lambda: redact_request(req, redactor)),
        (f"PII redaction of a {len(ANSWER)}-char answer", lambda: redact_response(answer, redactor)),
        (f"PII redaction of the same answer streamed ({len(pieces)} chunks)", stream_redaction),
        ("JSON check, json_object", lambda: object_spec.check(JSON_ANSWER)),
        ("JSON check, a 4-property schema", lambda: schema_spec.check(JSON_ANSWER)),
    ]
    print(f"1. Each check alone: CPU per call, median of {rounds} x {calls}")
    for name, fn in rows:
        fn()  # warm up (first-use loads, compiled patterns)
        print(f"   {name:<58}{cpu_us(fn, calls, rounds):>9.1f} us")


POLICIES: dict[str, dict[str, Any] | None] = {
    "off (no guard stage in the chain)": None,
    "limits + injection": {
        "limits": {"max_input_chars": 20000, "max_input_tokens": 8000},
        "injection": {"mode": "block"},
    },
    "+ local moderation in and out": {
        "limits": {"max_input_chars": 20000, "max_input_tokens": 8000},
        "injection": {"mode": "block"},
        "moderation": {"input": "block", "output": "block"},
    },
    "+ PII redaction of answers (examples/guarded.yaml)": {
        "limits": {"max_input_chars": 20000, "max_input_tokens": 8000},
        "injection": {"mode": "block"},
        "moderation": {"input": "block", "output": "block"},
        "pii": {"output": "redact"},
        "json": {"mode": "block"},
    },
}


async def pipeline_cost(policy: dict[str, Any] | None, *, stream: bool, json_mode: bool, calls: int) -> float:
    raw: dict[str, Any] = {
        "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
        "models": [{"name": "m", "provider": "p", "price": {"input": 0.15, "output": 0.6}}],
        "calllog": {"enabled": False},
    }
    if policy is not None:
        raw["guardrails"] = policy
    relay = Relay(Settings.from_dict(raw))  # not started: only its catalog and settings are read
    stages = [s for s in (GuardInput.from_relay(relay), GuardOutput.from_relay(relay)) if s is not None]
    answer = response(JSON_ANSWER if json_mode else ANSWER)
    chunks = chunks_of(answer)
    # The upstream's stream in ~3-token pieces, as providers send it.
    text = answer.choices[0].message.content or ""
    content = [
        chunks[0].model_copy(
            update={
                "choices": [
                    c.model_copy(update={"delta": c.delta.model_copy(update={"content": text[i : i + 12]})})
                    for c in chunks[1].choices
                ]
            }
        )
        for i in range(0, len(text), 12)
    ]
    streamed = [chunks[0], *content, *chunks[2:]]

    async def upstream(call: Call) -> Any:
        if not call.stream:
            return answer

        async def gen():
            for chunk in streamed:
                yield chunk

        return gen()

    handler = compose(stages, upstream)
    extra: dict[str, Any] = {"stream": stream}
    if json_mode:
        extra["response_format"] = {"type": "json_object"}
    req = request(**extra)

    async def one() -> None:
        result = await handler(Call(req))
        if stream:
            async for _ in result:  # type: ignore[union-attr]
                pass

    await one()  # warm up
    t = time.process_time()
    for _ in range(calls):
        await one()
    spent = (time.process_time() - t) / calls * 1e6
    base = time.process_time()
    for _ in range(calls):  # the upstream stand-in alone, to subtract
        result = await upstream(Call(req))
        if stream:
            async for _ in result:
                pass
    return spent - (time.process_time() - base) / calls * 1e6


def pipelines(calls: int, rounds: int) -> None:
    print(
        f"\n2. The guard stages in a pipeline (fixed answer as the next stage): CPU per call, median of {rounds} x {calls}"
    )
    print(f"   {'policy':<52}{'complete':>10}{'stream':>10}{'JSON req':>10}")
    for name, policy in POLICIES.items():
        row = []
        for stream, json_mode in ((False, False), (True, False), (False, True)):
            runs = [
                asyncio.run(pipeline_cost(policy, stream=stream, json_mode=json_mode, calls=calls))
                for _ in range(rounds)
            ]
            row.append(statistics.median(runs))
        print(f"   {name:<52}" + "".join(f"{v:>8.0f}us" for v in row))


def moderation_quality() -> None:
    def load(name: str) -> list[dict[str, Any]]:
        path = DATA / name / "dev.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    if not DATA.exists():
        print(f"\n3. (skipped: no dev sets at {DATA})")
        return
    moderator = LocalModerator()
    xstest = load("xstest")
    print("\n3. Local moderation rules on the dev sets (flagged = would block)")
    sets = [
        ("xstest unsafe (should flag)", [r["text"] for r in xstest if r["label"] == "unsafe"], True),
        ("xstest safe (should pass)", [r["text"] for r in xstest if r["label"] == "safe"], False),
        ("wildguard_benign (should pass)", [r["text"] for r in load("wildguard_benign")], False),
        ("notinject_benign (should pass)", [r["text"] for r in load("notinject_benign")], False),
    ]
    for name, texts, harmful in sets:
        flagged = sum(moderator.check(t).flagged for t in texts)
        right = flagged if harmful else len(texts) - flagged
        print(
            f"   {name:<34} {right:>4} / {len(texts):<4} right ({right / len(texts):6.1%}); flagged {flagged}"
        )
    by_type: dict[str, list[bool]] = {}
    for r in xstest:
        if r["label"] == "unsafe":
            by_type.setdefault(r["type"], []).append(moderator.check(r["text"]).flagged)
    print(
        "   xstest unsafe by type: "
        + ", ".join(f"{t.removeprefix('contrast_')} {sum(v)}/{len(v)}" for t, v in sorted(by_type.items()))
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"Python {sys.version.split()[0]}")
    checks(args.calls, args.rounds)
    pipelines(args.calls, args.rounds)
    moderation_quality()


if __name__ == "__main__":
    main()
