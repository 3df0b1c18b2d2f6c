"""What the trained router reads in a prompt: static MiniLM embeddings, shape counts, the wording
of a question, and how alike its answer options are.

**Static embeddings.** all-MiniLM-L6-v2's full forward pass costs ~25 ms per prompt in numpy on one
core, five times the router's budget. Its input token-embedding table alone, averaged over the
prompt's word pieces, costs ~0.4 ms and routed almost as well on the RouteLLM sets (APGR within
0.01 of the contextual vectors; bench/routing.py): what decides whether a weak model will do is
mostly the topic and the kind of task, which the words carry without context. The embedder is
``llmrelay.static_embedding`` (shared with the injection detector: one table per process).

**Shape counts.** Length, numbers and their variety, percentages, fractions, money, sentences,
lines and code fences: the multi-step arithmetic and long inputs that trip weaker models.

**Question wording.** A multiple-choice prompt (lines ``A.`` to ``D.``) is split into its stem and
options: the stem's length and numbers, the options' lengths and how much they vary, negation in
the stem ("NOT", "EXCEPT", "LEAST"), "Statement 1 | Statement 2" pairs, "all/none of the above",
arithmetic operators, the words of multi-step word problems ("each", "per", "twice", "remaining").

**Numbers of a word problem.** The size of the numbers (the largest, their mean and summed
log-magnitude), how many are large or not whole, units of measure and how many kinds, the people
named, and what the last sentence asks ("how much", "total"). On GSM8K the largest number alone
lifted the counts' logistic regression from APGR 0.61 to 0.65: big operands are where the weak
model's arithmetic slips.

**Option similarity.** How alike the answer options are to each other and to the stem (cosines of
their static embeddings): options that differ in a detail are harder to tell apart than options
on different topics. On the MMLU dev set a logistic regression over these with the counts above
routed as well as the whole-prompt embedding (APGR 0.66 vs 0.66), and added ~0.01 beside it.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

import numpy as np

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_SENTENCE_END = re.compile(r"[.?!](?:\s|$)")
_FRACTION = re.compile(r"\d+\s*/\s*\d+")
_OPTION = re.compile(r"^\s*([A-D])[.)]\s*(.*)$", re.MULTILINE)
_FIRST_OPTION = re.compile(r"^\s*A[.)]", re.MULTILINE)
_NEGATION = re.compile(r"\b(NOT|EXCEPT|LEAST|FALSE|incorrect|untrue|cannot|never)\b")
_OPERATOR = re.compile(r"[=+\-*/^×÷√]")
_STEP_WORDS = re.compile(
    r"\b(each|per|times|twice|half|third|quarter|percent|remaining|total|left|more than|less than"
    r"|fewer|average|ratio|every|double|triple)\b",
    re.IGNORECASE,
)
_UNIT = re.compile(
    r"\b(hours?|minutes?|seconds?|days?|weeks?|months?|years?|miles?|km|feet|inches|pounds?|kg|grams?"
    r"|liters?|gallons?|cups?|dollars?|cents?|percent)\b",
    re.IGNORECASE,
)
_NAME = re.compile(r"(?<![.?!]\s)(?<!^)\b[A-Z][a-z]+\b")  # a capitalised word not opening a sentence
_SENTENCE_BREAK = re.compile(r"(?<=[.?!])\s+")
_ROMAN_ITEM = re.compile(r"\b[ivx]+\.|\bI{1,3}\.")
_CLAUSE_END = re.compile(r"[.?!]\s")

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
QUESTION_NAMES = (
    "stem_chars",
    "stem_words",
    "stem_numbers",
    "stem_distinct_numbers",
    "options",
    "option_chars_mean",
    "option_chars_max",
    "option_chars_min",
    "option_chars_std",
    "options_with_numbers",
    "stem_negations",
    "statements",
    "which_of_the_following",
    "above_or_both",
    "operators",
    "dollar_signs",
    "parentheses",
    "backslashes",
    "step_words",
    "stem_commas",
    "stem_questions",
    "stem_sentences",
    "roman_items",
    "longest_stem_word",
    "stem_upper_share",
    "digit_share",
)
NUMBER_NAMES = (
    "max_log_value",
    "mean_log_value",
    "sum_log_value",
    "log_value_std",
    "log_product_first_8",
    "values_over_100",
    "values_over_1000",
    "non_integers",
    "distinct_values",
    "units",
    "distinct_units",
    "names",
    "asks_how_much",
    "asks_total",
    "ands",
    "sentences_split",
)
OPTION_NAMES = (
    "option_sim_mean",
    "option_sim_max",
    "stem_option_sim_mean",
    "stem_option_sim_spread",
    "option_sim_min",
    "option_sim_std",
    "stem_option_sim_max",
    "stem_options_centroid_sim",
    "option_centroid_sim_min",
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


def split_question(text: str) -> tuple[str, list[str]]:
    """(stem, options) of a multiple-choice prompt with lines "A." / "A)" ...; (text, []) otherwise."""
    options = [body for _, body in _OPTION.findall(text)]
    first = _FIRST_OPTION.search(text)
    if first is None or len(options) < 2:
        return text, []
    return text[: first.start()], options


def question_features(text: str) -> np.ndarray:
    """log(1 + value) of each of ``QUESTION_NAMES``, float64 (the option ones 0 without options)."""
    stem, options = split_question(text)
    lengths = np.array([len(o) for o in options], np.float64) if options else np.zeros(1)
    stem_numbers = _NUMBER.findall(stem)
    lowered = text.lower()
    values = (
        len(stem),
        len(stem.split()),
        len(stem_numbers),
        len(set(stem_numbers)),
        len(options),
        lengths.mean(),
        lengths.max(),
        lengths.min(),
        lengths.std(),
        sum(bool(_NUMBER.search(o)) for o in options),
        len(_NEGATION.findall(stem)),
        stem.count("Statement"),
        "which of the following" in lowered,
        "all of the above" in lowered or "none of the above" in lowered or "both" in lowered,
        len(_OPERATOR.findall(text)),
        text.count("$"),
        text.count("("),
        text.count("\\"),
        len(_STEP_WORDS.findall(text)),
        stem.count(","),
        stem.count("?"),
        sum(1 for part in _CLAUSE_END.split(stem) if part.strip()),
        len(_ROMAN_ITEM.findall(text)),
        max((len(word) for word in stem.split()), default=0),
        sum(c.isupper() for c in stem) / (1 + len(stem)),
        sum(c.isdigit() for c in text) / (1 + len(text)),
    )
    return np.log1p(np.array(values, np.float64))


def number_features(text: str) -> np.ndarray:
    """Each of ``NUMBER_NAMES``: magnitudes as log(1 + value), counts as log(1 + count), float64."""
    values = []
    for number in _NUMBER.findall(text):
        with contextlib.suppress(ValueError):  # "1.2.3": not one number
            values.append(float(number.replace(",", "")))
    # Capped: a 400-digit run is inf as a float, and one inf would make every score NaN.
    v = np.minimum(np.array(values), 1e12) if values else np.zeros(1)
    log_v = np.log1p(v)
    sentences = [part for part in _SENTENCE_BREAK.split(text.strip()) if part]
    last = (sentences[-1] if sentences else text).lower()
    units = [unit.lower().rstrip("s") for unit in _UNIT.findall(text)]
    return np.array(
        [
            log_v.max(),
            log_v.mean(),
            log_v.sum(),
            log_v.std(),
            np.log1p(np.prod(np.minimum(v[:8] + 1, 1e6))),  # capped: the product of 8 stays finite
            np.log1p((v >= 100).sum()),
            np.log1p((v >= 1000).sum()),
            np.log1p((v != np.round(v)).sum()),
            np.log1p(len(set(values))),
            np.log1p(len(units)),
            np.log1p(len(set(units))),
            np.log1p(len(set(_NAME.findall(text)))),
            "how much" in last,
            "total" in last or "altogether" in last,
            np.log1p(text.lower().count(" and ")),
            np.log1p(len(sentences)),
        ],
        np.float64,
    )


def option_features(text: str, embedder: Any, max_tokens: int | None = None) -> np.ndarray:
    """Cosines between the static embeddings of the options and the stem (``OPTION_NAMES``); zeros
    for a prompt without answer options. ``max_tokens`` bounds each part's word pieces."""
    stem, options = split_question(text)
    if not options:
        return np.zeros(len(OPTION_NAMES))
    vectors = embedder.embed_many(options, max_tokens=max_tokens)
    stem_vector = embedder.embed(stem, max_tokens=max_tokens)
    pairs = (vectors @ vectors.T)[np.triu_indices(len(options), 1)]
    to_stem = vectors @ stem_vector
    centroid = vectors.mean(0)
    centroid = centroid / (np.linalg.norm(centroid) + 1e-9)
    return np.array(
        [
            pairs.mean(),
            pairs.max(),
            to_stem.mean(),
            to_stem.max() - to_stem.min(),
            pairs.min(),
            pairs.std(),
            to_stem.max(),
            centroid @ stem_vector,
            (vectors @ centroid).min(),
        ],
        np.float64,
    )
