"""Train the shipped prompt-injection model from the ../shared/data dev sets, and measure it honestly.

    .venv/bin/pip install -e '.[train]'
    .venv/bin/python scripts/train_injection.py                # CV + leave-one-source-out + train + write
    .venv/bin/python scripts/train_injection.py --no-write     # figures only

Only OK-licensed sets are read (see ../shared/data/README.md): the attack sets, the benign hard
negatives, and benign prompts of other kinds (MMLU and GSM8K questions, MT-bench turns, customer-
support utterances, documentation sentences, synthetic PII sentences, and long documents joined
from the unused ones) so that the model learns what ordinary traffic looks like beyond the two
hard-negative sets; plus rows of our own from ``injection_synthetic.py`` (training side only).
``xstest`` is never trained on: it stays an unseen benign source for the figures. NC/UNCLEAR sets
are never read.

Figures printed, all on rows the model did not train on:
- stratified 5-fold cross-validation, folds stratified by source and grouped by near-duplicate
  cluster (the in-the-wild set holds many variants of one DAN prompt; letting one variant train
  and its twin test would flatter the model);
- the same at other thresholds (the sweep the default operating point was chosen on);
- leave-one-source-out: train without a source, test on it, the closest the dev data gets to the
  "sources never seen" the held-out measurement will use.
Scores are computed as the detector computes them (long texts in chunks, short ones damped).

scikit-learn is used here only; the shipped file holds int8 weights over hashed n-gram buckets and
``llmrelay.guardrails.injection`` scores with numpy alone. Deterministic for a given ``--seed``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmrelay.guardrails.injection import MODEL_PATH, EmbeddingView, InjectionDetector, LinearModel
from llmrelay.guardrails.injection_features import featurize, normalize
from llmrelay.guardrails.injection_rules import RuleSet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from injection_synthetic import synthetic_rows  # noqa: E402  (scripts/ is not a package)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

ATTACK_SOURCES = ("jailbreak_inthewild_2023_05_07", "pallms_payloads", "pint_example")
HARD_NEGATIVES = ("notinject_benign", "wildguard_benign")
# Benign prompts of other kinds (all OK-licensed): capped so they do not drown the hard negatives.
EXTRA_BENIGN = {
    "routellm_mmlu_correctness": ("prompt", 600),
    "routellm_gsm8k_correctness": ("prompt", 300),
    "mt_bench_routing": ("turns", None),
    "bitext_customer_support": ("text", 600),
    "gptcache_mock_paraphrases": ("q1", None),
    "presidio_synth_v2": ("text", 300),
    "presidio_generated_large": ("text", 300),
}
SYNTHETIC = "synthetic"  # scripts/injection_synthetic.py: always trained on, never measured
LONG_DOCUMENTS = "long_benign_documents"  # joined from benign texts not used as rows
# The detector scores longer texts in chunks of this size (a linear model's score drifts with
# length past what it was trained on); the long benign documents stay within it, and the few
# longer jailbreaks are measured the way the detector scores them (``score_rows``).
CHUNK_CHARS = 8_000
# Raw score of the two-view model that becomes 0.5 in the shipped scale (the sweep in the docs).
EMBEDDING_OPERATING_POINT = 0.22
# bench/guardrails.py plants instructions in joined MMLU passages: keep those out of training.
DOCUMENT_TEST_SOURCE = "routellm_mmlu_correctness"


@dataclass
class Row:
    text: str
    label: int  # 1 = injection or jailbreak
    source: str


def read_jsonl(name: str) -> list[dict]:
    with (DATA / name / "dev.jsonl").open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_rows(
    data_seed: int, synthetic: bool = True, benign_scale: float = 1.0, long_docs: int = 300
) -> list[Row]:
    rows = [
        Row(r["text"], int(r["label"]), name)
        for name in ATTACK_SOURCES + HARD_NEGATIVES
        for r in read_jsonl(name)
    ]
    rng = random.Random(data_seed)
    leftovers: list[str] = []  # benign texts not sampled as rows: material for long documents
    for name, (field, cap) in EXTRA_BENIGN.items():
        texts = []
        for r in read_jsonl(name):
            value = r[field]
            texts.extend(value if isinstance(value, list) else [value])
        texts = sorted(set(texts))
        if cap and len(texts) > cap * benign_scale:
            rng.shuffle(texts)
            cut = int(cap * benign_scale)
            texts, rest = texts[:cut], texts[cut:]
            if name != DOCUMENT_TEST_SOURCE:
                leftovers += rest
        rows.extend(Row(t, 0, name) for t in texts)
    rows += [Row(t, 0, LONG_DOCUMENTS) for t in long_documents(leftovers, long_docs, CHUNK_CHARS, rng)]
    if synthetic:
        attacks, benign = synthetic_rows(data_seed)
        rows += [Row(t, 1, SYNTHETIC) for t in attacks] + [Row(t, 0, SYNTHETIC) for t in benign]
    return rows


def long_documents(texts: list[str], n: int, max_chars: int, rng: random.Random) -> list[str]:
    """Benign documents of 1,000 to ``max_chars`` characters, joined from shorter benign texts.

    Without them nearly every long training text is a jailbreak, and the model learns that length
    itself is suspicious: joined MMLU passages of 32,000 characters scored as attacks 9 times in 10.
    Tool results and retrieved pages are long, so this matters more than any dev-set figure.
    """
    docs = []
    for _ in range(n):
        target = int(math.exp(rng.uniform(math.log(1_000), math.log(max_chars))))
        doc = ""
        while len(doc) < target:
            doc += rng.choice(texts) + rng.choice(["\n\n", "\n", " "])
        docs.append(doc[:target])
    return docs


def load_xstest() -> list[Row]:
    """Safe and unsafe prompts alike are benign for injection detection; reported by label."""
    return [Row(r["text"], 0, f"xstest_{r['label']}") for r in read_jsonl("xstest")]


# --- near-duplicate groups -------------------------------------------------------------------


def near_duplicate_groups(rows: list[Row], threshold: float = 0.5) -> np.ndarray:
    """Union-find over word-5-gram Jaccard >= threshold, within each source (across sources
    near-duplicates are rare and the pairwise pass would be slow)."""
    parent = list(range(len(rows)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    by_source: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        by_source[row.source].append(i)
    for indices in by_source.values():
        shingles = []
        for i in indices:
            words = re.findall(r"\w+", rows[i].text.lower())
            shingles.append({tuple(words[k : k + 5]) for k in range(max(1, len(words) - 4))})
        for a in range(len(indices)):
            for b in range(a + 1, len(indices)):
                sa, sb = shingles[a], shingles[b]
                small, large = (sa, sb) if len(sa) < len(sb) else (sb, sa)
                if len(small) < threshold * len(large):
                    continue  # Jaccard is at most |small| / |large|
                inter = len(small & large)
                if inter / (len(sa) + len(sb) - inter) >= threshold:
                    parent[find(indices[a])] = find(indices[b])
    return np.array([find(i) for i in range(len(rows))])


# --- features, training ----------------------------------------------------------------------


def design_matrix(texts: list[str], config: dict):
    from scipy.sparse import csr_matrix

    indptr, indices, values = [0], [], []
    for text in texts:
        ids, vals = featurize(text, config["bits"], tuple(config["char_n"]), config["word_n"])
        indices.append(ids)
        values.append(vals)
        indptr.append(indptr[-1] + len(ids))
    return csr_matrix(
        (np.concatenate(values), np.concatenate(indices), np.array(indptr)),
        shape=(len(texts), 1 << config["bits"]),
    )


class EmbeddingData:
    """The rows' word-piece ids (of the normalised text, as the detector reads it), tokenised once;
    the IDF weights and so the vectors depend on which rows train, so they are made per fit."""

    def __init__(self, rows: list[Row]) -> None:
        from llmrelay.static_embedding import shared_static_embedder

        self.embedder = shared_static_embedder()
        self.ids = [self.embedder.token_ids(normalize(r.text)) for r in rows]

    def idf(self, train: np.ndarray) -> np.ndarray:
        """Smoothed IDF over the training rows, rounded to float16 as the file stores it."""
        df = np.zeros(self.embedder.vocab_size)
        for i in train:
            df[np.unique(self.ids[i])] += 1
        idf = np.log((1 + len(train)) / (1 + df)) + 1
        return idf.astype(np.float16).astype(np.float32)

    def vectors(self, idx: np.ndarray, idf: np.ndarray) -> np.ndarray:
        return np.stack([self.embedder.embed_ids(self.ids[i], idf) for i in idx])


def sample_weights(rows: list[Row], config: dict) -> np.ndarray:
    """Balance the classes, then weigh the hard negatives up (their accuracy is the goal's tight
    side) and the synthetic rows down (templates repeat themselves)."""
    labels = np.array([r.label for r in rows])
    w = np.where(labels == 1, len(rows) / (2 * labels.sum()), len(rows) / (2 * (len(rows) - labels.sum())))
    source = np.array([r.source for r in rows])
    w = w * np.where(np.isin(source, HARD_NEGATIVES), config["hard_negative_weight"], 1.0)
    return w * np.where(source == SYNTHETIC, config["synthetic_weight"], 1.0)


def fit(rows: list[Row], X, config: dict, emb: EmbeddingData | None = None, idx=None) -> LinearModel:
    """One logistic regression over both views: the n-gram features and, with ``emb``, the rows'
    (``idx`` into ``emb``) static embeddings scaled by ``view_scale`` (how loud that view is
    against the L2-normalised n-grams under one regularisation)."""
    from scipy.sparse import csr_matrix, hstack
    from sklearn.linear_model import LogisticRegression

    view = None
    if emb is not None and config.get("embedding"):
        idf = emb.idf(idx)
        scale = config["embedding"]["view_scale"]
        X = hstack([X, csr_matrix(emb.vectors(idx, idf) * scale)]).tocsr()
    clf = LogisticRegression(C=config["C"], max_iter=3000, solver="liblinear")
    clf.fit(X, [r.label for r in rows], sample_weight=sample_weights(rows, config))
    coef = clf.coef_[0]
    if emb is not None and config.get("embedding"):
        dim = emb.embedder.dim
        view = EmbeddingView((coef[-dim:] * scale).astype(np.float32), idf, emb.embedder)
        coef = coef[:-dim]
    # Move the chosen operating point to 0.5, so that a route's threshold of 0.5 means "as measured".
    point = config["operating_point"]
    return LinearModel.quantize(coef, float(clf.intercept_[0]) - math.log(point / (1 - point)), config, view)


# --- evaluation ------------------------------------------------------------------------------


def rates(rows: list[Row], flagged: np.ndarray) -> dict[str, tuple[float, int]]:
    """Per source: the share handled correctly (attacks flagged, benign passed) and the count."""
    out = {}
    for source in dict.fromkeys(r.source for r in rows if r.source != SYNTHETIC):
        mask = np.array([r.source == source for r in rows])
        labels = np.array([r.label for r in rows])[mask]
        correct = flagged[mask] == (labels == 1)
        out[source] = (float(correct.mean()), int(mask.sum()))
    return out


def cross_validate(
    rows: list[Row], X, config: dict, seed: int, emb: EmbeddingData | None = None, folds: int = 5
) -> np.ndarray:
    """Out-of-fold scores: folds stratified by source, near-duplicates kept in one fold."""
    from sklearn.model_selection import StratifiedGroupKFold

    synthetic = np.flatnonzero([r.source == SYNTHETIC for r in rows])
    real = np.flatnonzero([r.source != SYNTHETIC for r in rows])
    groups = near_duplicate_groups([rows[i] for i in real])
    scores = np.full(len(rows), np.nan)  # synthetic rows get none
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(real, [rows[i].source for i in real], groups):
        train = np.concatenate([real[train], synthetic])
        model = fit([rows[i] for i in train], X[train], config, emb, train)
        test = real[test]
        scores[test] = score_rows(model, [rows[i] for i in test], X[test], emb, test)
    return scores


def score_rows(
    model: LinearModel, rows: list[Row], X, emb: EmbeddingData | None = None, idx=None
) -> np.ndarray:
    """Scores as the detector computes them: from the matrices, or by chunks for long texts."""
    E = emb.vectors(idx, model.embedding.idf) if model.embedding is not None else None
    scores = model.score_matrix(X, E)
    short = model.config.get("short_words") or 0
    for i, row in enumerate(rows):
        normalized = normalize(row.text)
        if len(normalized) > model.config["chunk_chars"] or normalized.count(" ") + 1 < short:
            scores[i] = model.score(normalized)
    return scores


def leave_one_source_out(
    rows: list[Row], X, config: dict, sources: tuple[str, ...], emb: EmbeddingData | None = None
) -> dict[str, np.ndarray]:
    out = {}
    for source in sources:
        held = np.array([r.source == source for r in rows])
        train, test = np.flatnonzero(~held), np.flatnonzero(held)
        model = fit([rows[i] for i in train], X[train], config, emb, train)
        out[source] = score_rows(model, [rows[i] for i in test], X[test], emb, test)
    return out


def print_table(title: str, columns: dict[str, dict[str, tuple[float, int]]]) -> None:
    print(f"\n{title}")
    names = list(columns)
    print(f"  {'source':34s}" + "".join(f"{n:>16s}" for n in names))
    sources = list(dict.fromkeys(s for col in columns.values() for s in col))
    for source in sources:
        cells = []
        for n in names:
            value = columns[n].get(source)
            cells.append(f"{value[0] * 100:11.1f}% {value[1]:3d}" if value else " " * 16)
        print(f"  {source:34s}" + "".join(cells))


def print_sweep(rows: list[Row], oof: np.ndarray, rule_hits: np.ndarray) -> None:
    """Rules + model, out of fold, at other thresholds: what a route trades by moving its own."""
    groups = {
        "in-the-wild": ["jailbreak_inthewild_2023_05_07"],
        "pallms": ["pallms_payloads"],
        "notinject": ["notinject_benign"],
        "wildguard": ["wildguard_benign"],
        "other benign": [*EXTRA_BENIGN, LONG_DOCUMENTS],
    }
    print("\nthreshold sweep (rules+model, out-of-fold; share handled correctly)")
    print("  threshold" + "".join(f"{g:>14s}" for g in groups))
    source = np.array([r.source for r in rows])
    labels = np.array([r.label for r in rows])
    for t in (0.2, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8):
        flagged = rule_hits | (np.nan_to_num(oof) >= t)
        cells = []
        for names in groups.values():
            mask = np.isin(source, names)
            cells.append(f"{(flagged[mask] == (labels[mask] == 1)).mean() * 100:13.2f}%")
        print(f"  {t:9.2f}" + "".join(cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=20261127)
    parser.add_argument("--bits", type=int, default=16)
    parser.add_argument("--C", type=float, default=30.0, help="inverse L2 regularisation strength")
    parser.add_argument("--hard-negative-weight", type=float, default=5.0)
    parser.add_argument(
        "--operating-point",
        type=float,
        default=None,
        help="raw model score that becomes 0.5 in the shipped scale (default: 0.22 with the "
        "embedding view, 0.26 without)",
    )
    parser.add_argument(
        "--no-embedding",
        action="store_true",
        help="n-gram view only (the fallback model, which is always trained and stored too)",
    )
    parser.add_argument(
        "--view-scale", type=float, default=0.5, help="weight of the static-embedding view's features"
    )
    parser.add_argument(
        "--no-write", action="store_true", help="print the figures, do not write the model file"
    )
    parser.add_argument("--skip-loso", action="store_true")
    parser.add_argument(
        "--no-synthetic", action="store_true", help="train without scripts/injection_synthetic.py"
    )
    parser.add_argument("--synthetic-weight", type=float, default=0.3)
    parser.add_argument(
        "--short-words", type=int, default=6, help="texts of fewer words have their evidence scaled down"
    )
    parser.add_argument(
        "--benign-scale", type=float, default=1.0, help="multiplies the caps on the extra benign sets"
    )
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        print(f"no data at {DATA}", file=sys.stderr)
        return 2
    fallback_point = 0.26  # the n-gram-only model's operating point, chosen on its own sweep
    config = {
        "bits": args.bits,
        "char_n": [3, 5],
        "word_n": 2,
        "C": args.C,
        "hard_negative_weight": args.hard_negative_weight,
        "operating_point": args.operating_point
        or (fallback_point if args.no_embedding else EMBEDDING_OPERATING_POINT),
        "seed": args.seed,
        "synthetic_weight": 0.0 if args.no_synthetic else args.synthetic_weight,
        "chunk_chars": CHUNK_CHARS,
        "short_words": args.short_words,
    }
    emb = None
    started = time.perf_counter()
    rows = load_rows(args.seed, synthetic=not args.no_synthetic, benign_scale=args.benign_scale)
    xs = load_xstest()
    X = design_matrix([r.text for r in rows], config)
    X_xs = design_matrix([r.text for r in xs], config)
    if not args.no_embedding:
        emb = EmbeddingData(rows + xs)  # xs rows are never in a training index
        config["embedding"] = {
            "model": emb.embedder.name,
            "vocab": emb.embedder.vocab_size,
            "dim": emb.embedder.dim,
            "view_scale": args.view_scale,
        }
    everything = np.arange(len(rows))
    xs_idx = np.arange(len(rows), len(rows) + len(xs))
    n_synthetic = sum(r.source == SYNTHETIC for r in rows)
    print(
        f"{len(rows)} training rows ({sum(r.label for r in rows)} attacks; {n_synthetic} synthetic), config {config}"
    )
    rules = RuleSet()
    rule_hits = np.array([rules.match(r.text) is not None for r in rows])
    rule_hits_xs = np.array([rules.match(r.text) is not None for r in xs])
    t = 0.5

    oof = cross_validate(rows, X, config, args.seed, emb)
    columns = {
        "rules": rates(rows, rule_hits),
        "model (CV)": rates(rows, oof >= t),
        "rules+model": rates(rows, rule_hits | (oof >= t)),
    }
    print_table(f"5-fold cross-validation (out-of-fold, threshold {t})", columns)
    print_sweep(rows, oof, rule_hits)

    final = fit(rows, X, config, emb, everything)
    xs_scores = score_rows(final, xs, X_xs, emb, xs_idx)
    print_table(
        "xstest (never trained on), final model",
        {
            "rules": rates(xs, rule_hits_xs),
            "model": rates(xs, xs_scores >= t),
            "rules+model": rates(xs, rule_hits_xs | (xs_scores >= t)),
        },
    )
    if not args.skip_loso:
        loso_sources = (
            "jailbreak_inthewild_2023_05_07",
            "pallms_payloads",
            *HARD_NEGATIVES,
            "bitext_customer_support",
        )
        loso = leave_one_source_out(rows, X, config, loso_sources, emb)
        model_col, both_col = {}, {}
        for source, scores in loso.items():
            held = [r for r in rows if r.source == source]
            hits = np.array([rules.match(r.text) is not None for r in held])
            model_col.update(rates(held, scores >= t))
            both_col.update(rates(held, hits | (scores >= t)))
        print_table(
            "leave-one-source-out (trained without the source, tested on it)",
            {"model": model_col, "rules+model": both_col},
        )

    if not args.no_write:
        fallback = None
        if emb is not None:  # served where the embedding view cannot load
            plain = {k: v for k, v in config.items() if k != "embedding"}
            fallback = fit(rows, X, {**plain, "operating_point": fallback_point})
        final.save(MODEL_PATH, fallback)
        size = MODEL_PATH.stat().st_size
        detector = InjectionDetector.load()
        sample = list(range(0, len(rows), 10))  # every source, long texts (chunked) included
        agree = np.allclose(
            [detector.score(rows[i].text) for i in sample],
            score_rows(final, [rows[i] for i in sample], X[sample], emb, np.array(sample)),
            atol=1e-6,
        )
        print(
            f"\nwrote {MODEL_PATH} ({size / 1024:.0f} KB); numpy scorer agrees with training features: {agree}"
        )
    print(f"done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
