"""One short question to a configured model, answered with one of two labels: the classifier
router's SIMPLE/COMPLEX (routing/classifier.py) and the semantic cache's SAME/DIFFERENT
(cache/semantic/judge.py).

The model is asked through llmrelay's own pipeline (``Relay.handle``), so the question is a call
of its own: a record and a cost, marked in ``extra[mark]`` with the id of the call it was asked
for, and the model's retries, fallbacks, exact cache and guardrails apply to it. Labels are kept
per question for ``cache_ttl_s`` in a bounded in-process LRU. A timeout, an error or an answer
that does not start with a label is no label; what to do then is the caller's choice.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from .cache.backends import MemoryBackend
from .errors import GatewayError
from .pipeline import Call, Result
from .types import ChatRequest, ChatResponse, Message


@dataclass(frozen=True, slots=True)
class Label:
    label: str | None  # one of the labels, upper case; None when there is none
    why: str = ""  # why there is none
    cached: bool = False  # kept from an earlier answer to the same question


class ProbeSettings(Protocol):
    """What a route configures for its probe (``ClassifierRouter``, ``SemanticVerifyModel``)."""

    model: str
    prompt: str | None
    timeout_s: float
    cache_ttl_s: float
    cache_max_bytes: int


class ModelProbe:
    def __init__(
        self,
        handle: Callable[[Call], Awaitable[Result]],
        settings: ProbeSettings,
        *,
        prompt: str,
        labels: tuple[str, str],
        mark: str,
        max_tokens: int,
    ) -> None:
        """``prompt``: the system prompt when ``settings`` set none; ``mark``: the ``extra`` key
        naming, on the probe's own record, the call it was asked for."""
        self.handle = handle  # the relay's whole pipeline
        self.settings = settings
        self.model = settings.model
        self.prompt = settings.prompt or prompt
        self.labels = labels
        self.mark = mark
        self.max_tokens = max_tokens
        self.verdicts = MemoryBackend(settings.cache_max_bytes)
        # The answer must start with a label: "Not simple" or "Not the same" holds one too, and
        # reading a yes into a hedge would route or serve wrongly.
        self._label = re.compile(rf"\W*({'|'.join(labels)})\b", re.IGNORECASE)

    async def ask(self, call: Call, text: str) -> Label:
        """The model's label for ``text``, asked on behalf of ``call``."""
        key = hashlib.sha256(f"{self.model}\0{self.prompt}\0{text}".encode()).hexdigest()
        kept = await self.verdicts.get(key)
        if kept is not None:
            return Label(kept.decode(), cached=True)
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                answer = await self._ask(call, text)
        except TimeoutError:
            return Label(None, f"no answer within {self.settings.timeout_s:g}s")
        except GatewayError as error:
            return Label(None, f"{type(error).__name__}: {error.message}")
        found = self._label.match(answer)
        if found is None:
            first, second = self.labels
            return Label(None, f"it answered {answer[:40]!r}, neither {first} nor {second}")
        label = found.group(1).upper()
        await self.verdicts.set(key, label.encode(), self.settings.cache_ttl_s)
        return Label(label)

    async def _ask(self, call: Call, text: str) -> str:
        request = ChatRequest(
            model=self.model,
            messages=[Message(role="system", content=self.prompt), Message(role="user", content=text)],
            temperature=0,
            max_tokens=self.max_tokens,
            user=call.request.user,
        )
        probe = Call(request, principal=call.principal)
        probe.extra[self.mark] = call.id  # what this call was for, on its own record
        result = await self.handle(probe)
        assert isinstance(result, ChatResponse)  # not a stream: it was not asked for one
        return result.choices[0].message.text() if result.choices else ""
