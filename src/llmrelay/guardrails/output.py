"""The ``guard_output`` stage: checks an answer before the client (and the cache) gets it.

It sits inside the cache stage, so what the cache keeps is the checked answer: redacted,
validated. In order, each only when the route's policy turns it on:
1. JSON enforcement: when the request asks for JSON (``response_format`` json_object or
   json_schema) or the route always wants it: fences stripped, parsed, validated against the
   schema; an invalid answer is asked for again once, with what is wrong appended (one more
   attempt on the record, its tokens added to the usage); still invalid: a 502 ``guardrail_json``;
2. PII redaction (or block, flag, log) of the answer's text; thinking is left as it is (a changed
   thinking block fails its signature when it is sent back);
3. moderation of the answer, its thinking included (judging changes nothing).

Streams: JSON enforcement (and moderation with ``hold_streams``) needs the whole answer, so the
stream is read to its end, checked as a complete answer, then replayed: no streaming latency
benefit on those routes. Otherwise chunks flow as they come: PII is redacted in flight (a piece
of text leaves only once no PII can cover it); moderation reads the answer as it passes and holds
back only the finish and usage chunks until it has judged the whole; a block after text has left
ends the stream with an explicit error event instead of its finish.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..cache.entries import Assembler, chunks_of
from ..config import GuardrailPolicy, JsonGuard
from ..errors import GatewayError, GuardrailOutputInvalid, UpstreamProtocolError
from ..pipeline import Call, Handler, Result, Stream
from ..types import ChatResponse, Chunk
from .engines import Engines, RouteGuard
from .jsonmode import JsonSpec, added, asking, reask_request, spec_for
from .redaction import redact_response, redacted_stream
from .verdicts import found, note

if TYPE_CHECKING:
    from .pii import Span
    from .policy import KeyPolicies

STAGE = "output"


class GuardOutput(RouteGuard):
    side = STAGE

    def __init__(
        self, policies: Mapping[str, GuardrailPolicy], engines: Engines, keys: KeyPolicies | None = None
    ) -> None:
        super().__init__(policies, engines, keys)
        for policy in self.policies.values():
            if policy.json_.mode != "off":
                from .jsonmode import policy_spec

                policy_spec(policy.json_)  # a bad schema in the config fails the start

    async def __call__(self, call: Call, next: Handler) -> Result:
        policy = self.policy(call)
        if policy is None:
            return await next(call)
        spec = spec_for(call.request, policy.json_)  # a bad schema in the request: 400 before any cost
        if spec is not None:
            call.request = asking(call.request, policy.json_)
        moderation = policy.moderation
        result = await next(call)
        if isinstance(result, ChatResponse):
            return await self._checked(call, result, policy, spec, next)
        if spec is not None or (moderation.output != "off" and moderation.hold_streams):
            response = await self._checked(call, await _whole(result), policy, spec, next)
            return _replay(call, response)
        return self._stream(call, result, policy)

    # --- a complete answer ------------------------------------------------------------------------

    async def _checked(
        self,
        call: Call,
        response: ChatResponse,
        policy: GuardrailPolicy,
        spec: JsonSpec | None,
        next: Handler,
    ) -> ChatResponse:
        try:
            if spec is not None:
                response = await self._json(call, response, policy.json_, spec, next)
            if policy.pii.output != "off":
                response = self._pii(call, response, policy)
            if policy.moderation.output != "off":
                texts = [
                    text
                    for c in response.choices
                    for text in (c.message.text(), c.message.thinking_text())
                    if text
                ]
                await self.engines.moderate(call, STAGE, policy.moderation.output, policy.moderation, texts)
        except GatewayError as error:
            error.usage = error.usage or response.usage  # the refused answer was paid for all the same
            raise
        return response

    async def _json(
        self, call: Call, response: ChatResponse, guard: JsonGuard, spec: JsonSpec, next: Handler
    ) -> ChatResponse:
        response, problem = _validated(response, spec)
        if problem is None:
            note(call, "json", STAGE, "pass")
            return response
        if guard.reask:
            first_error = problem[1]
            asked = call.request
            call.request = reask_request(asked, *problem, spec)
            try:
                retry = await _whole(await next(call))  # the executor adds it to the attempts
            except GatewayError as error:
                if guard.mode == "block":
                    error.usage = response.usage
                    raise
                # flag, log: the first answer as it came, as when the re-ask answers invalid JSON too
                reason = f"{first_error}; the re-ask failed: {error.message}"
                found(call, "json", STAGE, guard.mode, reason, reason=reason)
                return response
            finally:
                call.request = asked
            retry = retry.model_copy(update={"usage": added(response.usage, retry.usage)})
            response, problem = _validated(retry, spec)
            if problem is None:
                note(call, "json", STAGE, "reask", reason=first_error)
                return response
        error = problem[1]
        again = " even when asked again" if guard.reask else ""
        try:
            found(
                call,
                "json",
                STAGE,
                guard.mode,
                f"The model did not answer with valid JSON{again}: {error}",
                error=GuardrailOutputInvalid,
                reason=error,
            )
        except GatewayError as blocked:
            blocked.usage = response.usage  # both answers' tokens
            raise
        return response  # flag, log: the answer as it came

    def _pii(self, call: Call, response: ChatResponse, policy: GuardrailPolicy) -> ChatResponse:
        redacted, spans = redact_response(response, self.engines.redactor(policy.pii.types))
        if not spans:
            note(call, "pii", STAGE, "pass")
            return response
        types = sorted({s.type for s in spans})
        mode = policy.pii.output
        if mode == "redact":
            note(call, "pii", STAGE, "redact", count=len(spans), types=types)
            return redacted
        message = f"The answer was blocked by the PII guardrail: it contains {', '.join(types)}."
        found(call, "pii", STAGE, mode, message, count=len(spans), types=types)
        return response

    # --- a stream, checked in flight --------------------------------------------------------------

    def _stream(self, call: Call, chunks: Stream, policy: GuardrailPolicy) -> Stream:
        pii = policy.pii.output
        if pii in ("redact", "block"):
            redactor = self.engines.redactor(policy.pii.types)

            def ended(spans: list[Span]) -> None:
                if spans:
                    types = sorted({s.type for s in spans})
                    note(call, "pii", STAGE, "redact", count=len(spans), types=types)
                else:
                    note(call, "pii", STAGE, "pass")

            def blocked(spans: list[Span]) -> None:
                types = sorted({s.type for s in spans})
                message = f"The answer was blocked by the PII guardrail: it contains {', '.join(types)}."
                found(call, "pii", STAGE, "block", message, count=len(spans), types=types)

            chunks = redacted_stream(chunks, redactor, ended, blocked if pii == "block" else None)
        if pii in ("flag", "log") or policy.moderation.output != "off":
            chunks = self._watched(call, chunks, policy)
        return chunks

    async def _watched(self, call: Call, chunks: Stream, policy: GuardrailPolicy) -> Stream:
        """The stream as it comes, its text kept; the finish and usage chunks are held until the
        whole answer has been checked (PII flag/log, moderation), then sent, or an error raised."""
        texts: dict[int, list[str]] = {}
        thoughts: dict[int, list[str]] = {}  # judged by moderation too, never changed (signatures)
        tail: list[Chunk] = []
        try:
            async for chunk in chunks:
                for c in chunk.choices:
                    if c.delta.content:
                        texts.setdefault(c.index, []).append(c.delta.content)
                    if thought := c.delta.thinking_text():
                        thoughts.setdefault(c.index, []).append(thought)
                if chunk.usage is not None or any(c.finish_reason for c in chunk.choices):
                    tail.append(chunk)
                else:
                    yield chunk
        finally:
            await chunks.aclose()
        answers = ["".join(pieces) for _, pieces in sorted(texts.items())]
        usage = next((c.usage for c in reversed(tail) if c.usage is not None), None)
        try:
            mode = policy.pii.output
            if mode in ("flag", "log"):
                redactor = self.engines.redactor(policy.pii.types)
                spans = [span for text in answers for span in redactor.find(text)]
                if spans:
                    types = sorted({s.type for s in spans})
                    found(call, "pii", STAGE, mode, "PII in the answer", count=len(spans), types=types)
                else:
                    note(call, "pii", STAGE, "pass")
            moderation = policy.moderation
            if moderation.output != "off":
                thinking = ["".join(pieces) for _, pieces in sorted(thoughts.items())]
                texts_ = [a for a in [*answers, *thinking] if a]
                await self.engines.moderate(call, STAGE, moderation.output, moderation, texts_)
        except GatewayError as error:
            error.usage = usage
            raise
        for chunk in tail:
            yield chunk


def _validated(response: ChatResponse, spec: JsonSpec) -> tuple[ChatResponse, tuple[str, str] | None]:
    """The response with each choice's JSON as parsed (fences stripped), or the first invalid
    choice's (text, what is wrong). A choice that calls tools instead of answering is not judged."""
    choices = []
    for choice in response.choices:
        message = choice.message
        text = message.text()
        if message.tool_calls and not text:
            choices.append(choice)
            continue
        clean, error = spec.check(text)
        if error is not None:
            return response, (text, error)
        if clean != text:
            choice = choice.model_copy(update={"message": message.model_copy(update={"content": clean})})
        choices.append(choice)
    return response.model_copy(update={"choices": choices}), None


async def _whole(result: Result) -> ChatResponse:
    """A result as a complete response: a stream is read to its end and assembled."""
    if isinstance(result, ChatResponse):
        return result
    assembler = Assembler()
    try:
        async for chunk in result:
            assembler.add(chunk)
    finally:
        await result.aclose()
    response = assembler.response()
    if response is None:
        raise UpstreamProtocolError("The upstream stream ended before the answer was complete.")
    return response


async def _replay(call: Call, response: ChatResponse) -> Stream:
    """A checked answer as a stream; its first token is timed as the client sees it."""
    call.ttft_ms = None
    for chunk in chunks_of(response):
        if call.ttft_ms is None and any(c.delta.has_output for c in chunk.choices):
            call.ttft_ms = call.elapsed_ms()
        yield chunk
