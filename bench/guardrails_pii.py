"""PII redaction quality and cost: precision / recall / F2 per type on the Presidio span sets,
false alarms on text without PII, latency per check, and what streaming holds back.

    .venv/bin/python bench/guardrails_pii.py                 # ~30 s
    .venv/bin/python bench/guardrails_pii.py --show 5        # print misses and false alarms
    .venv/bin/python bench/guardrails_pii.py --data DIR      # another copy of shared/data

Quality: each dev set's gold spans of the types we support (their labels mapped to ours) against
``PiiRedactor.find``. A found span is a true positive when it has the gold span's type and
*overlaps* it (one-to-one, in order); the stricter *exact* figures ask for the same start and end.
A found span matching no gold span of its type is a false positive, wherever it lies (also on a
gold span of a type we do not handle, such as a driver's licence). F2 weighs recall twice.
Beside ours, a naive baseline: the usual one-line regexes with no checksum and no context.

False alarms: the same redactor on dev sets that hold no PII by construction (maths word problems,
exam questions, support requests, benign prompts); every span found there is a false alarm.

Streaming: the texts are fed as o200k tokens to ``StreamRedactor``; after each delta we note the
characters held back, and for each character how many deltas later it came out.
See bench/README.md ("Guardrails: PII") for the figures.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

from llmrelay.guardrails.pii import PII_TYPES, PiiRedactor, Span
from llmrelay.tokens import get_encoding

ROOT = Path(__file__).resolve().parents[1]
SPAN_SETS = ("presidio_synth_v2", "presidio_generated_large")
LABELS = {
    "CREDIT_CARD": "CREDIT_CARD",
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "US_SSN": "SSN",
    "IBAN_CODE": "IBAN",
    "IP_ADDRESS": "IP_ADDRESS",
}
# Dev sets without PII, and the field holding the text.
CLEAN_SETS = {
    "routellm_gsm8k_correctness": "prompt",
    "routellm_mmlu_correctness": "prompt",
    "bitext_customer_support": "text",
    "wildguard_benign": "text",
    "notinject_benign": "text",
    "xstest": "text",
}
ANCHOR = "Presidio out of the box on presidio_synth_v2 (all its types): precision 0.685, recall 0.603"

# The one-liners one finds everywhere: no checksum, no context, no validation.
NAIVE = {
    "EMAIL": r"[\w.+-]+@[\w-]+\.[\w.-]+",
    "PHONE": r"\+?\(?\d{2,4}\)?[ .-]?\d{3,4}[ .-]?\d{3,4}",
    "CREDIT_CARD": r"\b(?:\d[ -]?){13,16}\b",
    "SSN": r"\b\d{3}-\d{2}-\d{4}\b",
    "IBAN": r"\b[A-Z]{2}\d{2}[A-Z0-9]{10,30}\b",
    "IP_ADDRESS": r"\b(?:\d{1,3}\.){3}\d{1,3}\b",
}


def naive_find(text: str) -> list[Span]:
    return [Span(t, m.start(), m.end()) for t, p in NAIVE.items() for m in re.finditer(p, text)]


def load(data: Path, name: str) -> list[dict]:
    with open(data / name / "dev.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def gold_spans(row: dict) -> list[Span]:
    return [Span(LABELS[s["type"]], s["start"], s["end"]) for s in row["spans"] if s["type"] in LABELS]


def match(found: list[Span], gold: list[Span], exact: bool) -> tuple[list[Span], list[Span], list[Span]]:
    """(true positives, false positives, false negatives), pairing spans one-to-one."""
    unmatched = list(gold)
    tp, fp = [], []
    for f in sorted(found, key=lambda s: s.start):
        for g in unmatched:
            same = (f.start, f.end) == (g.start, g.end) if exact else f.start < g.end and g.start < f.end
            if f.type == g.type and same:
                unmatched.remove(g)
                tp.append(f)
                break
        else:
            fp.append(f)
    return tp, fp, unmatched


def scores(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    f2 = 5 * p * r / (4 * p + r) if p + r else 0.0
    return p, r, f2


def quality(rows: list[dict], find: Callable[[str], list[Span]], show: int, label: str) -> dict:
    counts: dict[str, dict[str, Counter]] = {"overlap": defaultdict(Counter), "exact": defaultdict(Counter)}
    examples: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        text, gold = row["text"], gold_spans(row)
        found = [s for s in find(text) if s.type in PII_TYPES]
        for mode in ("overlap", "exact"):
            tp, fp, fn = match(found, gold, exact=mode == "exact")
            for kind, spans in (("tp", tp), ("fp", fp), ("fn", fn)):
                for s in spans:
                    counts[mode][s.type][kind] += 1
            if mode == "overlap" and show:
                for kind, spans in (("FP", fp), ("FN", fn)):
                    for s in spans:
                        if len(examples[kind + s.type]) < show:
                            examples[kind + s.type].append(f"  {label} {kind} {s.type}: {_excerpt(text, s)}")
    for lines in examples.values():
        print("\n".join(lines))
    return counts


def _excerpt(text: str, s: Span) -> str:
    return repr(
        text[max(0, s.start - 30) : s.start] + "<<" + text[s.start : s.end] + ">>" + text[s.end : s.end + 20]
    )


def print_quality(name: str, ours: dict, naive: dict) -> None:
    print(f"\n{name}: span-level, overlap match (exact match in brackets); naive regex baseline at right")
    print(f"  {'type':12} {'gold':>5} {'P':>13} {'R':>13} {'F2':>13}   | naive P     R    F2")
    total = {k: Counter() for k in ("overlap", "exact", "naive")}
    for t in PII_TYPES:
        o, e, nv = ours["overlap"][t], ours["exact"][t], naive["overlap"][t]
        for k, c in (("overlap", o), ("exact", e), ("naive", nv)):
            total[k].update(c)
        _row(t, o, e, nv)
    _row("all six", total["overlap"], total["exact"], total["naive"])


def _row(t: str, o: Counter, e: Counter, nv: Counter) -> None:
    po, ro, fo = scores(o["tp"], o["fp"], o["fn"])
    pe, re_, fe = scores(e["tp"], e["fp"], e["fn"])
    pn, rn, fn = scores(nv["tp"], nv["fp"], nv["fn"])
    print(
        f"  {t:12} {o['tp'] + o['fn']:5} {po:6.3f} ({pe:.3f}) {ro:6.3f} ({re_:.3f}) {fo:6.3f} ({fe:.3f})"
        f"   | {pn:5.3f} {rn:5.3f} {fn:5.3f}"
    )


def false_alarms(data: Path, redactor: PiiRedactor, show: int) -> None:
    print("\nFalse alarms on dev sets without PII (spans found per 1,000 texts, by type):")
    for name, field in CLEAN_SETS.items():
        if not (data / name / "dev.jsonl").exists():
            continue
        texts = [row[field] for row in load(data, name)]
        found = Counter()
        shown = 0
        for text in texts:
            for s in redactor.find(text):
                found[s.type] += 1
                if shown < show:
                    shown += 1
                    print(f"    {name}: {s.type} {_excerpt(text, s)}")
        per_k = ", ".join(f"{t} {1000 * n / len(texts):.1f}" for t, n in found.most_common()) or "none"
        print(
            f"  {name:28} {len(texts):5} texts, {sum(len(t) for t in texts) / len(texts):5.0f} chars avg: {per_k}"
        )


def latency(texts: list[str], redactor: PiiRedactor) -> None:
    for t in texts[:200]:
        redactor.redact(t)  # warm-up
    times = []
    for t in texts:
        t0 = time.perf_counter()
        redactor.redact(t)
        times.append((time.perf_counter() - t0) * 1e6)
    times.sort()
    chars = sum(map(len, texts))
    print(
        f"\nLatency per check (redact one text, {len(texts)} texts, {chars / len(texts):.0f} chars avg): "
        f"mean {statistics.fmean(times):.0f} us, p50 {times[len(times) // 2]:.0f} us, "
        f"p99 {times[int(len(times) * 0.99)]:.0f} us; {chars / (sum(times) / 1e6) / 1e6:.2f} M chars/s"
    )
    big = "\n".join(texts)
    t0 = time.perf_counter()
    redactor.redact(big)
    dt = time.perf_counter() - t0
    print(
        f"  one {len(big) / 1000:.0f} k-char text: {dt * 1000:.0f} ms ({len(big) / dt / 1e6:.2f} M chars/s)"
    )


def streaming(label: str, texts: list[str], redactor: PiiRedactor) -> None:
    enc = get_encoding("o200k_base")
    held, delays, feed_us = [], [], []
    mismatches = 0
    for text in texts:
        deltas = [enc.decode([tok]) for tok in enc.encode(text)]
        if "".join(deltas) != text:
            continue  # a token that splits a multi-byte character: skip the text
        stream = redactor.stream()
        arrived = 0
        emitted_upto = 0  # input characters emitted so far
        out = []
        for i, delta in enumerate(deltas):
            t0 = time.perf_counter()
            out.append(stream.feed(delta))
            feed_us.append((time.perf_counter() - t0) * 1e6)
            arrived += len(delta)
            now = arrived - stream.pending
            held.append(stream.pending)
            delays.extend(_delays(deltas, i, emitted_upto, now))
            emitted_upto = now
        out.append(stream.flush())
        mismatches += "".join(out) != redactor.redact(text)[0]
    held.sort()
    delays.sort()
    feed_us.sort()
    print(
        f"  {label:28} {len(held):6} deltas: held back after a delta mean {statistics.fmean(held):.1f} chars, "
        f"p50 {held[len(held) // 2]}, p95 {held[int(len(held) * 0.95)]}, max {held[-1]}; "
        f"{sum(d == 0 for d in delays) / len(delays):.0%} of characters out in their own delta, "
        f"mean delay {statistics.fmean(delays):.2f} deltas; feed() p50 {feed_us[len(feed_us) // 2]:.0f} us, "
        f"p99 {feed_us[int(len(feed_us) * 0.99)]:.0f} us; stream != redact: {mismatches}"
    )


def stress(redactor: PiiRedactor) -> None:
    """The worst cases for a stream: text that keeps looking like the start of a match."""
    rng = random.Random(1)
    b64 = "".join(
        rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/") for _ in range(3200)
    )
    pem = "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(b64[i : i + 64] for i in range(0, 3200, 64))
    cases = {
        "a 3.3 k-char private key": pem + "\n-----END RSA PRIVATE KEY-----\nthanks",
        "12 k chars of numbers": " ".join(str(rng.randint(0, 99_999)) for _ in range(2000)),
        "8 k chars of base64": b64 * 2 + b64[:1600],
    }
    for label, text in cases.items():
        stream = redactor.stream()
        held = 0
        t0 = time.perf_counter()
        for i in range(0, len(text), 4):
            stream.feed(text[i : i + 4])
            held = max(held, stream.pending)
        stream.flush()
        dt = time.perf_counter() - t0
        feeds = (len(text) + 3) // 4
        print(
            f"  {label:28} in 4-char deltas: max held back {held} chars, {dt / feeds * 1e6:.0f} us per feed()"
        )


def _delays(deltas: list[str], i: int, start: int, end: int) -> list[int]:
    """For input characters [start, end) just emitted at delta i: how many deltas they waited."""
    out, pos = [], 0
    for j, d in enumerate(deltas[: i + 1]):
        lo, hi = max(pos, start), min(pos + len(d), end)
        out.extend([i - j] * max(0, hi - lo))
        pos += len(d)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--show", type=int, default=0, help="print up to N misses and false alarms per type")
    args = ap.parse_args()
    if not (args.data / SPAN_SETS[0]).is_dir():
        sys.exit(f"no {SPAN_SETS[0]} under {args.data}: pass --data")
    redactor = PiiRedactor()
    print(ANCHOR)
    all_texts = []
    for name in SPAN_SETS:
        rows = load(args.data, name)
        all_texts += [r["text"] for r in rows]
        ours = quality(rows, redactor.find, args.show, name)
        naive = quality(rows, naive_find, 0, name)
        print_quality(name, ours, naive)
    false_alarms(args.data, redactor, args.show)
    latency(all_texts, redactor)
    print("\nStreaming, o200k tokens as deltas:")
    streaming("presidio texts (PII-dense)", all_texts, redactor)
    prose = [r["text"] for r in load(args.data, "wildguard_benign")]
    streaming("wildguard_benign (prose)", prose, redactor)
    stress(redactor)


if __name__ == "__main__":
    main()
