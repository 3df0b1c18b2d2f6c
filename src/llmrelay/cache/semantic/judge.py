"""The optional model check on a semantic match: a cheap model is asked "same question?" first.

The embedding and the cheap checks (``verify.py``) cannot read intent: on Quora's duplicate
questions they still serve ~8% of the non-duplicates at half the duplicates (bench/README.md), and
no model trained here on data we may use did better. A language model reads both questions; a
route that wants few false hits pays one short call per candidate hit (never per miss, never per
exact hit) and keeps the savings of the rest.

The model is asked through llmrelay's own pipeline (``probe.ModelProbe``), like the classifier
router: its call has a record and a cost (marked ``extra["cache_probe"]`` with the asking call's
id); verdicts are kept per question pair for ``cache_ttl_s``. A timeout, an error or an answer that
does not start with SAME is a miss: the check only ever costs a saving, never serves a doubtful
answer.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from ...config import SemanticVerifyModel
from ...pipeline import Call, Result
from ...probe import ModelProbe
from ..base import Confirm

log = logging.getLogger("llmrelay.cache.semantic")

PROMPT = (
    "You decide whether two questions asked of an assistant are the same question: one answer "
    "would answer both correctly and completely. Different names, numbers, places, times, a "
    "negation, or a different thing asked about (how versus why, best versus cheapest) make them "
    "DIFFERENT, even on the same topic. Reply with exactly one word: SAME or DIFFERENT."
)


class ModelVerifier:
    """``same(call, query, cached)``: does the configured model call them the same question?"""

    def __init__(self, settings: SemanticVerifyModel, handle: Callable[[Call], Awaitable[Result]]) -> None:
        self.settings = settings
        self.probe = ModelProbe(
            handle, settings, prompt=PROMPT, labels=("SAME", "DIFFERENT"), mark="cache_probe", max_tokens=3
        )

    def for_call(self, call: Call) -> Confirm:
        """The check the index runs on its best candidate, on behalf of ``call``."""
        return lambda query, cached: self.same(call, query, cached)

    async def same(self, call: Call, query: str, cached: str) -> bool:
        """True only when the model answers SAME; its verdict (or why there is none) goes on
        ``call.extra["cache_verify"]``."""
        model, limit = self.settings.model, self.settings.max_chars
        verdict = await self.probe.ask(call, f"Question A: {cached[:limit]}\nQuestion B: {query[:limit]}")
        if verdict.label is None:
            log.warning(
                "semantic cache: the verifying model failed for %s (%s); a miss", call.id, verdict.why
            )
            call.extra["cache_verify"] = f"failed ({verdict.why}): a miss"
            return False
        call.extra["cache_verify"] = f"{model} said {verdict.label}" + (" (cached)" if verdict.cached else "")
        return verdict.label == "SAME"
