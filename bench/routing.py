"""Routing quality (APGR, CPT) of the trained router beside the random, heuristic and TF-IDF routers.

    PYTHONPATH=src .venv/bin/python bench/routing.py                       # all three sets
    PYTHONPATH=src .venv/bin/python bench/routing.py --sets gsm8k --repeats 1

Data: ``../shared/data/{routellm_mmlu_correctness,routellm_gsm8k_correctness,mt_bench_routing}/dev.jsonl``
(Apache-2.0 / MIT; per-question results of Mixtral-8x7B as the weak and GPT-4 as the strong
model). Each set is cut into stratified folds (by "the strong model did better"); the learned
routers train on the other folds and score the held-out one, repeated with reshuffled folds.
Only the prompt text is scored (MMLU's subject field is never read); MT-Bench is routed on its
first turn and judged on the mean of both turns' scores, as RouteLLM does.

APGR and CPT are computed as RouteLLM computes them (``llmrelay.routing.evaluation``), two ways:
- per fold: on each held-out fold alone, reported as mean +- standard deviation over folds;
- pooled: on all out-of-fold scores of one repeat at once (the shape of RouteLLM's own figures,
  one curve over the whole benchmark), mean +- sd over repeats. MT-Bench (48 questions, ~10 per
  fold) has the pooled figure only.

Routers: ``random`` (uniform scores, seeded), ``heuristic`` (word count / code / analysis words:
the route helper's ``routing.heuristic`` with its default settings when importable, else the same
rules as ``heuristic-baseline`` below), ``tfidf-lr`` (scikit-learn TF-IDF + logistic regression,
the baseline the issue names), ``trained`` (``llmrelay.routing.trained.train`` with its defaults)
and ``trained-text`` (its text-only views, no embedding model). Then the trained router's cost:
``score()`` p50/p99 per prompt, one at a time, against the heuristic's in the same run.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np

from llmrelay.routing.evaluation import router_curve
from llmrelay.routing.trained import TEXT_VIEWS, VIEWS, Example, train

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SETS = {
    "mmlu": "routellm_mmlu_correctness",
    "gsm8k": "routellm_gsm8k_correctness",
    "mt_bench": "mt_bench_routing",
}
PUBLISHED = {"mmlu": "0.603 / CPT50 35.4%", "gsm8k": "0.622 / CPT50 33.6%", "mt_bench": "0.802"}


def load(name: str) -> list[Example]:
    examples = []
    for line in (DATA / SETS[name] / "dev.jsonl").read_text(encoding="utf-8").split("\n"):
        if not line.strip():
            continue
        row = json.loads(line)
        if name == "mt_bench":
            weak = (row["weak_score_turn1"] + row["weak_score_turn2"]) / 2
            strong = (row["strong_score_turn1"] + row["strong_score_turn2"]) / 2
            examples.append(Example(row["turns"][0], weak, strong))
        else:
            examples.append(Example(row["prompt"], float(row["weak_correct"]), float(row["strong_correct"])))
    return examples


# --- routers: fit on training examples, return a scoring function for texts ---------------------

_ANALYSIS = (
    "analy",
    "explain",
    "why",
    "compare",
    "evaluate",
    "prove",
    "derive",
    "reason",
    "step by step",
    "design",
)
_CODE = re.compile(r"```|^\s*(def|class|import|function|const|#include)\s|[;{}]\s*$", re.MULTILINE)


def heuristic_baseline(text: str) -> float:
    """The issue's complexity estimate, when the route helper's router is not importable: 0.5 x
    min(words / 300, 1) + 0.5 if code + 0.25 per analysis word, capped at 1."""
    lowered = text.lower()
    words = len(text.split())
    found = sum(1 for w in _ANALYSIS if w in lowered)
    return min(0.5 * min(words / 300, 1) + (0.5 if _CODE.search(text) else 0) + 0.25 * found, 1.0)


def heuristic_router():  # type: ignore[no-untyped-def]
    try:
        from llmrelay.routing.heuristic import Heuristic
        from llmrelay.routing.settings import HeuristicRouter

        rules = Heuristic(HeuristicRouter())
        return "heuristic", lambda text: rules.score(text)[0]
    except ImportError:
        return "heuristic-baseline", heuristic_baseline


def fit_random(train_set: list[Example], seed: int):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    return lambda texts: rng.random(len(texts))


def fit_heuristic(train_set: list[Example], seed: int):  # type: ignore[no-untyped-def]
    score = heuristic_router()[1]
    return lambda texts: np.array([score(t) for t in texts])


def fit_tfidf(train_set: list[Example], seed: int):  # type: ignore[no-untyped-def]
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = TfidfVectorizer()
    x = vectorizer.fit_transform([e.text for e in train_set])
    model = LogisticRegression(max_iter=2000).fit(x, [e.target for e in train_set])
    return lambda texts: model.predict_proba(vectorizer.transform(texts))[:, 1]


def fit_trained(views):  # type: ignore[no-untyped-def]
    def fit(train_set: list[Example], seed: int):  # type: ignore[no-untyped-def]
        router = train(
            train_set, seed=seed, views=views, embedder=_embedder() if views != TEXT_VIEWS else None
        )
        return router.score_many

    return fit


_EMBEDDER = []


def _embedder():  # type: ignore[no-untyped-def]
    if not _EMBEDDER:
        from llmrelay.static_embedding import shared_static_embedder

        _EMBEDDER.append(shared_static_embedder())
    return _EMBEDDER[0]


# --- evaluation ------------------------------------------------------------------------------


def stratified_folds(targets: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold number per row: each class shuffled and dealt round-robin."""
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(targets), np.int64)
    offset = 0
    for label in np.unique(targets):
        idx = rng.permutation(np.flatnonzero(targets == label))
        fold_of[idx] = (np.arange(len(idx)) + offset) % folds
        offset += len(idx)
    return fold_of


def evaluate(name: str, routers: dict, folds: int, repeats: int) -> dict[str, dict[str, list[float]]]:
    examples = load(name)
    texts = [e.text for e in examples]
    targets = np.array([e.target for e in examples])
    weak = np.array([e.weak for e in examples])
    strong = np.array([e.strong for e in examples])
    results: dict[str, dict[str, list[float]]] = {r: {} for r in routers}
    for repeat in range(repeats):
        fold_of = stratified_folds(targets, folds, seed=repeat)
        pooled = {r: np.empty(len(examples)) for r in routers}
        for k in range(folds):
            test, rest = np.flatnonzero(fold_of == k), np.flatnonzero(fold_of != k)
            for router, fit in routers.items():
                started = time.perf_counter()
                score = fit([examples[i] for i in rest], repeat * 100 + k)
                scores = np.asarray(score([texts[i] for i in test]), np.float64)
                pooled[router][test] = scores
                res = results[router]
                res.setdefault("seconds", []).append(time.perf_counter() - started)
                if name != "mt_bench":
                    curve = router_curve(scores, weak[test], strong[test])
                    for key, value in (
                        ("apgr", curve.apgr),
                        ("cpt50", curve.cpt(0.5)),
                        ("cpt80", curve.cpt(0.8)),
                    ):
                        res.setdefault(key, []).append(value)
        for router in routers:
            curve = router_curve(pooled[router], weak, strong)
            res = results[router]
            for key, value in (
                ("pooled_apgr", curve.apgr),
                ("pooled_cpt50", curve.cpt(0.5)),
                ("pooled_cpt80", curve.cpt(0.8)),
            ):
                res.setdefault(key, []).append(value)
        print(f"  {name}: repeat {repeat + 1}/{repeats} done", flush=True)
    return results


def fmt(values: list[float] | None, digits: int = 3, suffix: str = "") -> str:
    if not values:
        return "-"
    return f"{np.mean(values):.{digits}f}{suffix} ± {np.std(values):.{digits}f}"


def report(name: str, results: dict, examples: list[Example], folds: int, repeats: int) -> None:
    weak = np.mean([e.weak for e in examples])
    strong = np.mean([e.strong for e in examples])
    print(
        f"\n## {name}: {len(examples)} prompts, weak {weak:.3f}, strong {strong:.3f}, "
        f"{folds}-fold x {repeats} repeats (RouteLLM published best APGR: {PUBLISHED[name]})"
    )
    print(
        f"{'router':<20} {'APGR per fold':>16} {'APGR pooled':>16} {'CPT(50%) pooled':>18} "
        f"{'CPT(80%) pooled':>18} {'CPT(50%) per fold':>18} {'fit+score s':>11}"
    )
    for router, res in results.items():
        print(
            f"{router:<20} {fmt(res.get('apgr')):>16} {fmt(res.get('pooled_apgr')):>16} "
            f"{fmt(res.get('pooled_cpt50'), 1, '%'):>18} {fmt(res.get('pooled_cpt80'), 1, '%'):>18} "
            f"{fmt(res.get('cpt50'), 1, '%'):>18} {np.mean(res['seconds']):>11.2f}"
        )


def latency(n: int) -> None:
    """``score()`` of the trained router, one prompt at a time, next to the heuristic's."""
    examples = load("mmlu")
    router = train(examples, seed=0, embedder=_embedder())
    name, heuristic = heuristic_router()
    prompts = [e.text for e in examples[:n]] + [e.text for e in load("gsm8k")[:n]]
    for label, score in (("trained", router.score), (name, heuristic)):
        score(prompts[0])  # warm: first-call imports and caches
        times = []
        for text in prompts:
            started = time.perf_counter()
            score(text)
            times.append(time.perf_counter() - started)
        ms = np.array(times) * 1000
        print(
            f"{label:<20} score() p50 {np.percentile(ms, 50):.3f} ms  p99 {np.percentile(ms, 99):.3f} ms  ({len(ms)} prompts)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sets", nargs="*", choices=list(SETS), default=list(SETS), help="none: latency only"
    )
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency-prompts", type=int, default=300, help="per set (MMLU and GSM8K); 0 skips")
    parser.add_argument("--no-tfidf", action="store_true", help="skip the scikit-learn baseline")
    args = parser.parse_args()
    routers = {"random": fit_random, heuristic_router()[0]: fit_heuristic}
    if not args.no_tfidf:
        routers["tfidf-lr"] = fit_tfidf
    routers["trained-text"] = fit_trained(TEXT_VIEWS)
    routers["trained"] = fit_trained(VIEWS)
    for name in args.sets:
        results = evaluate(name, routers, args.folds, args.repeats)
        report(name, results, load(name), args.folds, args.repeats)
    if args.latency_prompts:
        print("\n## cost per request (one prompt at a time, this machine, same run)")
        latency(args.latency_prompts)


if __name__ == "__main__":
    main()
