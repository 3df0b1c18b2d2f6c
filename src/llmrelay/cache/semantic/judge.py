"""The optional model check on a semantic match: a cheap model is asked "same question?" first.

The embedding and the cheap checks (``verify.py``) cannot read intent: on Quora's duplicate
questions they still serve ~8% of the non-duplicates at half the duplicates (bench/README.md), and
no model trained here on data we may use did better. A language model reads both questions; a
route that wants few false hits pays one short call per candidate hit (never per miss, never per
exact hit) and keeps the savings of the rest.

The model is asked through llmrelay's own pipeline (``Relay.handle``), like the classifier router:
its call has a record and a cost (marked ``extra["cache_probe"]`` with the asking call's id), and
the verifying model's retries, fallbacks, exact cache and guardrails apply to it. Verdicts are kept
per question pair for ``cache_ttl_s`` in a bounded in-process LRU. A timeout, an error or an answer
that is not SAME is a miss: the check only ever costs a saving, never serves a doubtful answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable

from ...config import SemanticVerifyModel
from ...errors import GatewayError
from ...pipeline import Call, Result
from ...types import ChatRequest, ChatResponse, Message
from ..backends import MemoryBackend

log = logging.getLogger("llmrelay.cache.semantic")

PROMPT = (
    "You decide whether two questions asked of an assistant are the same question: one answer "
    "would answer both correctly and completely. Different names, numbers, places, times, a "
    "negation, or a different thing asked about (how versus why, best versus cheapest) make them "
    "DIFFERENT, even on the same topic. Reply with exactly one word: SAME or DIFFERENT."
)
# The answer must start with the label: "Not the same" holds SAME too, and a yes read into a hedge
# would serve the wrong answer.
_LABEL = re.compile(r"\W*(SAME|DIFFERENT)\b", re.IGNORECASE)

Confirm = Callable[[str, str], Awaitable[bool]]  # (query, cached question) -> serve it?


class ModelVerifier:
    """``same(call, query, cached)``: does the configured model call them the same question?"""

    def __init__(self, settings: SemanticVerifyModel, handle: Callable[[Call], Awaitable[Result]]) -> None:
        self.settings = settings
        self.handle = handle  # the relay's whole pipeline
        self.prompt = settings.prompt or PROMPT
        self.verdicts = MemoryBackend(settings.cache_max_bytes)

    def for_call(self, call: Call) -> Confirm:
        """The check the index runs on its best candidate, on behalf of ``call``."""
        return lambda query, cached: self.same(call, query, cached)

    async def same(self, call: Call, query: str, cached: str) -> bool:
        """True only when the model answers SAME; its verdict (or why there is none) goes on
        ``call.extra["cache_verify"]``."""
        model, limit = self.settings.model, self.settings.max_chars
        pair = f"Question A: {cached[:limit]}\nQuestion B: {query[:limit]}"
        key = hashlib.sha256(f"{model}\0{self.prompt}\0{pair}".encode()).hexdigest()
        cached_label = await self.verdicts.get(key)
        if cached_label is not None:
            label = cached_label.decode()
            call.extra["cache_verify"] = f"{model} said {label} (cached)"
            return label == "SAME"
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                answer = await self._ask(call, pair)
        except TimeoutError:
            return self._failed(call, f"no answer within {self.settings.timeout_s:g}s")
        except GatewayError as error:
            return self._failed(call, f"{type(error).__name__}: {error.message}")
        found = _LABEL.match(answer)
        if found is None:
            return self._failed(call, f"it answered {answer[:40]!r}, neither SAME nor DIFFERENT")
        label = found.group(1).upper()
        await self.verdicts.set(key, label.encode(), self.settings.cache_ttl_s)
        call.extra["cache_verify"] = f"{model} said {label}"
        return label == "SAME"

    async def _ask(self, call: Call, pair: str) -> str:
        request = ChatRequest(
            model=self.settings.model,
            messages=[Message(role="system", content=self.prompt), Message(role="user", content=pair)],
            temperature=0,
            max_tokens=3,
            user=call.request.user,
        )
        probe = Call(request, principal=call.principal)
        probe.extra["cache_probe"] = call.id  # what this call was for, on its own record
        result = await self.handle(probe)
        assert isinstance(result, ChatResponse)  # not a stream: it was not asked for one
        return result.choices[0].message.text() if result.choices else ""

    def _failed(self, call: Call, why: str) -> bool:
        log.warning("semantic cache: the verifying model failed for %s (%s); a miss", call.id, why)
        call.extra["cache_verify"] = f"failed ({why}): a miss"
        return False
