"""Cheap checks that keep a near neighbour from being served for a question it does not answer.

Sentence embeddings place "how do I X" and "how do I not X", "the 2010 edition" and "the 2008
edition", "jobs at Getty Realty" and "jobs at Agree Realty" a hair apart: the vectors agree on
the topic and average away the one word that changes the answer. So a candidate above the
similarity threshold is still rejected when, between the query and the cached question:

- negation differs (one says not / no / never / without / n't, the other does not);
- the numbers differ (digits, decimals and the number words up to twelve);
- a specific name appears on one side only: a capitalised word not at the start of a sentence,
  an acronym, or a code-like token with a digit, ``_`` or ``.`` (``gpt-4o``, ``snake_case``, ``file.py``), matched loosely
  (case, plural and a shared 5-letter stem) against every word of the other side.

Each check is a few regexes and set operations (microseconds); bench/semantic_cache.py measures
what each one costs in recall and saves in false hits (bench/README.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

_WORD = re.compile(r"[^\W\d_](?:[\w'’.-]*\w)?|\d+(?:[.,]\d+)*", re.UNICODE)
_SENTENCE_BREAK = re.compile(r"[.!?:;\n]")
_NEGATIONS = frozenset(
    ("not", "no", "never", "without", "none", "nothing", "nobody", "nowhere", "neither", "nor", "cannot")
)
# "one" is left out: "one of the best", "the one I use" are rarely counts.
_NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        ("zero", "", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
    )
    if w
} | {"eleven": "11", "twelve": "12"}


@dataclass(frozen=True, slots=True)
class Facts:
    negated: bool
    numbers: frozenset[str]
    names: frozenset[str]  # lower-cased specific tokens
    stems: frozenset[str]  # every word, lower-cased, plural dropped (what a name may match)


def _stem(word: str) -> str:
    word = word.replace("’", "'").removesuffix("'s")
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _is_name(word: str, sentence_start: bool) -> bool:
    if any(c.isdigit() for c in word) or "_" in word or "." in word:
        return True  # code-like: gpt-4o, snake_case, file.py (plain numbers never get here)
    if "-" in word and word.islower():
        return False  # end-to-end, on-the-fly
    if len(word) > 1 and word.isupper():
        return True  # an acronym: NASA, GMAT
    return word[0].isupper() and not sentence_start and word != "I"


def facts(text: str) -> Facts:
    # Short texts (questions) recur and are cached; a long one is read once, in linear time.
    return _facts(text) if len(text) > 2000 else _cached_facts(text)


def _facts(text: str) -> Facts:
    negated = False
    numbers: set[str] = set()
    names: set[str] = set()
    stems: set[str] = set()
    previous_end = 0
    for match in _WORD.finditer(text):
        word = match.group()
        lower = word.lower()
        sentence_start = previous_end == 0 or bool(_SENTENCE_BREAK.search(text, previous_end, match.start()))
        previous_end = match.end()
        if lower in _NEGATIONS or lower.endswith(("n't", "n’t")):
            negated = True
        if word[0].isdigit():
            numbers.add(word.replace(",", ""))
            continue
        if lower in _NUMBER_WORDS:
            numbers.add(_NUMBER_WORDS[lower])
        stem = _stem(lower)
        stems.add(stem)
        if _is_name(word, sentence_start):
            names.add(stem)
    return Facts(negated, frozenset(numbers), frozenset(names), frozenset(stems))


_cached_facts = lru_cache(maxsize=4096)(_facts)


def _unmatched(names: frozenset[str], stems: frozenset[str]) -> list[str]:
    return [
        n for n in names if n not in stems and not (len(n) >= 5 and any(s.startswith(n[:5]) for s in stems))
    ]


class Verifier:
    """``reject(query, cached)`` gives the reason a candidate must not be served, or None."""

    def __init__(self, *, negation: bool = True, numbers: bool = True, names: bool = True) -> None:
        self.negation = negation
        self.numbers = numbers
        self.names = names

    def reject(self, query: str, cached: str) -> str | None:
        q, c = facts(query), facts(cached)
        if self.negation and q.negated != c.negated:
            return "negation"
        if self.numbers and q.numbers != c.numbers:
            return "number"
        if self.names and (_unmatched(q.names, c.stems) or _unmatched(c.names, q.stems)):
            return "name"
        return None
