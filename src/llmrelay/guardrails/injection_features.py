"""Text -> hashed n-gram features, shared by the shipped injection model and its training script.

The detector must score a several-thousand-character prompt in well under a millisecond in plain
numpy, so nothing here loops over n-grams in Python. Every n-gram's hash is a polynomial hash of
its code points, computed for all positions at once from one prefix sum: with
``G[i] = sum(c[k] * P**k for k < i)`` (mod 2**64), the n-gram starting at ``i`` hashes to
``(G[i+n] - G[i]) * P**-i``, exact because P is odd and so invertible mod 2**64. A
multiply-shift step then maps each hash to one of ``2**bits`` buckets. Python's own ``hash`` is
salted per process and could not be used: the same text must land in the same buckets at training
and at serving time.

Features are character n-grams (which survive typos, leetspeak and odd spacing) and word
uni/bi-grams (which carry phrases such as "previous instructions"), counted, log-scaled and
L2-normalised, the usual input of a linear text classifier.
"""

from __future__ import annotations

import re
import unicodedata

import numpy as np

_P = np.uint64(0x100000001B3)  # FNV prime: odd, so invertible mod 2**64
_P_INV = np.uint64(pow(int(_P), -1, 2**64))
_MIX = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing multiplier
# Different salts keep a 3-gram and a word that happen to share a polynomial hash apart.
_SALT_CHAR = np.uint64(0x51ED270B27D4A1F3)
_SALT_WORD = np.uint64(0x2545F4914F6CDD1D)

# Zero-width and other invisible format characters used to split trigger words ("ig\u200bnore").
_INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff]"
)
# "🇭🇴🇼" spells "how" in flag-emoji letters, a way of hiding words from filters.
_REGIONAL = re.compile("[\U0001f1e6-\U0001f1ff]")
_REGIONAL_TO_ASCII = {0x1F1E6 + i: chr(ord("a") + i) for i in range(26)}
# Word characters: ASCII letters and digits, and anything non-ASCII except the general and CJK
# punctuation blocks (a code-point test numpy can vectorise; exactness does not matter, only that
# training and serving agree).
_ASCII_WORD = np.array([chr(c).isalnum() for c in range(128)] + [True])


def _powers(base: np.uint64, n: int) -> np.ndarray:
    """base**k mod 2**64 for k < n (uint64 products wrap, which is the modulus we want)."""
    p = np.full(n, base, dtype=np.uint64)
    p[0] = 1
    return np.cumprod(p)


# Built once (1 MB); longer texts build their own for the call, so nothing is ever mutated.
_TABLE_SIZE = 1 << 16
_P_POW, _P_INV_POW = _powers(_P, _TABLE_SIZE), _powers(_P_INV, _TABLE_SIZE)


def normalize(text: str) -> str:
    """NFKC (folds full-width and styled letters), invisible characters dropped, regional-indicator
    emoji read as the letters they show, lower case, whitespace runs collapsed to one space."""
    text = _INVISIBLE.sub("", unicodedata.normalize("NFKC", text))
    if _REGIONAL.search(text):
        text = text.translate(_REGIONAL_TO_ASCII)
    return " ".join(text.lower().split())


def _pow_tables(n: int) -> tuple[np.ndarray, np.ndarray]:
    """P**k and P**-k for k < n."""
    if n <= _TABLE_SIZE:
        return _P_POW, _P_INV_POW
    return _powers(_P, n), _powers(_P_INV, n)


def hashed_ngrams(normalized: str, bits: int, char_n: tuple[int, int], word_n: int) -> np.ndarray:
    """Bucket ids (with repeats) of the char n-grams and word n-grams of ``normalize(text)``."""
    # utf-32 gives one uint32 per code point, so array positions are character positions;
    # "surrogatepass" because a library caller's str may hold a lone surrogate.
    codes = np.frombuffer((" " + normalized + " ").encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    n_chars = len(codes)
    p, q = _pow_tables(n_chars + 1)
    g = np.zeros(n_chars + 1, dtype=np.uint64)
    np.cumsum(codes * p[:n_chars], out=g[1:])
    hashes = []
    for n in range(char_n[0], min(char_n[1], n_chars) + 1):
        hashes.append(((g[n:] - g[:-n]) * q[: n_chars - n + 1]) ^ (_SALT_CHAR + np.uint64(n)))
    if word_n:
        # The text is padded with spaces, so word runs start and end strictly inside it.
        is_word = _ASCII_WORD[np.minimum(codes, 128)]
        is_word &= (codes < 0x2000) | (codes >= 0x2070)
        is_word &= (codes < 0x3000) | (codes >= 0x3040)
        edges = np.diff(is_word.view(np.int8))
        starts, ends = np.flatnonzero(edges == 1) + 1, np.flatnonzero(edges == -1) + 1
        unigrams = (g[ends] - g[starts]) * q[starts]
        h = unigrams
        for n in range(1, min(word_n, len(unigrams)) + 1):
            if n > 1:  # the n-gram hash extends the (n-1)-gram's by one more word
                h = h[:-1] * _P + unigrams[n - 1 :]
            hashes.append(h ^ (_SALT_WORD + np.uint64(n)))
    if not hashes:
        return np.zeros(0, dtype=np.intp)
    # Multiply-shift: the top ``bits`` bits of hash * odd constant are well mixed.
    return ((np.concatenate(hashes) * _MIX) >> np.uint64(64 - bits)).astype(np.intp)


def featurize(text: str, bits: int, char_n: tuple[int, int], word_n: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct bucket ids and their values, (1 + log count) L2-normalised: the training form."""
    ids, counts = np.unique(hashed_ngrams(normalize(text), bits, char_n, word_n), return_counts=True)
    values = 1.0 + np.log(counts)
    norm = np.sqrt((values * values).sum())
    return ids, values / norm if norm else values


def linear_score(buckets: np.ndarray, weights: np.ndarray) -> float:
    """``weights . featurize(...)`` without sorting: the same sum, taken per occurrence.

    A bucket seen c times contributes w * (1 + log c) once; over its c occurrences that is
    w * (1 + log c) / c each. The norm is summed the same way.
    """
    if len(buckets) < 1024:  # sorting a few hundred ids beats zeroing a 2**bits counts table
        ids, counts = np.unique(buckets, return_counts=True)
        values = 1.0 + np.log(counts)
        norm = np.sqrt((values * values).sum())
        return float((weights[ids] * values).sum() / norm) if norm else 0.0
    counts = np.bincount(buckets)[buckets]
    values = 1.0 + np.log(counts)
    per_occurrence = values / counts
    # Sums of products rather than ``@``: a BLAS dot may start threads, and under load waiting
    # for them cost milliseconds here.
    norm = np.sqrt((per_occurrence * values).sum())
    return float((per_occurrence * weights[buckets]).sum() / norm)
