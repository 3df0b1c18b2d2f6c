"""What the trained router reads in a prompt: the parts of a multiple-choice question, its wording,
and how alike its answer options are."""

from __future__ import annotations

import numpy as np
import pytest

from llmrelay.routing.features import (
    NUMBER_NAMES,
    OPTION_NAMES,
    QUESTION_NAMES,
    number_features,
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


def test_the_numbers_of_a_word_problem() -> None:
    small = number_features("Tom has 3 apples and 2 pears. How many fruits does he have?")
    big = number_features(
        "A store sells 1,250 shirts at $12.50 each and 3,400 caps for 7 dollars. How much money in total?"
    )
    assert feature(big, NUMBER_NAMES, "max_log_value") == pytest.approx(np.log1p(3400))
    assert feature(small, NUMBER_NAMES, "max_log_value") == pytest.approx(np.log1p(3))
    assert feature(big, NUMBER_NAMES, "values_over_1000") == pytest.approx(np.log1p(2))
    assert feature(big, NUMBER_NAMES, "non_integers") == pytest.approx(np.log1p(1))  # 12.50
    assert (
        feature(big, NUMBER_NAMES, "asks_how_much") == 1.0 and feature(big, NUMBER_NAMES, "asks_total") == 1.0
    )
    assert feature(big, NUMBER_NAMES, "units") == pytest.approx(np.log1p(1))  # dollars
    # A run of digits too long for a float is capped, not infinite (an inf would make scores NaN).
    assert np.isfinite(number_features("9" * 400 + " apples")).all()
