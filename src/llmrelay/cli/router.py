"""``llmrelay router train``: fit the trained router on labelled examples, offline."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("router", help="train the learned router")
    actions = p.add_subparsers(dest="router_command", required=True)
    t = actions.add_parser(
        "train",
        help="fit a router on DATA.jsonl and write it (see docs/routing-trained.md for the row format)",
    )
    t.add_argument(
        "data", help="JSON Lines: prompt or messages, and weak_correct+strong_correct, label, or scores"
    )
    t.add_argument("-o", "--output", required=True, help="where to write the router (.npz)")
    target = t.add_mutually_exclusive_group()
    target.add_argument(
        "--strong-share", type=float, default=0.3, help="share of prompts sent to the strong model"
    )
    target.add_argument(
        "--target-quality",
        type=float,
        help="instead: the fewest strong calls keeping this fraction of the all-strong performance",
    )
    t.add_argument("--seed", type=int, default=0, help="the cross-validation folds' shuffle")
    t.add_argument(
        "--no-embeddings",
        action="store_true",
        help="text views only (n-grams, shape): no local embedding model needed",
    )


def run(args: argparse.Namespace) -> int:
    from ..routing.trained import TEXT_VIEWS, VIEWS, train

    examples = read_examples(Path(args.data))
    router = train(
        examples,
        seed=args.seed,
        strong_share=args.strong_share,
        target_quality=args.target_quality,
        views=TEXT_VIEWS if args.no_embeddings else VIEWS,
    )
    router.save(args.output)
    r = router.config["report"]
    print(
        f"trained on {r['rows']} rows: the strong model did better on {r['strong_better']}, "
        f"the weak one on {r['weak_better']}; seed {r['seed']}"
    )
    print(f"views kept: {', '.join(router.views)}")
    if "cv_apgr" in r:
        print(
            f"{r['folds']}-fold cross-validated: APGR {r['cv_apgr']:.3f}, "
            f"CPT(50%) {r['cv_cpt50']:.1f}%, CPT(80%) {r['cv_cpt80']:.1f}%"
        )
    print(
        f"threshold {router.threshold:.4f}: {r['strong_share']:.1%} of prompts to the strong model, "
        f"{r['quality']:.1%} of all-strong performance (on out-of-fold scores)"
    )
    print(f"wrote {args.output}")
    return 0


def read_examples(path: Path) -> list:  # list[Example]; the import stays lazy for the CLI's start-up
    """The training file's rows as examples; a bad line is a ``ConfigError`` naming file and line."""
    from ..routing.trained import example_from_row

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    examples = []
    # split("\n"), not splitlines(): a JSON string may hold U+2028 and other Unicode line breaks.
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            examples.append(example_from_row(json.loads(line)))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{n}: not JSON ({exc.msg})") from None
        except ConfigError as exc:
            raise ConfigError(f"{path}:{n}: {exc.message}") from None
    if not examples:
        raise ConfigError(f"{path} has no training rows")
    better = sum(e.target for e in examples)
    if min(better, len(examples) - better) < 2:  # nothing to tell apart (the learners would fail)
        raise ConfigError(
            f"{path}: a router learns from both outcomes, at least 2 rows of each: the strong model "
            f"doing better ({better:.0f} rows) and not ({len(examples) - better:.0f})"
        )
    return examples
