"""Prompt-injection and jailbreak detection: a rule layer and a small trained linear model.

    detector = InjectionDetector.load()          # the model shipped in guardrails/models/
    detector.score("Ignore previous instructions and ...")        # 0..1
    detector.check(text, threshold=0.5)  # Verdict(flagged=True, score=0.97, reason="rule:ignore-previous")

The **rules** (``injection_rules``) catch the classic payloads and jailbreak techniques by their
phrasing ("ignore all previous instructions", "reveal your system prompt", DAN-style personas,
refusal suppression, fake chat-markup turns) after undoing the usual disguises: Unicode
look-alikes and full-width letters, zero-width characters, leetspeak ("1gn0r3"), spacing or
punctuation between letters ("i.g.n.o.r.e"), and payloads encoded in base64 or Morse code, which
are decoded and checked in turn (rules and model). A rule hit flags the text whatever the model
says.

The **model** is logistic regression over hashed character 3-5-grams and word 1-2-grams
(``injection_features``), trained by ``scripts/train_injection.py`` and scored with numpy alone.
Its figures (cross-validated, leave-one-source-out) are in docs/guardrails.md.

What to scan is the caller's choice: the guard stage is expected to pass each user message and
each tool result (indirect injection arrives through tools) separately, not system prompts, which
the application wrote itself.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .injection_features import hashed_ngrams, linear_score, normalize
from .injection_rules import RuleSet, decoded_payloads

MODEL_PATH = Path(__file__).with_name("models") / "injection.npz"
# The shipped model's scores are shifted so that 0.5 is the operating point measured by the
# training script (see docs/guardrails.md); lower flags more, higher flags less.
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True, slots=True)
class Verdict:
    flagged: bool
    score: float  # the model's score, 0..1, also when a rule decided
    reason: str  # "rule:<name>", "model", or "" when not flagged


@dataclass(frozen=True)
class LinearModel:
    """Logistic regression over hashed n-gram buckets, as stored: int8 weights and one scale."""

    weights: np.ndarray  # float32, dequantised, one per bucket
    bias: float
    config: dict  # features (bits, char_n, word_n), weight scale, and how it was trained

    @classmethod
    def quantize(cls, coef: np.ndarray, intercept: float, config: dict) -> LinearModel:
        scale = float(np.abs(coef).max()) / 127 or 1.0
        q = np.round(coef / scale).astype(np.int8)
        return cls(q.astype(np.float32) * np.float32(scale), intercept, {**config, "scale": scale})

    def save(self, path: Path) -> None:
        scale = self.config["scale"]
        q = np.round(self.weights / scale).astype(np.int8)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:  # a file object: np.savez would append ".npz" to a str path
            np.savez_compressed(f, weights=q, bias=np.float64(self.bias), config=json.dumps(self.config))

    @classmethod
    def load(cls, path: Path) -> LinearModel:
        with np.load(path, allow_pickle=False) as data:
            config = json.loads(str(data["config"]))
            weights = data["weights"].astype(np.float32) * np.float32(config["scale"])
            return cls(weights, float(data["bias"]), config)

    def logit(self, normalized: str) -> float:
        c = self.config
        return self.bias + linear_score(
            hashed_ngrams(normalized, c["bits"], tuple(c["char_n"]), c["word_n"]), self.weights
        )

    def score(self, normalized: str) -> float:
        """0..1 for ``normalize(text)``.

        A linear model's score drifts upwards with length past the longest texts it was trained
        on (64,000 characters of exam passages scored ~0.5), so longer texts are scored in chunks
        of ``chunk_chars`` and the highest chunk counts: an injection sits in one place. Below
        ``short_words`` words the evidence is scaled down in proportion: in a one-word message
        that one word is the whole score ("instructions" alone scored 0.98).
        """
        if not normalized:
            return 0.0
        size = self.config.get("chunk_chars") or len(normalized)
        if len(normalized) > size:
            return max(self.score(chunk) for chunk in _chunks(normalized, size))
        z = self.logit(normalized)
        short = self.config.get("short_words")
        if short and (words := normalized.count(" ") + 1) < short:
            z = self.bias + (z - self.bias) * words / short
        return _sigmoid(z)

    def score_matrix(self, X) -> np.ndarray:
        """Scores of a training-side feature matrix (rows of ``featurize``), for the training script."""
        return 1.0 / (1.0 + np.exp(-(X @ self.weights.astype(np.float64) + self.bias)))


def _chunks(text: str, size: int) -> list[str]:
    """``text`` cut into pieces of at most ``size`` characters, at a space where there is one."""
    out = []
    while len(text) > size:
        cut = text.rfind(" ", size // 2, size)
        cut = cut if cut > 0 else size
        out.append(text[:cut])
        text = text[cut:].lstrip()
    return [*out, text] if text else out


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0


class InjectionDetector:
    """Rules plus the trained model. Thread-safe: nothing changes after ``load``."""

    def __init__(self, model: LinearModel, rules: RuleSet | None = None) -> None:
        self.model = model
        self.rules = rules or RuleSet()

    @classmethod
    def load(cls, path: Path | None = None) -> InjectionDetector:
        """The model shipped with the package (or another file written by the training script)."""
        return cls(LinearModel.load(path or MODEL_PATH))

    def score(self, text: str) -> float:
        """How much ``text`` looks like an injection or jailbreak, 0..1 (the model alone)."""
        return self.model.score(normalize(text))

    def check(self, text: str, threshold: float = DEFAULT_THRESHOLD) -> Verdict:
        """Flagged when a rule fires or the score reaches ``threshold``; rules are named first.

        Text decoded from base64 or Morse code inside ``text`` is checked too (rules, then the
        model); flagged there, the reason is ``rule:encoded-instructions``.
        """
        normalized = normalize(text)
        score = self.model.score(normalized)
        rule = self.rules.match(text, normalized, decode=False)
        if rule:
            return Verdict(True, score, f"rule:{rule}")
        payloads = [normalize(p) for p in decoded_payloads(text)]
        if any(self.rules.match(p, p, decode=False) for p in payloads):
            return Verdict(True, score, "rule:encoded-instructions")
        if score >= threshold:
            return Verdict(True, score, "model")
        for payload in payloads:
            hidden = self.model.score(payload)
            if hidden >= threshold:
                return Verdict(True, hidden, "rule:encoded-instructions")
        return Verdict(False, score, "")
