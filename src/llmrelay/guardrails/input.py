"""The ``guard_input`` stage: checks a request before it is answered (from the cache or upstream).

In order, cheapest first, each only when the route's policy turns it on:
1. input limits (characters, tokens): over one is a 400 ``guardrail_input_limit`` naming the limit;
2. prompt injection, on the turn's user messages and tool results (indirect injection);
3. moderation of the turn's user messages;
4. PII in the input: redacted (or blocked, flagged, logged) before the request goes anywhere, so
   neither the provider, the cache nor the call log sees it.
A block ends the call with a 400 (``guardrail_<guard>``) and status ``filtered`` on its record;
every guard that ran leaves its verdict on the record (verdicts.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..config import GuardrailPolicy, InjectionGuard
from ..pipeline import Call, Handler, Result
from ..types import ChatRequest, Message
from .engines import RouteGuard
from .limits import check_limits
from .redaction import redact_request
from .verdicts import found, note

if TYPE_CHECKING:
    pass

STAGE = "input"


class GuardInput(RouteGuard):
    side = STAGE

    async def __call__(self, call: Call, next: Handler) -> Result:
        policy = self.policy(call)
        if policy is None:
            return await next(call)
        request = call.request
        limits = policy.limits
        if limits.on:
            problem = await check_limits(request, limits.max_input_chars, limits.max_input_tokens)
            if problem is None:
                note(call, "input_limit", STAGE, "pass")
            else:
                found(call, "input_limit", STAGE, limits.mode, problem, param="messages")
        if policy.injection.mode != "off":
            self._injection(call, policy.injection)
        if policy.moderation.input != "off":
            texts = [m.text() for m in _turn(request, "latest") if m.role == "user" and m.text()]
            await self.engines.moderate(call, STAGE, policy.moderation.input, policy.moderation, texts)
        if policy.pii.input != "off":
            self._pii(call, policy)
        return await next(call)

    def _injection(self, call: Call, guard: InjectionGuard) -> None:
        detector = self.engines.injection()
        roles = ("user", "tool") if guard.tool_results else ("user",)
        worst, where = None, None
        for message in _turn(call.request, guard.scan):
            if message.role in roles and (text := message.text()):
                verdict = (
                    detector.check(text) if guard.threshold is None else detector.check(text, guard.threshold)
                )
                if worst is None or verdict.score > worst.score:
                    worst, where = verdict, message.role
        if worst is None:
            return
        score = round(worst.score, 4)
        if not worst.flagged:
            note(call, "injection", STAGE, "pass", score=score)
            return
        source = "a tool result" if where == "tool" else "the input"
        found(
            call,
            "injection",
            STAGE,
            guard.mode,
            f"The request was blocked by the injection guardrail: {source} looks like a prompt injection "
            f"or jailbreak (score {score:.2f}{_reason(worst.reason)}).",
            score=score,
            reason=worst.reason,
            source=where,
        )

    def _pii(self, call: Call, policy: GuardrailPolicy) -> None:
        mode = policy.pii.input
        redactor = self.engines.redactor(policy.pii.types)
        redacted, spans = redact_request(call.request, redactor)
        if not spans:
            note(call, "pii", STAGE, "pass")
            return
        types = sorted({s.type for s in spans})
        if mode == "redact":
            call.request = redacted
            note(call, "pii", STAGE, "redact", count=len(spans), types=types)
            return
        found(
            call,
            "pii",
            STAGE,
            mode,
            f"The request was blocked by the PII guardrail: it contains {', '.join(types)}.",
            count=len(spans),
            types=types,
        )


def _turn(request: ChatRequest, scan: str) -> list[Message]:
    """The messages a check reads: the whole conversation, or only this turn's new input (what
    follows the last assistant message: the user's message, the tool results)."""
    messages = request.messages
    if scan == "all":
        return messages
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].role == "assistant":
            return messages[i + 1 :]
    return messages


def _reason(reason: str) -> str:
    """The detector's reason, for the client: which rule fired, or nothing (the model's score)."""
    return f", {reason.replace(':', ' ')}" if reason.startswith("rule:") else ""
