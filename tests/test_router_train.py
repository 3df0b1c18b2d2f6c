"""The trained router: learning from labelled rows, calibration, reproducibility, the CLI and its errors."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llmrelay.errors import ConfigError
from llmrelay.routing.evaluation import router_curve
from llmrelay.routing.trained import TrainedRouter, examples_from_rows, prompt_text, train
from llmrelay.types import Message

# Our own synthetic rows: proofs and multi-step derivations need the strong model, chit-chat and
# lookups do not. Varied wording, so the model must generalise from words, not memorise prompts.
HARD = ["prove that", "derive the closed form of", "show rigorously why", "find all integer solutions of"]
HARD_TOPICS = [
    "the recurrence a(n)=3a(n-1)-2",
    "x^3 + y^3 = z^3",
    "the eigenvalues of a rotation",
    "the series sum 1/n^2",
]
EASY = ["what is the capital of", "say hello to", "translate 'thank you' into", "give me a synonym for"]
EASY_TOPICS = ["France", "my friend Anna", "Spanish", "happy", "Japan", "the word big"]


def synthetic_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        if i % 3 == 0:
            prompt = f"{rng.choice(HARD)} {rng.choice(HARD_TOPICS)}"
            weak, strong = rng.random() < 0.2, rng.random() < 0.9
        else:
            prompt = f"{rng.choice(EASY)} {rng.choice(EASY_TOPICS)}"
            weak, strong = rng.random() < 0.9, rng.random() < 0.95
        rows.append({"prompt": f"{prompt} (#{i})", "weak_correct": weak, "strong_correct": strong})
    return rows


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return synthetic_rows(240, seed=1)


@pytest.fixture(scope="module")
def router(rows: list[dict]) -> TrainedRouter:
    return train(rows, seed=0, strong_share=0.3)


def test_learns_which_prompts_need_the_strong_model(router: TrainedRouter) -> None:
    # New rows of the training distribution fall on the right side of the calibrated threshold.
    new_hard = [f"{HARD[0]} {HARD_TOPICS[2]} (#1001)", f"{HARD[1]} {HARD_TOPICS[0]} (#1002)"]
    new_easy = [f"{EASY[0]} {EASY_TOPICS[4]} (#1003)", f"{EASY[3]} {EASY_TOPICS[3]} (#1004)"]
    assert all(router.score(t) >= router.threshold for t in new_hard)
    assert all(router.score(t) < router.threshold for t in new_easy)
    # Free paraphrases are at least ranked the right way round.
    paraphrased_hard = [
        "Prove that the recurrence a(n)=3a(n-1)-2 has a closed form",
        "Derive the eigenvalues of a rotation",
    ]
    paraphrased_easy = ["What is the capital of Japan?", "Give me a synonym for happy"]
    assert min(map(router.score, paraphrased_hard)) > max(map(router.score, paraphrased_easy))


def test_views_are_weighted_among_the_candidates(router: TrainedRouter, rows: list[dict]) -> None:
    assert router.views and set(router.views) <= {"ngram", "embedding", "knn", "structure"}
    assert all(f"{view}.cdf" in router.arrays for view in router.views)
    assert all(w > 0 for w in router.weights.values()) and sum(router.weights.values()) == pytest.approx(1)
    with pytest.raises(ConfigError, match="views must be some of"):
        train(rows, views=["ngram", "telepathy"])


def test_a_view_no_better_than_chance_is_left_out() -> None:
    # Both kinds of prompt have the same length, counts and punctuation: only the words differ, so
    # the shape view scores every prompt alike (APGR 0.5) and must not dilute the n-gram view.
    rows = [
        {"prompt": f"{'prove' if i % 2 else 'hello'} item {i % 10}", "label": "strong" if i % 2 else "weak"}
        for i in range(60)
    ]
    router = train(rows, seed=0, views=["ngram", "shape"])
    assert router.views == ("ngram",) and router.weights == {"ngram": 1.0}
    assert router.score("prove item 3") > router.score("hello item 3")


def test_threshold_meets_the_strong_share_on_out_of_fold_scores(router: TrainedRouter) -> None:
    report = router.config["report"]
    assert report["rows"] == 240 and report["folds"] == 5
    # A third of the rows are hard: at a 30% share nearly all strong calls go to them.
    assert 0.2 <= report["strong_share"] <= 0.3
    assert report["cv_apgr"] > 0.6


def test_target_quality_picks_the_fewest_strong_calls_that_meet_it(rows: list[dict]) -> None:
    router = train(rows, seed=0, target_quality=0.97)
    report = router.config["report"]
    assert report["quality"] >= 0.97
    assert report["strong_share"] < 0.6  # far fewer than all-strong
    looser = train(rows, seed=0, target_quality=0.85).config["report"]
    assert looser["strong_share"] < report["strong_share"]


def test_same_data_and_seed_give_the_same_file_and_scores(rows: list[dict], tmp_path: Path) -> None:
    a, b = train(rows, seed=7), train(rows, seed=7)
    a.save(tmp_path / "a.npz")
    b.save(tmp_path / "b.npz")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    loaded = TrainedRouter.load(tmp_path / "a.npz")
    texts = [r["prompt"] for r in rows[:20]]
    assert [loaded.score(t) for t in texts] == [a.score(t) for t in texts]
    assert loaded.threshold == a.threshold
    # Another seed changes the folds, hence the out-of-fold figures the threshold comes from.
    assert train(rows, seed=8).config["report"] != a.config["report"]


def test_row_formats_label_scores_and_messages() -> None:
    examples = examples_from_rows(
        [
            {"prompt": "hi", "label": "weak"},
            {"prompt": "prove it", "label": "strong"},
            {"messages": [{"role": "user", "content": "rate this"}], "weak_score": 6, "strong_score": 9.5},
        ]
    )
    assert [e.target for e in examples] == [0.0, 1.0, 1.0]
    assert examples[2].text == "rate this" and examples[2].strong == 9.5


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"weak_correct": True, "strong_correct": True}, "needs 'prompt'"),
        ({"prompt": "x", "label": "medium"}, "'label' must be"),
        ({"prompt": "x", "weak_correct": "yes", "strong_correct": True}, "must both be true or false"),
        ({"prompt": "x", "weak_score": 3}, "must both be finite numbers"),
        ({"prompt": "x", "weak_score": float("nan"), "strong_score": 1}, "finite"),
        ({"prompt": "x"}, "needs 'weak_correct'"),
        ({"prompt": "  ", "label": "weak"}, "empty"),
        (["not", "an", "object"], "expected a JSON object"),
    ],
)
def test_bad_rows_are_named(row: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        examples_from_rows([{"prompt": "ok", "label": "weak"}, row])
    assert info.value.message.startswith("row 2:")


def test_prompt_text_is_the_last_user_message() -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "answer"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "second"},
                {"type": "image_url"},
                {"type": "text", "text": "part"},
            ],
        },
    ]
    assert prompt_text(messages) == "second\npart"
    assert prompt_text([Message(role="user", content="typed")]) == "typed"
    assert prompt_text([{"role": "system", "content": "only a system prompt"}]) == "only a system prompt"


def test_load_rejects_what_is_not_a_router(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.npz"
    bogus.write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="not a trained router"):
        TrainedRouter.load(bogus)
    np.savez(tmp_path / "other.npz", weights=np.zeros(3), meta=np.array(json.dumps({"format": "x"})))
    with pytest.raises(ConfigError, match="not a llmrelay-trained-router"):
        TrainedRouter.load(tmp_path / "other.npz")


def test_router_curve_matches_routellm_on_a_worked_example() -> None:
    # 10 questions; the router ranks the two strong-only questions highest, so the first 20% of
    # strong calls recover the whole gap (weak 60%, strong 80%).
    scores = np.arange(10) / 10
    weak = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0])
    strong = np.array([1, 1, 1, 1, 1, 1, 0, 0, 1, 1])
    curve = router_curve(scores, weak, strong)
    # Deciles of 0..0.9: strong shares 100, 90, ..., 10, and 0 at the last edge (> max).
    assert curve.strong_pct.tolist() == pytest.approx([0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100])
    assert curve.performance.tolist() == pytest.approx([0.6, 0.7, 0.8] + [0.8] * 8)
    # Area: 0.1 * (0.65 + 0.75) + 0.8 * 0.8 = 0.78; weak 0.6, strong 0.8 -> (0.78-0.6)/0.2 = 0.9.
    assert curve.apgr == pytest.approx(0.9)
    assert curve.cpt(0.5) == pytest.approx(10.0)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmrelay.cli", "router", "train", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_trains_and_writes_a_router(rows: list[dict], tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    # A raw U+2028 inside a JSON string is not a line break of JSON Lines.
    rows = [{**rows[0], "prompt": rows[0]["prompt"] + "\u2028two lines"}, *rows[1:]]
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    out = tmp_path / "router.npz"
    done = run_cli(str(data), "-o", str(out), "--strong-share", "0.25", "--seed", "3", "--no-embeddings")
    assert done.returncode == 0, done.stderr
    assert "trained on 240 rows" in done.stdout
    assert "5-fold cross-validated: APGR" in done.stdout
    assert "views kept:" in done.stdout
    assert "threshold" in done.stdout
    router = TrainedRouter.load(out)
    assert set(router.views) <= {"ngram", "shape"}  # --no-embeddings: no embedding-model views
    assert router.config["report"]["seed"] == 3
    assert router.config["report"]["strong_share"] <= 0.25


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"prompt": "a", "label": "weak"}\n{"prompt": "b", "label": \n', "data.jsonl:2: not JSON"),
        (
            '{"prompt": "a", "label": "weak"}\n\n{"prompt": "b", "label": "huge"}\n',
            "data.jsonl:3: 'label' must be",
        ),
        ("\n", "has no training rows"),
        # One outcome only: nothing to learn (the learners failed with an IndexError).
        ('{"prompt": "a", "label": "weak"}\n' * 40, "at least 2 rows of each"),
        ('{"prompt": "a", "label": "strong"}\n', "the strong model doing better (1 rows) and not (0)"),
    ],
)
def test_cli_bad_data_is_a_clear_error_with_exit_code_2(content: str, message: str, tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text(content)
    done = run_cli(str(data), "-o", str(tmp_path / "r.npz"))
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "r.npz").exists()


def test_cli_missing_file_and_conflicting_targets(tmp_path: Path) -> None:
    done = run_cli(str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "r.npz"))
    assert done.returncode == 2 and "cannot read" in done.stderr and "Traceback" not in done.stderr
    done = run_cli("x.jsonl", "-o", "r.npz", "--strong-share", "0.3", "--target-quality", "0.9")
    assert done.returncode == 2 and "not allowed with" in done.stderr
