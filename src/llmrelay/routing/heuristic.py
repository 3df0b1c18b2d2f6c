"""The ``heuristic`` router: a complexity estimate from the last user message, no model involved.

Three signals, each with its weight in the config (``HeuristicRouter``): the message's length in
words (up to ``long_words``), code in it, and words that ask for analysis or reasoning. Their sum,
capped at 1, is the score; the tiers' min_score turn it into a tier. Some 5-25 us for a
typical prompt; at most about a millisecond (only the first 16,000 characters are read).
"""

from __future__ import annotations

import re

from ..pipeline import Call
from .base import Verdict
from .examples import prompt_text
from .settings import HeuristicRouter as HeuristicSettings

# One of these found (MULTILINE: ^ and $ are line ends) means the message carries code.
CODE: tuple[str, ...] = (
    r"```",  # a fenced block
    r"^\s*(def|class|import|from\s+\S+\s+import|function|const|let|var|public|private|package|fn|func)\s",
    r"^\s*#include\b",
    r"^\s*(SELECT|INSERT|UPDATE|DELETE)\s.+\b(FROM|INTO|SET|WHERE)\b",
    r"[;{}]\s*$",  # a line ending like a C-family statement or block
    r"\w\([^()\n]{0,200}\)[ \t]*(\{|=>|->|:)[ \t]*$",  # a signature opening a body
)
_PUNCTUATION = "\"'`()[]{}<>*_.,;:!?"


class Heuristic:
    kind = "heuristic"

    def __init__(self, settings: HeuristicSettings) -> None:
        self.settings = settings
        # Searched one by one: Python's re is several times slower on their alternation.
        self.code = [re.compile(p, re.MULTILINE) for p in settings.code_patterns or CODE]
        words = [w.lower() for w in settings.analysis_words]
        self.prefixes = tuple(w for w in words if " " not in w)  # of single words
        self.phrases = tuple(" ".join(w.split()) for w in words if " " in w)  # "explain why"
        # Enough text for the longest message the length signal tells apart, and a bound on the
        # time spent on a huge one.
        self.scanned = max(16_000, settings.long_words * 12)

    def score(self, text: str) -> tuple[float, str]:
        s = self.settings
        text = text[: self.scanned]
        tokens = text.lower().split()
        words = len(tokens)
        code = any(pattern.search(text) for pattern in self.code)
        found: dict[str, str] = {}  # configured word -> a word of the text it matched
        for token in sorted(set(tokens)):  # each distinct word once: long texts repeat
            word = token.strip(_PUNCTUATION)
            if word.startswith(self.prefixes):
                found.setdefault(next(p for p in self.prefixes if word.startswith(p)), word)
        if self.phrases:
            joined = " ".join(tokens)
            found.update((p, p) for p in self.phrases if p in joined)
        score = (
            s.length_weight * min(words / s.long_words, 1.0)
            + (s.code_weight if code else 0.0)
            + s.analysis_weight * len(found)
        )
        reason = f"{words} words" + (", code" if code else "")
        if found:
            reason += f", analysis words: {', '.join(sorted(found.values()))}"
        return min(score, 1.0), reason

    async def verdict(self, call: Call) -> Verdict:
        score, reason = self.score(prompt_text(call.request.messages))
        return Verdict(round(score, 4), reason)
