"""SQuAD and Japanese character-level EM/F1, checked against hand-computed values."""

from __future__ import annotations

import re
import string
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kotae.reader_training.metrics import (
    detect_language,
    evaluate_predictions,
    exact_match_score,
    f1_score,
    normalize_answer,
    normalize_japanese,
    score_example,
)


def official_normalize(s: str) -> str:
    """Verbatim logic of the official SQuAD v1.1 evaluate script's normalize_answer."""

    def remove_articles(text: str) -> str:
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text: str) -> str:
        return " ".join(text.split())

    def remove_punc(text: str) -> str:
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def official_f1(prediction: str, ground_truth: str) -> float:
    prediction_tokens = official_normalize(prediction).split()
    ground_truth_tokens = official_normalize(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(prediction_tokens)
    recall = num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def test_english_normalisation() -> None:
    assert normalize_answer("The  Denver Broncos!") == "denver broncos"
    assert normalize_answer("an apple, a pear") == "apple pear"
    assert normalize_answer("theatre") == "theatre"  # articles only as whole words


def test_english_hand_computed() -> None:
    # pred [denver, broncos, won] vs gold [denver, broncos]: P = 2/3, R = 1, F1 = 0.8
    assert f1_score("Denver Broncos won", "the Denver Broncos", "en") == pytest.approx(0.8)
    assert exact_match_score("an Apple.", "apple", "en") == 1.0
    assert exact_match_score("apples", "apple", "en") == 0.0
    assert f1_score("Paris", "London", "en") == 0.0
    assert f1_score("", "Paris", "en") == 0.0
    assert f1_score("", "", "en") == 1.0  # SQuAD v2: empty matches empty


def test_v1_and_v2_rules_differ_only_for_empty_answers() -> None:
    # a reference that normalises to nothing: v2.0 drops it (-> ""), v1.1 keeps it with F1 0
    assert score_example("", ["."], "en", version_2=True) == (1.0, 1.0)
    assert score_example("", ["."], "en", version_2=False) == (1.0, 0.0)
    assert f1_score("the", "the", "en", version_2=False) == 0.0
    assert score_example("Paris", ["paris"], "en", version_2=False) == (1.0, 1.0)


def test_best_over_references() -> None:
    # "paris france" vs "paris": P 1/2 R 1 -> 2/3; vs "france and paris": P 1, R 2/3 -> 0.8
    em, f1 = score_example("Paris France", ["Paris", "France and Paris"], "en")
    assert em == 0.0
    assert f1 == pytest.approx(0.8)
    assert score_example("Paris", ["London", "paris"], "en") == (1.0, 1.0)


def test_japanese_character_level() -> None:
    assert normalize_japanese("「奈良」。") == "奈良"
    assert normalize_japanese("（東大寺）、 大仏") == "東大寺大仏"
    assert normalize_japanese("ＡＢＣ１２３") == "abc123"  # NFKC, then lowercase
    assert (
        normalize_japanese("約１５メートル～２０＄") == "約15メートル20"
    )  # symbols the JaQuAD script strips
    # 奈良県 vs 奈良: 2 shared characters, P = 2/3, R = 1 -> F1 = 0.8
    assert f1_score("奈良県", "奈良", "ja") == pytest.approx(0.8)
    # 東大寺の大仏 vs 大仏: shared 大 (once) + 仏 = 2; P = 2/6, R = 1 -> F1 = 0.5
    assert f1_score("東大寺の大仏", "大仏", "ja") == pytest.approx(0.5)
    assert exact_match_score("「奈良」", "奈良。", "ja") == 1.0
    # English scoring would see one whitespace token each and give 0
    assert f1_score("奈良県", "奈良", "en") == 0.0


def test_language_detection() -> None:
    assert detect_language("8世紀に日本の首都はどこでしたか。") == "ja"
    assert detect_language("カタカナ") == "ja"
    assert detect_language("Which NFL team represented the AFC at Super Bowl 50?") == "en"
    assert detect_language("NFLのチームは？") == "ja"
    assert detect_language("1234") == "en"


def test_evaluate_predictions_v2_and_auto_language() -> None:
    references = {"a": ["Paris"], "b": [], "c": ["奈良"]}
    predictions = {"a": "Paris", "b": "", "c": "奈良県"}
    texts = {"a": "Where?", "b": "Who?", "c": "どこ？"}
    scores = evaluate_predictions(predictions, references, "auto", texts=texts)
    assert scores["n"] == 3
    assert scores["n_ja"] == 1 and scores["n_en"] == 2
    assert scores["exact_match"] == pytest.approx(200 / 3)
    assert scores["f1"] == pytest.approx((1 + 1 + 0.8) / 3 * 100)
    assert scores["has_ans_n"] == 2 and scores["no_ans_n"] == 1
    assert scores["has_ans_f1"] == pytest.approx(90.0)
    assert scores["no_ans_exact_match"] == 100.0
    # a missing prediction counts as the empty answer
    assert evaluate_predictions({}, {"a": ["Paris"]}, "en")["f1"] == 0.0
    assert "has_ans_f1" not in evaluate_predictions({"a": "Paris"}, {"a": ["Paris"]}, "en")


@given(st.text(max_size=40), st.text(max_size=40))
def test_english_matches_official_script(prediction: str, reference: str) -> None:
    assert normalize_answer(prediction) == official_normalize(prediction)
    assert f1_score(prediction, reference, "en", version_2=False) == pytest.approx(
        official_f1(prediction, reference)
    )
    if official_normalize(reference) and official_normalize(prediction):
        assert f1_score(prediction, reference, "en") == pytest.approx(official_f1(prediction, reference))


@given(st.text(max_size=30), st.text(max_size=30), st.sampled_from(["en", "ja"]))
def test_f1_properties(prediction: str, reference: str, language: str) -> None:
    f1 = f1_score(prediction, reference, language)  # type: ignore[arg-type]
    assert 0.0 <= f1 <= 1.0
    assert f1 == pytest.approx(f1_score(reference, prediction, language))  # type: ignore[arg-type]
    if exact_match_score(prediction, reference, language):  # type: ignore[arg-type]
        assert f1 == 1.0
