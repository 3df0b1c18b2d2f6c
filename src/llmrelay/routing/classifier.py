"""The ``classifier`` router: a cheap model rates the request SIMPLE or COMPLEX.

It is asked through llmrelay's own pipeline (``Relay.handle``), so its call has a record and a
cost of its own (marked ``extra["route_probe"]`` with the routed call's id), and the classifier
model's retries, fallbacks, cache and guardrails apply to it. Verdicts are kept per text for
``cache_ttl_s`` in a bounded in-process LRU. A timeout, an error or an answer that is neither word
routes to the ``on_error`` tier (default: the frontier), and the record says why.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable

from ..cache.backends import MemoryBackend
from ..errors import GatewayError
from ..pipeline import Call, Result
from ..types import ChatRequest, ChatResponse, Message
from .base import Verdict
from .examples import prompt_text
from .settings import ClassifierRouter as ClassifierSettings

log = logging.getLogger(__name__)

PROMPT = (
    "You decide which language model should answer a request. Reply with exactly one word: "
    "SIMPLE if a small, fast model would answer it well (facts, short rewrites, chit-chat, simple "
    "formatting), or COMPLEX if it needs a frontier model (multi-step reasoning, mathematics, code, "
    "careful analysis, long or specialised writing). The request follows."
)
# The answer must start with the label: "Not simple" holds SIMPLE too.
_LABEL = re.compile(r"\W*(SIMPLE|COMPLEX)\b", re.IGNORECASE)
_SCORES = {"SIMPLE": 0.0, "COMPLEX": 1.0}


class Classifier:
    kind = "classifier"

    def __init__(
        self, settings: ClassifierSettings, handle: Callable[[Call], Awaitable[Result]], on_error: str
    ) -> None:
        self.settings = settings
        self.handle = handle  # the relay's whole pipeline
        self.on_error = on_error
        self.prompt = settings.prompt or PROMPT
        self.verdicts = MemoryBackend(settings.cache_max_bytes)

    async def verdict(self, call: Call) -> Verdict:
        text = prompt_text(call.request.messages)[: self.settings.max_chars]
        key = hashlib.sha256(f"{self.settings.model}\0{self.prompt}\0{text}".encode()).hexdigest()
        cached = await self.verdicts.get(key)
        if cached is not None:
            label = cached.decode()
            return Verdict(_SCORES[label], f"{self.settings.model} rated it {label} (cached)")
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                answer = await self._ask(call, text)
        except TimeoutError:
            return self._failed(call, f"no answer within {self.settings.timeout_s:g}s")
        except GatewayError as error:
            return self._failed(call, f"{type(error).__name__}: {error.message}")
        found = _LABEL.match(answer)
        if found is None:
            return self._failed(call, f"it answered {answer[:40]!r}, neither SIMPLE nor COMPLEX")
        label = found.group(1).upper()
        await self.verdicts.set(key, label.encode(), self.settings.cache_ttl_s)
        return Verdict(_SCORES[label], f"{self.settings.model} rated it {label}")

    async def _ask(self, call: Call, text: str) -> str:
        request = ChatRequest(
            model=self.settings.model,
            messages=[Message(role="system", content=self.prompt), Message(role="user", content=text)],
            temperature=0,
            max_tokens=5,
            user=call.request.user,
        )
        probe = Call(request, principal=call.principal)
        probe.extra["route_probe"] = call.id  # what this call was for, on its own record
        result = await self.handle(probe)
        assert isinstance(result, ChatResponse)  # not a stream: it was not asked for one
        return result.choices[0].message.text() if result.choices else ""

    def _failed(self, call: Call, why: str) -> Verdict:
        log.warning("classifier router failed for %s (%s); routing to tier %s", call.id, why, self.on_error)
        return Verdict(None, f"classifier failed ({why}): the {self.on_error} tier", tier=self.on_error)
