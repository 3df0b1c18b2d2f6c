"""Router quality as RouteLLM measures it: APGR and CPT from a router's scores on labelled questions.

This follows ``routellm/evals/benchmarks.py`` and ``routellm/evals/evaluate.py`` (lm-sys/RouteLLM):

- thresholds are the edges of ``pd.qcut(scores, 10, retbins=True)``: the 0, 10, ..., 100th
  percentiles of the scores, linearly interpolated (pandas' ``Series.quantile`` default);
- at each threshold a question goes to the strong model when its score is ``>= threshold``, except
  at the last (the maximum), where it is ``> threshold`` so that one point has no strong calls;
- each point is (strong calls in %, mean performance), performance being the routed model's
  correctness (x 100) or judge score;
- APGR: the trapezoid area under performance against strong share (0..1), minus the all-weak
  area, over the all-strong area minus the all-weak area, both taken over the same x values;
- CPT(p): ``np.interp`` of the performance ``weak + p * (strong - weak)`` on the points sorted by
  strong share, giving the strong share (in %) needed to recover that part of the gap.

pandas is not needed: ``np.quantile`` with linear interpolation gives the same edges. One
difference: ``pd.qcut`` raises on repeated edges (a router with many tied scores); here they are
kept, which adds zero-width segments and does not change the area.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RouterCurve:
    strong_pct: np.ndarray  # per threshold, share of strong calls in %, sorted ascending
    performance: np.ndarray  # per threshold, the mean performance of the routed answers
    weak: float  # all-weak performance
    strong: float  # all-strong performance

    @property
    def apgr(self) -> float:
        x = self.strong_pct / 100
        area = _trapezoid(self.performance, x)
        weak_area = _trapezoid(np.full_like(x, self.weak), x)
        strong_area = _trapezoid(np.full_like(x, self.strong), x)
        return float((area - weak_area) / (strong_area - weak_area))

    def cpt(self, part: float) -> float:
        """Strong calls (%) needed to recover ``part`` (0..1) of the weak-to-strong gap."""
        target = part * (self.strong - self.weak) + self.weak
        return float(np.interp(target, self.performance, self.strong_pct))


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))


def router_curve(
    scores: np.ndarray, weak_perf: np.ndarray, strong_perf: np.ndarray, *, num_results: int = 10
) -> RouterCurve:
    """The RouteLLM evaluation of one router's ``scores`` (higher = strong) on these questions.

    ``weak_perf``/``strong_perf`` hold each question's result for either model: 1/0 correctness
    (RouteLLM reports it x 100; APGR and CPT do not depend on the scale) or a judge score.
    """
    scores = np.asarray(scores, np.float64)
    weak_perf = np.asarray(weak_perf, np.float64)
    strong_perf = np.asarray(strong_perf, np.float64)
    thresholds = np.quantile(scores, np.linspace(0, 1, num_results + 1))
    pct, perf = [], []
    for i, threshold in enumerate(thresholds):
        strong = scores >= threshold if i != len(thresholds) - 1 else scores > threshold
        pct.append(strong.mean() * 100)
        perf.append(np.where(strong, strong_perf, weak_perf).mean())
    order = np.argsort(pct, kind="stable")
    return RouterCurve(
        np.asarray(pct)[order], np.asarray(perf)[order], float(weak_perf.mean()), float(strong_perf.mean())
    )
