"""SQuAD EM / F1: hand-checked cases and the real dev file (gold answers as predictions score 100 / 100)."""
import pytest

from conftest import SHARED, needs_shared
from kprune_lib.data.squad import golds, read_squad_json, titles
from kprune_lib.data.squad_metrics import exact_match, f1, normalize_answer, question_scores, squad_scores

DEV = SHARED / "data" / "squad" / "dev-v1.1.json"


@pytest.mark.parametrize("text,expected", [
    ("The Denver Broncos!", "denver broncos"),  # lower case, punctuation, leading article
    ("  an  apple, a   day ", "apple day"),  # articles anywhere, white space collapsed
    ("Theater of the Absurd", "theater of absurd"),  # "the" only as a whole word
    ("U.S.-born", "usborn"),  # punctuation removed, not replaced by a space
    ("A", ""),
])
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_exact_match_and_f1_by_hand():
    assert exact_match("the Cat.", "cat") == 1.0 and exact_match("cats", "cat") == 0.0
    # pred {cat, sat} vs gold {cat, sat, on, mat}: P = 1, R = 1/2 -> F1 = 2/3
    assert f1("the cat sat", "cat sat on the mat") == pytest.approx(2 / 3)
    # multiset overlap: pred x x y, gold x y y -> 2 common tokens, P = R = 2/3
    assert f1("x x y", "x y y") == pytest.approx(2 / 3)
    assert f1("dog", "cat") == 0.0
    # empty token lists: 1.1 counts no overlap (0); 2.0 scores 1 iff both are empty
    assert f1("the", "a") == 0.0
    assert f1("the", "a", version_2=True) == 1.0 and f1("dog", "", version_2=True) == 0.0


def test_question_scores_take_the_best_gold():
    em, score = question_scores("Denver", ["Denver Broncos", "Broncos", "Denver"])
    assert em == 1.0 and score == 1.0
    em, score = question_scores("the Denver team", ["Denver Broncos", "Carolina Panthers"])
    assert em == 0.0 and score == pytest.approx(0.5)  # {denver, team} vs {denver, broncos}: P = R = 1/2


def test_squad2_null_answers():
    # an unanswerable question scores 1 iff the prediction is empty
    assert question_scores("", [], version_2=True) == (1.0, 1.0)
    assert question_scores("Broncos", [], version_2=True) == (0.0, 0.0)
    # 2.0 ignores gold answers that normalise to "" ("." here); 1.1 compares them as ""
    assert question_scores("", [".", "Broncos"], version_2=True) == (0.0, 0.0)
    assert question_scores("", [".", "Broncos"], version_2=False) == (1.0, 0.0)
    with pytest.raises(ValueError, match="squad_v2|2.0"):
        question_scores("x", [], version_2=False)


def test_squad_scores_percentages_and_missing_predictions():
    gold = {"q1": ["Denver Broncos"], "q2": ["Carolina"], "q3": ["1973"], "q4": ["blue"]}
    pred = {"q1": "Denver Broncos", "q2": "Carolina Panthers", "q3": "1974"}  # q4 missing -> 0
    scores = squad_scores(pred, gold)
    assert scores["exact_match"] == pytest.approx(25.0)
    assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3) / 4)


@needs_shared(DEV)
def test_real_dev_file_gold_predictions_score_100():
    examples = read_squad_json(DEV)
    assert len(examples) == 10570 and len(titles(examples)) == 48  # the official dev-v1.1 (PROVENANCE.md)
    gold = golds(examples)
    perfect = squad_scores({e.id: e.answers[0] for e in examples}, gold)
    assert perfect == {"exact_match": 100.0, "f1": 100.0}
    # questions of the first article answered with an unrelated token: EM and F1 drop by exactly their share
    first = {e.id for e in examples if e.title == examples[0].title}
    wrong = squad_scores({e.id: "zzzqqq" if e.id in first else e.answers[0] for e in examples}, gold)
    expected = 100.0 * (len(examples) - len(first)) / len(examples)
    assert wrong["exact_match"] == pytest.approx(expected) and wrong["f1"] == pytest.approx(expected)
