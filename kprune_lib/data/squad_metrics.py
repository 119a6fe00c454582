"""SQuAD metrics: exact match and token F1 with the official answer normalisation.

Written from the SQuAD 1.1 / 2.0 evaluation scripts' definitions (Rajpurkar et al.):
normalise = lower-case, drop punctuation, drop the articles a/an/the, collapse white space;
per question the maximum over its gold answers; reported as percentages.
SQuAD 2.0: gold answers that normalise to "" are ignored; a question with no gold answer left
scores 1 (EM and F1) iff the prediction normalises to "" as well.
"""
from __future__ import annotations

import re
import string
from collections import Counter

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str, version_2: bool = False) -> float:
    """Token-overlap F1 of normalised answers.

    Empty token lists: SQuAD 1.1's script scores 0 (no overlap); 2.0's scores 1 iff both are empty.
    """
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if version_2 and (not pred or not ref):
        return float(pred == ref)
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def question_scores(prediction: str, golds: list[str], version_2: bool = False) -> tuple[float, float]:
    """(EM, F1) of one question in [0, 1]: maximum over its gold answers."""
    if version_2:
        golds = [g for g in golds if normalize_answer(g)] or [""]
    elif not golds:
        raise ValueError("a SQuAD 1.1 question without gold answers cannot be scored; is this a SQuAD 2.0 file?")
    return (max(exact_match(prediction, g) for g in golds),
            max(f1(prediction, g, version_2) for g in golds))


def squad_scores(predictions: dict[str, str], golds: dict[str, list[str]], version_2: bool = False) -> dict[str, float]:
    """{"exact_match", "f1"} in percent over all questions of `golds` (id -> gold answer texts).

    A question without a prediction scores 0 (as in the official scripts, which warn about it).
    """
    if not golds:
        raise ValueError("no questions to score")
    em = f = 0.0
    for qid, answers in golds.items():
        if qid in predictions:
            e, s = question_scores(predictions[qid], answers, version_2)
            em, f = em + e, f + s
    return {"exact_match": 100.0 * em / len(golds), "f1": 100.0 * f / len(golds)}
