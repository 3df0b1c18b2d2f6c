"""The ``heuristic`` router: a complexity estimate from the last user message, no model involved.

Three signals, each with its weight in the config (``HeuristicRouter``): the message's length in
words (up to ``long_words``), code in it, and words that ask for analysis or reasoning. Their sum,
capped at 1, is the score; the route's thresholds turn it into a tier. A few microseconds a call.
"""

from __future__ import annotations

import re

from ..pipeline import Call
from .base import Verdict, last_user_text
from .settings import HeuristicRouter as HeuristicSettings

# One of these (searched line by line) means the message carries code.
CODE: tuple[str, ...] = (
    r"```",  # a fenced block
    r"^\s*(def|class|import|from\s+\S+\s+import|function|const|let|var|public|private|package|fn|func)\s",
    r"^\s*#include\b",
    r"^\s*(SELECT|INSERT|UPDATE|DELETE)\s.+\b(FROM|INTO|SET|WHERE)\b",
    r"[;{}]\s*$",  # a line ending like a C-family statement or block
    r"\w+\([^()\n]*\)\s*(\{|=>|->|:)\s*$",  # a signature opening a body
)
_WORD = re.compile(r"\S+")


class Heuristic:
    kind = "heuristic"

    def __init__(self, settings: HeuristicSettings) -> None:
        self.settings = settings
        self.code = re.compile("|".join(f"(?:{p})" for p in settings.code_patterns or CODE), re.MULTILINE)
        # One group per configured word (a prefix of whole words): a match's group says which.
        self.words = sorted(settings.analysis_words, key=len, reverse=True)  # longest first
        groups = "|".join("(" + re.escape(w).replace(r"\ ", r"\s+") + ")" for w in self.words)
        self.analysis = re.compile(r"\b(?:" + groups + r")[\w-]*", re.IGNORECASE)

    def score(self, text: str) -> tuple[float, str]:
        s = self.settings
        words = len(_WORD.findall(text))
        code = self.code.search(text) is not None
        found: dict[str, str] = {}  # configured word -> the first word of the text it matched
        for m in self.analysis.finditer(text):
            assert m.lastindex is not None
            found.setdefault(self.words[m.lastindex - 1], m.group(0).lower())
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
        score, reason = self.score(last_user_text(call.request))
        return Verdict(round(score, 4), reason)
