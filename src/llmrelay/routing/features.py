"""What the trained router reads in a prompt: static MiniLM embeddings and a few shape counts.

**Static embeddings.** all-MiniLM-L6-v2's full forward pass costs ~25 ms per prompt in numpy on one
core, five times the router's budget. Its input token-embedding table alone, averaged over the
prompt's word pieces, costs ~0.4 ms and routed almost as well on the RouteLLM sets (APGR within
0.01 of the contextual vectors; bench/routing.py): what decides whether a weak model will do is
mostly the topic and the kind of task, which the words carry without context. The embedder is
``llmrelay.static_embedding`` (shared with the injection detector: one table per process).

**Shape counts.** Length, numbers and their variety, percentages, fractions, money, sentences,
lines and code fences: the multi-step arithmetic and long inputs that trip weaker models.
"""

from __future__ import annotations

import re

import numpy as np

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_SENTENCE_END = re.compile(r"[.?!](?:\s|$)")
_FRACTION = re.compile(r"\d+\s*/\s*\d+")
SHAPE_NAMES = (
    "chars",
    "words",
    "numbers",
    "distinct_numbers",
    "longest_number",
    "percent",
    "fractions",
    "money",
    "sentences",
    "lines",
    "code_fences",
    "questions",
)


def shape_features(text: str) -> np.ndarray:
    """log(1 + count) of each of ``SHAPE_NAMES``, float64."""
    numbers = _NUMBER.findall(text)
    counts = (
        len(text),
        len(text.split()),
        len(numbers),
        len(set(numbers)),
        max(map(len, numbers), default=0),
        text.count("%"),
        len(_FRACTION.findall(text)),
        text.count("$") + text.count("€") + text.count("£"),
        len(_SENTENCE_END.findall(text)),
        text.count("\n") + 1,
        text.count("```"),
        text.count("?"),
    )
    return np.log1p(np.array(counts, np.float64))
