"""The small learners behind the trained router, fitted and applied in numpy (deterministic, no sklearn).

- ``SparseRows`` + ``fit_sparse_logreg``: logistic regression over hashed n-gram buckets (a prompt
  has a few hundred of 65k buckets), full-batch Adam on the summed rows;
- ``fit_dense_logreg``: logistic regression over a few hundred dense features, by Newton's method
  (a few exact steps on a d x d system, no learning rate to tune);
- ``knn_mean``: the mean target of the k most similar training prompts (cosine on unit vectors).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))


@dataclass(frozen=True)
class SparseRows:
    """Rows of (bucket ids, values) in coordinate form, for products with a weight vector."""

    rows: np.ndarray
    cols: np.ndarray
    vals: np.ndarray
    n: int

    @classmethod
    def of(cls, features: list[tuple[np.ndarray, np.ndarray]]) -> SparseRows:
        if not features:
            return cls(np.zeros(0, np.intp), np.zeros(0, np.intp), np.zeros(0), 0)
        rows = np.concatenate([np.full(len(ids), i, np.intp) for i, (ids, _) in enumerate(features)])
        cols = np.concatenate([ids for ids, _ in features]).astype(np.intp)
        return cls(rows, cols, np.concatenate([v for _, v in features]), len(features))

    def dot(self, weights: np.ndarray) -> np.ndarray:
        return np.bincount(self.rows, weights=self.vals * weights[self.cols], minlength=self.n)

    def t_dot(self, per_row: np.ndarray, dim: int) -> np.ndarray:
        return np.bincount(self.cols, weights=self.vals * per_row[self.rows], minlength=dim)


def fit_sparse_logreg(
    x: SparseRows, y: np.ndarray, dim: int, *, l2: float = 1e-3, steps: int = 200, lr: float = 0.05
) -> tuple[np.ndarray, float]:
    """Minimise mean log-loss + l2/2 |w|^2; returns (weights, bias)."""
    w, b = np.zeros(dim), 0.0
    m, v = np.zeros(dim + 1), np.zeros(dim + 1)
    b1, b2 = 0.9, 0.999
    grad = np.empty(dim + 1)
    for t in range(1, steps + 1):
        resid = (sigmoid(b + x.dot(w)) - y) / len(y)
        grad[:-1] = x.t_dot(resid, dim) + l2 * w
        grad[-1] = resid.sum()
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad * grad
        step = lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + 1e-8)
        w -= step[:-1]
        b -= step[-1]
    return w, float(b)


def fit_dense_logreg(
    x: np.ndarray, y: np.ndarray, *, l2: float = 1.0, steps: int = 30
) -> tuple[np.ndarray, float]:
    """Minimise summed log-loss + l2/2 |w|^2 (bias not penalised) by Newton's method."""
    xb = np.hstack([x, np.ones((len(x), 1))]).astype(np.float64)
    penalty = np.full(xb.shape[1], l2)
    penalty[-1] = 0.0
    w = np.zeros(xb.shape[1])
    for _ in range(steps):
        p = sigmoid(xb @ w)
        grad = xb.T @ (p - y) + penalty * w
        hessian = (xb.T * (p * (1 - p))) @ xb + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, grad)
        w -= step
        if np.abs(step).max() < 1e-7:
            break
    return w[:-1], float(w[-1])


def knn_mean(
    train: np.ndarray, targets: np.ndarray, queries: np.ndarray, k: int, power: float = 0.0
) -> np.ndarray:
    """For each query row, the mean target of its k nearest training rows, weighted by
    similarity ** power (0: plain mean; a high power lets the closest few dominate)."""
    k = max(1, min(k, len(train)))
    train, queries = np.asarray(train, np.float32), np.asarray(queries, np.float32)  # no copy when float32
    # One request: einsum runs on this thread. A BLAS product may wake its worker threads, and on a
    # busy machine waiting for them took p99 from ~4 to ~20 ms (bench/routing.py). Training scores
    # batches, where BLAS pays.
    sims = np.einsum("ij,kj->ik", queries, train) if len(queries) <= 8 else queries @ train.T
    nearest = (
        np.argpartition(-sims, k - 1, axis=1)[:, :k]
        if k < len(train)
        else np.tile(np.arange(len(train)), (len(sims), 1))
    )
    weights = np.maximum(np.take_along_axis(sims, nearest, 1), 0.0).astype(np.float64) ** power
    return (targets[nearest] * weights).sum(1) / np.maximum(weights.sum(1), 1e-300)
