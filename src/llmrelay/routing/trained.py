"""The trained router: a small model, learned from labelled examples, that says when the weak model will not do.

    router = train(rows, strong_share=0.3)      # or target_quality=0.95
    router.save("router.npz")
    router = TrainedRouter.load("router.npz")
    router.score(prompt_text(messages)) >= router.threshold   # -> send to the strong model

Each row says how the weak and the strong model did on one prompt (see ``examples_from_rows``).
The model predicts P(strong model does better than the weak one | prompt text): logistic
regression over hashed character and word n-grams (``guardrails.injection_features``, shared
with the injection detector), fitted here in numpy. Scoring is numpy alone and takes well under a
millisecond. The threshold is calibrated on cross-validated (out-of-fold) scores, so it holds on
prompts the model has not seen rather than on its own training set.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..guardrails.injection_features import featurize, hashed_ngrams, linear_score, normalize
from .evaluation import router_curve

FORMAT = "llmrelay-trained-router/1"
NGRAMS = {"bits": 16, "char_n": [3, 5], "word_n": 2}


@dataclass(frozen=True, slots=True)
class Example:
    text: str
    weak: float  # how the weak model did: 1/0 correctness, or a judge score
    strong: float

    @property
    def target(self) -> float:
        """1 when the strong model does better, the thing the router predicts."""
        return 1.0 if self.strong > self.weak else 0.0


def prompt_text(messages: Iterable[Any]) -> str:
    """The text a router scores: the last user message (dicts or ``types.Message``).

    The last user turn is what the answer depends on most; earlier turns and the system prompt
    mostly repeat across requests of one application and would blur the signal. A request with no
    user message falls back to all its text.
    """
    messages = list(messages)
    users = [m for m in messages if _get(m, "role") == "user"]
    return "\n".join(_content_text(_get(m, "content")) for m in (users[-1:] or messages)).strip()


def _get(message: Any, key: str) -> Any:
    return message.get(key) if isinstance(message, Mapping) else getattr(message, key, None)


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:  # OpenAI and Anthropic content parts both use {"type": "text", "text": ...}
        if _get(part, "type") == "text" and isinstance(_get(part, "text"), str):
            parts.append(_get(part, "text"))
    return "\n".join(parts)


def examples_from_rows(rows: Iterable[Mapping[str, Any] | Example]) -> list[Example]:
    """Training rows -> examples; a bad row raises ``ConfigError`` naming its (1-based) number."""
    examples = []
    for n, row in enumerate(rows, 1):
        try:
            examples.append(row if isinstance(row, Example) else example_from_row(row))
        except ConfigError as exc:
            raise ConfigError(f"row {n}: {exc.message}") from None
    if not examples:
        raise ConfigError("no training rows")
    return examples


def example_from_row(row: Any) -> Example:
    """One training row -> an example, or ``ConfigError`` saying what is wrong with it.

    A row has the prompt as ``prompt`` (a string) or ``messages`` (chat messages), and one of:
    ``weak_correct`` + ``strong_correct`` (booleans), ``label`` (``"weak"``: the weak model will
    do, ``"strong"``: it will not), or ``weak_score`` + ``strong_score`` (numbers, e.g. judge
    scores; higher is better).
    """
    if not isinstance(row, Mapping):
        raise ConfigError(f"expected a JSON object, got {type(row).__name__}")
    if isinstance(row.get("prompt"), str):
        text = row["prompt"]
    elif isinstance(row.get("messages"), list):
        text = prompt_text(row["messages"])
    else:
        raise ConfigError("needs 'prompt' (a string) or 'messages' (a list of chat messages)")
    if not text.strip():
        raise ConfigError("the prompt is empty")
    return Example(text, *_outcome(row))


def _outcome(row: Mapping[str, Any]) -> tuple[float, float]:
    if "weak_correct" in row or "strong_correct" in row:
        weak, strong = row.get("weak_correct"), row.get("strong_correct")
        if not isinstance(weak, bool) or not isinstance(strong, bool):
            raise ConfigError("'weak_correct' and 'strong_correct' must both be true or false")
        return float(weak), float(strong)
    if "label" in row:
        if row["label"] not in ("weak", "strong"):
            raise ConfigError(f'\'label\' must be "weak" or "strong", not {row["label"]!r}')
        return (1.0, 1.0) if row["label"] == "weak" else (0.0, 1.0)
    if "weak_score" in row or "strong_score" in row:
        weak, strong = row.get("weak_score"), row.get("strong_score")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (weak, strong)):
            raise ConfigError("'weak_score' and 'strong_score' must both be numbers")
        return float(weak), float(strong)  # type: ignore[arg-type]
    raise ConfigError("needs 'weak_correct'+'strong_correct', 'label', or 'weak_score'+'strong_score'")


@dataclass
class TrainedRouter:
    """Logistic regression over hashed n-grams; ``score`` is P(the strong model is needed)."""

    weights: np.ndarray  # float32, one per n-gram bucket
    bias: float
    threshold: float  # score >= threshold -> strong model
    config: dict[str, Any] = field(default_factory=dict)  # features and how it was trained

    def score(self, text: str) -> float:
        c = self.config["ngrams"]
        buckets = hashed_ngrams(normalize(text), c["bits"], tuple(c["char_n"]), c["word_n"])
        z = self.bias + linear_score(buckets, self.weights)
        return float(1.0 / (1.0 + np.exp(-z)))

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {**self.config, "format": FORMAT, "bias": self.bias, "threshold": self.threshold}
        arrays = {
            "weights": self.weights.astype(np.float32),
            "meta": np.array(json.dumps(meta, sort_keys=True)),
        }
        _write_npz(path, arrays)

    @classmethod
    def load(cls, path: str | Path) -> TrainedRouter:
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                weights = data["weights"].astype(np.float32)
        except (OSError, KeyError, ValueError) as exc:
            raise ConfigError(f"{path} is not a trained router file: {exc}") from None
        if meta.pop("format", None) != FORMAT:
            raise ConfigError(f"{path} is not a {FORMAT} file")
        return cls(weights, float(meta.pop("bias")), float(meta.pop("threshold")), meta)


def train(
    rows: Iterable[Mapping[str, Any] | Example],
    *,
    seed: int = 0,
    strong_share: float = 0.3,
    target_quality: float | None = None,
    folds: int = 5,
) -> TrainedRouter:
    """Fit a router on ``rows`` and calibrate its threshold on out-of-fold scores.

    The threshold sends ``strong_share`` of the training prompts to the strong model, or, with
    ``target_quality``, the fewest that keep the routed performance at that fraction of the
    all-strong performance. ``config["report"]`` says what was done (rows, cross-validated APGR).
    """
    if not 0.0 <= strong_share <= 1.0:
        raise ConfigError(f"strong_share must be between 0 and 1, not {strong_share}")
    if target_quality is not None and not 0.0 < target_quality <= 1.0:
        raise ConfigError(f"target_quality must be in (0, 1], not {target_quality}")
    examples = examples_from_rows(rows)
    features = [_features(e.text) for e in examples]
    y = np.array([e.target for e in examples])
    weak = np.array([e.weak for e in examples])
    strong = np.array([e.strong for e in examples])

    out_of_fold = _cross_validated(features, y, seed=seed, folds=folds)
    weights, bias = _fit(features, y)
    scores = out_of_fold if out_of_fold is not None else _predict(features, weights, bias)
    threshold, share, quality = _calibrate(scores, weak, strong, strong_share, target_quality)
    report: dict[str, Any] = {
        "rows": len(examples),
        "strong_better": int(y.sum()),
        "folds": folds if out_of_fold is not None else 0,
        "seed": seed,
        "strong_share": round(share, 4),
        "quality": round(quality, 4),
        "target": {"quality": target_quality}
        if target_quality is not None
        else {"strong_share": strong_share},
    }
    if out_of_fold is not None and weak.mean() != strong.mean():
        curve = router_curve(out_of_fold, weak, strong)
        report |= {"cv_apgr": round(curve.apgr, 4), "cv_cpt50": round(curve.cpt(0.5), 2)}
    config = {"model": "ngram-logreg", "ngrams": NGRAMS, "report": report}
    return TrainedRouter(weights.astype(np.float32), float(bias), float(threshold), config)


# --- fitting -----------------------------------------------------------------------------------


def _features(text: str) -> tuple[np.ndarray, np.ndarray]:
    return featurize(text, NGRAMS["bits"], tuple(NGRAMS["char_n"]), NGRAMS["word_n"])


def _sparse(features: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = np.concatenate([np.full(len(ids), i) for i, (ids, _) in enumerate(features)])
    cols = np.concatenate([ids for ids, _ in features])
    vals = np.concatenate([v for _, v in features])
    return rows, cols, vals


def _predict(features: list[tuple[np.ndarray, np.ndarray]], weights: np.ndarray, bias: float) -> np.ndarray:
    rows, cols, vals = _sparse(features)
    z = bias + np.bincount(rows, weights=vals * weights[cols], minlength=len(features))
    return 1.0 / (1.0 + np.exp(-z))


def _fit(
    features: list[tuple[np.ndarray, np.ndarray]], y: np.ndarray, *, l2: float = 1e-3, steps: int = 300
) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression, full-batch Adam on the sparse rows (deterministic)."""
    rows, cols, vals = _sparse(features)
    dim, n = 1 << NGRAMS["bits"], len(y)
    w = np.zeros(dim + 1)  # the last entry is the bias
    m, v = np.zeros_like(w), np.zeros_like(w)
    lr, b1, b2 = 0.05, 0.9, 0.999
    for t in range(1, steps + 1):
        z = w[-1] + np.bincount(rows, weights=vals * w[cols], minlength=n)
        resid = (1.0 / (1.0 + np.exp(-z)) - y) / n
        grad = np.empty_like(w)
        grad[:-1] = np.bincount(cols, weights=vals * resid[rows], minlength=dim) + l2 * w[:-1]
        grad[-1] = resid.sum()
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad * grad
        w -= lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + 1e-8)
    return w[:-1], float(w[-1])


def _cross_validated(
    features: list[tuple[np.ndarray, np.ndarray]], y: np.ndarray, *, seed: int, folds: int
) -> np.ndarray | None:
    """Out-of-fold scores (each prompt scored by a model that did not train on it), or None if too few rows."""
    if folds < 2 or len(y) < 2 * folds:
        return None
    fold_of = np.random.default_rng(seed).permutation(len(y)) % folds
    scores = np.empty(len(y))
    for k in range(folds):
        test = fold_of == k
        train_idx, test_idx = np.flatnonzero(~test), np.flatnonzero(test)
        weights, bias = _fit([features[i] for i in train_idx], y[train_idx])
        scores[test_idx] = _predict([features[i] for i in test_idx], weights, bias)
    return scores


def _calibrate(
    scores: np.ndarray,
    weak: np.ndarray,
    strong: np.ndarray,
    strong_share: float,
    target_quality: float | None,
) -> tuple[float, float, float]:
    """(threshold, resulting strong share, resulting quality as a fraction of all-strong)."""
    candidates = np.concatenate([np.unique(scores), [np.inf]])  # inf: nothing goes strong

    def outcome(threshold: float) -> tuple[float, float]:
        to_strong = scores >= threshold
        routed = np.where(to_strong, strong, weak).mean()
        return float(to_strong.mean()), float(routed / strong.mean()) if strong.mean() else 1.0

    if target_quality is None:
        # The smallest candidate whose share does not exceed the target (ties stay together).
        shares = np.array([(scores >= c).mean() for c in candidates])
        threshold = float(candidates[np.argmax(shares <= strong_share + 1e-12)])
    else:
        # The highest threshold (fewest strong calls) that still meets the quality target.
        threshold = float(candidates[0])
        for c in candidates[::-1]:
            if outcome(c)[1] >= target_quality - 1e-12:
                threshold = float(c)
                break
    share, quality = outcome(threshold)
    return threshold, share, quality


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez_compressed`` with fixed zip timestamps, so one model always gives the same bytes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asanyarray(array), allow_pickle=False)
            archive.writestr(
                zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)),
                buffer.getvalue(),
                zipfile.ZIP_DEFLATED,
            )
