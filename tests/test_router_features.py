"""What the trained router reads in a prompt: the parts of a multiple-choice question, its wording,
and how alike its answer options are."""

from __future__ import annotations

import numpy as np
import pytest

from llmrelay.routing.features import (
    OPTION_NAMES,
    QUESTION_NAMES,
    option_features,
    question_features,
    split_question,
)

QUESTION = "Which of the following is NOT a prime number?\nA. 2\nB. 3\nC. 9\nD. 11"


def feature(values: np.ndarray, names: tuple[str, ...], name: str) -> float:
    return float(values[names.index(name)])


def test_a_multiple_choice_prompt_is_split_into_stem_and_options() -> None:
    stem, options = split_question(QUESTION)
    assert stem == "Which of the following is NOT a prime number?\n"
    assert options == ["2", "3", "9", "11"]
    # A prompt without lettered option lines is all stem; so is one with a single "A." line.
    assert split_question("Janet has 3 apples and buys 5 more.") == (
        "Janet has 3 apples and buys 5 more.",
        [],
    )
    assert split_question("A. is the first letter") == ("A. is the first letter", [])


def test_question_wording_counts_negation_and_options() -> None:
    values = question_features(QUESTION)
    assert feature(values, QUESTION_NAMES, "options") == pytest.approx(np.log1p(4))
    assert feature(values, QUESTION_NAMES, "options_with_numbers") == pytest.approx(np.log1p(4))
    assert feature(values, QUESTION_NAMES, "stem_negations") == pytest.approx(np.log1p(1))
    assert feature(values, QUESTION_NAMES, "which_of_the_following") == pytest.approx(np.log1p(1))
    plain = question_features("Janet has 3 apples. She eats half of them. How many are left?")
    assert feature(plain, QUESTION_NAMES, "options") == 0.0
    assert feature(plain, QUESTION_NAMES, "stem_negations") == 0.0
    assert feature(plain, QUESTION_NAMES, "step_words") == pytest.approx(np.log1p(2))  # half, left


def test_options_that_differ_in_a_detail_are_more_alike_than_options_on_other_topics() -> None:
    from llmrelay.static_embedding import shared_static_embedder

    embedder = shared_static_embedder()
    close = "Which enzyme is described?\nA. DNA polymerase I\nB. DNA polymerase II\nC. DNA polymerase III\nD. DNA ligase"
    apart = "Which enzyme is described?\nA. DNA polymerase\nB. the French revolution\nC. a jazz trumpet\nD. tax law"
    sim_close = feature(option_features(close, embedder), OPTION_NAMES, "option_sim_mean")
    sim_apart = feature(option_features(apart, embedder), OPTION_NAMES, "option_sim_mean")
    assert sim_close > sim_apart + 0.1
    assert option_features("No options here.", embedder).tolist() == [0.0] * len(OPTION_NAMES)
