"""The ``classifier`` router: a cheap model rates the request SIMPLE or COMPLEX.

It is asked through llmrelay's own pipeline (``probe.ModelProbe``), so its call has a record and
a cost of its own (marked ``extra["route_probe"]`` with the routed call's id); ratings are kept per
text for ``cache_ttl_s``. A timeout, an error or an answer that does not start with either word
routes to the ``on_error`` tier (default: the frontier), and the record says why.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from ..pipeline import Call, Result
from ..probe import ModelProbe
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
_SCORES = {"SIMPLE": 0.0, "COMPLEX": 1.0}


class Classifier:
    kind = "classifier"

    def __init__(
        self, settings: ClassifierSettings, handle: Callable[[Call], Awaitable[Result]], on_error: str
    ) -> None:
        self.settings = settings
        self.on_error = on_error
        self.probe = ModelProbe(
            handle, settings, prompt=PROMPT, labels=("SIMPLE", "COMPLEX"), mark="route_probe", max_tokens=5
        )

    async def verdict(self, call: Call) -> Verdict:
        text = prompt_text(call.request.messages)[: self.settings.max_chars]
        rating = await self.probe.ask(call, text)
        if rating.label is None:
            log.warning(
                "classifier router failed for %s (%s); routing to tier %s", call.id, rating.why, self.on_error
            )
            return Verdict(
                None, f"classifier failed ({rating.why}): the {self.on_error} tier", tier=self.on_error
            )
        cached = " (cached)" if rating.cached else ""
        return Verdict(_SCORES[rating.label], f"{self.settings.model} rated it {rating.label}{cached}")
