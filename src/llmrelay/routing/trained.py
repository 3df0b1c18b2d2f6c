"""The trained router: a small model, learned from labelled examples, that says when the weak model will not do.

    router = train(rows, strong_share=0.3)      # or target_quality=0.95
    router.save("router.npz")
    router = TrainedRouter.load("router.npz")
    router.score(prompt_text(messages)) >= router.threshold   # -> send to the strong model

Each row says how the weak and the strong model did on one prompt (``examples.example_from_row``).
The router estimates how likely the strong model is to do better, from views of the prompt, each a
small model (``learners``; features in ``features``):

- ``ngram``: logistic regression over hashed word 1-2-grams (the featuriser of the injection
  detector, ``guardrails.injection_features``);
- ``embedding``: logistic regression over the prompt's static MiniLM embedding;
- ``knn``: the share of the k most similar training prompts (by static embedding) on which the
  strong model did better, weighted by similarity ** 20;
- ``structure``: logistic regression over shape counts, the question's wording, the numbers of a
  word problem, and how alike its answer options are (static embeddings of each option and stem);
- ``shape``: the same without the option similarities, for routers without the embedding model.

Each view predicts two things, whether the strong model does better and whether the weak one does
(it sometimes does: 262 of 4,801 MMLU questions), and scores their difference, the expected gain of
calling the strong model. The views' scores live on different scales, so each is mapped to its
percentile among out-of-fold training scores, and the router's score is a weighted mean percentile,
each view weighted by how much better than chance it routed in cross-validation on the training data
(its APGR - 0.5; a view no better than chance is dropped). The threshold is calibrated on those
cross-validated scores, so it holds on prompts the model has not seen. Scoring is numpy alone (plus
the tokenizer); bench/routing.py measures its cost.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..guardrails.injection_features import featurize
from .evaluation import router_curve
from .examples import Example, example_from_row, examples_from_rows, prompt_text
from .learners import SparseRows, fit_dense_logreg, fit_sparse_logreg, knn_mean, sigmoid

__all__ = ["TrainedRouter", "train", "prompt_text", "Example", "example_from_row", "examples_from_rows"]

FORMAT = "llmrelay-trained-router/3"
# Word 1-2-grams only (char_n is an empty range): character n-grams routed no better in the bench
# and made training ten times slower.
NGRAMS = {"bits": 16, "char_n": [1, 0], "word_n": 2}
ALL_VIEWS = ("ngram", "embedding", "knn", "structure", "shape")
VIEWS = ("ngram", "embedding", "knn", "structure")  # the default
TEXT_VIEWS = ("ngram", "shape")  # the views that need no embedding model
_NEEDS_VECTORS = {"embedding", "knn", "structure"}
LEVELS = 101  # percentiles stored per view
MAX_TOKENS = 512  # word pieces of a prompt the embedding reads: bounds the cost of a huge prompt
KNN_POWER = 20.0  # neighbours weighted by similarity ** 20: the closest few count most (bench/routing.py)


@dataclass
class TrainedRouter:
    """``score(text)``: higher = more likely the strong model is needed; 0..1, a mean percentile."""

    threshold: float  # score >= threshold -> strong model
    arrays: dict[str, np.ndarray]  # each view's parameters and percentile table
    config: dict[str, Any] = field(default_factory=dict)  # views, features, and how it was trained
    _embedder: Any = field(default=None, repr=False, compare=False)

    @property
    def views(self) -> tuple[str, ...]:
        return tuple(self.config["views"])

    def score(self, text: str) -> float:
        return float(self.score_many([text])[0])

    @property
    def weights(self) -> dict[str, float]:
        """Each view's weight in the score (they sum to 1)."""
        return dict(zip(self.views, self.config["weights"], strict=True))

    def score_many(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0)
        inputs = _Inputs.of(texts, self._embedder_if_needed())
        return _mean_percentile(self.arrays, _view_scores(self.arrays, self.views, inputs), self.weights)

    def _embedder_if_needed(self):  # type: ignore[no-untyped-def]
        if self._embedder is None and _NEEDS_VECTORS & set(self.views):
            from ..static_embedding import shared_static_embedder

            self._embedder = shared_static_embedder()
        return self._embedder

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {**self.config, "format": FORMAT, "threshold": self.threshold}
        arrays = {**self.arrays, "meta": np.array(json.dumps(meta, sort_keys=True))}
        if "knn.vectors" in arrays:
            arrays["knn.vectors"] = arrays["knn.vectors"].astype(np.float16)
        _write_npz(path, arrays)

    @classmethod
    def load(cls, path: str | Path) -> TrainedRouter:
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                arrays = {k: data[k] for k in data.files if k != "meta"}
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
            raise ConfigError(f"{path} is not a trained router file: {exc}") from None
        if meta.pop("format", None) != FORMAT:
            raise ConfigError(f"{path} is not a {FORMAT} file (retrain it with `llmrelay router train`)")
        arrays = {k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in arrays.items()}
        router = cls(float(meta.pop("threshold")), arrays, meta)
        router._embedder_if_needed()  # now, not on the first request (and a missing model fails here)
        return router


# --- the views ---------------------------------------------------------------------------------


def _ngram_features(text: str) -> tuple[np.ndarray, np.ndarray]:
    return featurize(text, NGRAMS["bits"], tuple(NGRAMS["char_n"]), NGRAMS["word_n"])


@dataclass
class _Inputs:
    """Every view's input for a list of texts, computed once."""

    ngrams: list[tuple[np.ndarray, np.ndarray]]
    vectors: np.ndarray | None  # static embeddings, when a view needs them
    shapes: np.ndarray  # shape counts, question wording, numbers (the ``shape`` view)
    options: np.ndarray | None  # answer-option similarities, with the embedder

    @classmethod
    def of(cls, texts: list[str], embedder: Any | None) -> _Inputs:
        from .features import number_features, option_features, question_features, shape_features

        shapes = np.stack(
            [np.concatenate([shape_features(t), question_features(t), number_features(t)]) for t in texts]
        )
        if embedder is None:
            return cls([_ngram_features(t) for t in texts], None, shapes, None)
        vectors = embedder.embed_many(texts, max_tokens=MAX_TOKENS)
        options = np.stack([option_features(t, embedder, MAX_TOKENS) for t in texts])
        return cls([_ngram_features(t) for t in texts], vectors, shapes, options)

    @property
    def structure(self) -> np.ndarray:
        """The ``structure`` view's features: shapes and option similarities."""
        assert self.options is not None
        return np.hstack([self.shapes, self.options])

    def take(self, idx: np.ndarray) -> _Inputs:
        vectors = self.vectors[idx] if self.vectors is not None else None
        options = self.options[idx] if self.options is not None else None
        return _Inputs([self.ngrams[i] for i in idx], vectors, self.shapes[idx], options)


def _fit_pair(
    fit: Callable[[np.ndarray], tuple[np.ndarray, float]], outcomes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One logistic model per outcome column: weights (d, 2) and biases (2,)."""
    weights, biases = [], []
    for column in outcomes.T:
        if (
            column.min() == column.max()
        ):  # nothing to learn: a constant (e.g. no row where the weak model won)
            w, b = None, 40.0 if column[0] else -40.0
        else:
            w, b = fit(column)
        weights.append(w)
        biases.append(b)
    dim = next((len(w) for w in weights if w is not None), 0)
    stacked = np.stack([w if w is not None else np.zeros(dim) for w in weights], axis=1)
    return stacked, np.array(biases)


def _fit_views(inputs: _Inputs, outcomes: np.ndarray, views: tuple[str, ...]) -> dict[str, np.ndarray]:
    """``outcomes``: (n, 2), whether the strong model did better, and whether the weak one did."""
    arrays: dict[str, np.ndarray] = {}
    if "ngram" in views:
        rows, dim = SparseRows.of(inputs.ngrams), 1 << NGRAMS["bits"]
        w, b = _fit_pair(lambda y: fit_sparse_logreg(rows, y, dim), outcomes)
        arrays |= {"ngram.w": w.astype(np.float32), "ngram.b": b}
    if "embedding" in views:
        w, b = _fit_pair(lambda y: fit_dense_logreg(inputs.vectors, y, l2=1.0), outcomes)
        arrays |= {"embedding.w": w, "embedding.b": b}
    if "knn" in views:
        # k ~ a quarter of the rows, at most 100: small neighbourhoods were noisy in the bench.
        k = max(1, min(100, len(outcomes) // 4))
        arrays |= {
            # Stored as float16 (half the file); kept in memory as float32 values that float16 holds
            # exactly, so a router scores the same before and after a save and load, without a
            # per-query conversion of the whole matrix.
            "knn.vectors": inputs.vectors.astype(np.float16).astype(np.float32),
            "knn.targets": outcomes[:, 0].astype(np.float32),
            "knn.k": np.int64(k),
            "knn.power": np.float64(KNN_POWER),
        }
    for view in ("structure", "shape"):
        if view in views:
            x = inputs.structure if view == "structure" else inputs.shapes
            mean, std = x.mean(0), x.std(0) + 1e-9
            w, b = _fit_pair(lambda y, z=(x - mean) / std: fit_dense_logreg(z, y, l2=1.0), outcomes)
            arrays |= {f"{view}.w": w, f"{view}.b": b, f"{view}.mean": mean, f"{view}.std": std}
            arrays |= {f"{view}.low": x.min(0), f"{view}.high": x.max(0)}
    return arrays


def _gain(z: np.ndarray) -> np.ndarray:
    """P(strong does better) - P(weak does better), from the two models' logits (n, 2)."""
    p = sigmoid(z)
    return p[:, 0] - p[:, 1]


def _view_scores(
    arrays: dict[str, np.ndarray], views: tuple[str, ...], inputs: _Inputs
) -> dict[str, np.ndarray]:
    """Each view's score for each input: the expected gain of the strong model, or the kNN share."""
    out: dict[str, np.ndarray] = {}
    if "ngram" in views:
        rows = SparseRows.of(inputs.ngrams)
        w = arrays["ngram.w"]
        out["ngram"] = _gain(np.stack([rows.dot(w[:, 0]), rows.dot(w[:, 1])], axis=1) + arrays["ngram.b"])
    if "embedding" in views:
        out["embedding"] = _gain(inputs.vectors @ arrays["embedding.w"] + arrays["embedding.b"])
    if "knn" in views:
        out["knn"] = knn_mean(
            arrays["knn.vectors"],
            arrays["knn.targets"],
            inputs.vectors,
            int(arrays["knn.k"]),
            float(arrays["knn.power"]),
        )
    for view in ("structure", "shape"):
        if view in views:
            x = inputs.structure if view == "structure" else inputs.shapes
            # Clipped to the training range: a linear model extrapolating a count or a magnitude it
            # never saw (a 50-digit number, a 30-page prompt) would swamp every other feature.
            x = np.clip(x, arrays[f"{view}.low"], arrays[f"{view}.high"])
            standard = (x - arrays[f"{view}.mean"]) / arrays[f"{view}.std"]
            out[view] = _gain(standard @ arrays[f"{view}.w"] + arrays[f"{view}.b"])
    return out


def _mean_percentile(
    arrays: dict[str, np.ndarray], scores: dict[str, np.ndarray], weights: Mapping[str, float]
) -> np.ndarray:
    """Each view's score as its percentile among the training prompts' scores, weighted-averaged."""
    levels = np.linspace(0, 1, LEVELS)
    return np.sum([weights[v] * np.interp(s, arrays[f"{v}.cdf"], levels) for v, s in scores.items()], axis=0)


# --- training ----------------------------------------------------------------------------------


def train(
    rows: Iterable[Mapping[str, Any] | Example],
    *,
    seed: int = 0,
    strong_share: float = 0.3,
    target_quality: float | None = None,
    folds: int = 5,
    views: Iterable[str] = VIEWS,
    embedder: Any | None = None,
) -> TrainedRouter:
    """Fit a router on ``rows`` and calibrate its threshold on out-of-fold scores.

    The threshold sends ``strong_share`` of the training prompts to the strong model, or, with
    ``target_quality``, the fewest that keep the routed performance at that fraction of the
    all-strong performance. ``views`` are the candidate views (``TEXT_VIEWS`` need no embedding
    model); each is weighted by its cross-validated APGR - 0.5, and one no better than chance is
    dropped. ``config["report"]`` says what was done (rows, cross-validated APGR and CPT).
    """
    views = _check(views, strong_share, target_quality)
    examples = examples_from_rows(rows)
    weak = np.array([e.weak for e in examples])
    strong = np.array([e.strong for e in examples])
    outcomes = np.stack([strong > weak, weak > strong], axis=1).astype(np.float64)
    if _NEEDS_VECTORS & set(views) and embedder is None:
        from ..static_embedding import shared_static_embedder

        embedder = shared_static_embedder()
    inputs = _Inputs.of([e.text for e in examples], embedder if _NEEDS_VECTORS & set(views) else None)

    out_of_fold = _cross_validated(inputs, outcomes, views, seed=seed, folds=folds)
    cross_validated = out_of_fold is not None
    measurable = cross_validated and weak.mean() != strong.mean()
    tables = (
        {f"{v}.cdf": np.quantile(out_of_fold[v], np.linspace(0, 1, LEVELS)) for v in views}
        if out_of_fold
        else {}
    )
    weights = _view_weights(out_of_fold, weak, strong) if measurable else {v: 1 / len(views) for v in views}
    views = tuple(weights)
    arrays = _fit_views(inputs, outcomes, views)
    if out_of_fold is None:  # too few rows to cross-validate: in-sample scores, the best there is
        out_of_fold = _view_scores(arrays, views, inputs)
        tables = {f"{v}.cdf": np.quantile(out_of_fold[v], np.linspace(0, 1, LEVELS)) for v in views}
    arrays |= {f"{v}.cdf": tables[f"{v}.cdf"] for v in views}
    scores = _mean_percentile(arrays, {v: out_of_fold[v] for v in views}, weights)
    threshold, share, quality = _calibrate(scores, weak, strong, strong_share, target_quality)
    report: dict[str, Any] = {
        "rows": len(examples),
        "strong_better": int(outcomes[:, 0].sum()),
        "weak_better": int(outcomes[:, 1].sum()),
        "folds": folds if cross_validated else 0,
        "seed": seed,
        "strong_share": round(share, 4),
        "quality": round(quality, 4),
        "target": {"quality": target_quality}
        if target_quality is not None
        else {"strong_share": strong_share},
    }
    if measurable:
        curve = router_curve(scores, weak, strong)
        report |= {
            "cv_apgr": round(curve.apgr, 4),
            "cv_cpt50": round(curve.cpt(0.5), 2),
            "cv_cpt80": round(curve.cpt(0.8), 2),
        }
    config = {
        "views": list(views),
        "weights": [weights[v] for v in views],
        "ngrams": NGRAMS,
        "report": report,
    }
    return TrainedRouter(threshold, arrays, config, embedder if _NEEDS_VECTORS & set(views) else None)


def _check(views: Iterable[str], strong_share: float, target_quality: float | None) -> tuple[str, ...]:
    chosen = set(views)
    if not chosen or chosen - set(ALL_VIEWS):
        raise ConfigError(
            f"views must be some of {', '.join(ALL_VIEWS)}, not {', '.join(sorted(chosen)) or 'none'}"
        )
    if not 0.0 <= strong_share <= 1.0:
        raise ConfigError(f"strong_share must be between 0 and 1, not {strong_share}")
    if target_quality is not None and not 0.0 < target_quality <= 1.0:
        raise ConfigError(f"target_quality must be in (0, 1], not {target_quality}")
    return tuple(v for v in ALL_VIEWS if v in chosen)


def _view_weights(
    out_of_fold: dict[str, np.ndarray], weak: np.ndarray, strong: np.ndarray
) -> dict[str, float]:
    """Each view's weight: its cross-validated APGR - 0.5 (how much better than chance it routes),
    normalised to sum to 1; views no better than chance are left out (all kept, equal, if none is).

    A view that helps on one kind of traffic can be weak on another (the nearest-neighbour view on
    GSM8K, where every prompt is an arithmetic word problem), so the data sets the weights. Picking
    the best subset of views instead, as v2 did, fitted the fold noise: 0.662 against 0.670 for
    equal weights on MMLU in the bench's outer cross-validation.
    """
    edge = {v: router_curve(s, weak, strong).apgr - 0.5 for v, s in out_of_fold.items()}
    useful = {v: e for v, e in edge.items() if e > 1e-6}  # 0.5 itself comes out as 0.5 +- rounding
    if not useful:
        return {v: 1 / len(edge) for v in edge}
    total = sum(useful.values())
    return {v: e / total for v, e in useful.items()}


def _cross_validated(
    inputs: _Inputs, outcomes: np.ndarray, views: tuple[str, ...], *, seed: int, folds: int
) -> dict[str, np.ndarray] | None:
    """Each view's out-of-fold scores (every prompt scored by a model that did not train on it)."""
    n = len(outcomes)
    if folds < 2 or n < 2 * folds:
        return None
    fold_of = np.random.default_rng(seed).permutation(n) % folds
    scores = {v: np.empty(n) for v in views}
    for k in range(folds):
        test, train_idx = np.flatnonzero(fold_of == k), np.flatnonzero(fold_of != k)
        arrays = _fit_views(inputs.take(train_idx), outcomes[train_idx], views)
        for view, values in _view_scores(arrays, views, inputs.take(test)).items():
            scores[view][test] = values
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
