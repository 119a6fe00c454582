"""GLUE metrics (spec: evaluation protocol), those of a custom task (macro-F1, multi-class MCC), and token
classification's entity-level scores (seqeval)."""
from __future__ import annotations

import numpy as np
from scipy import stats


def accuracy(pred, gold) -> float:
    return float(np.mean(np.asarray(pred) == np.asarray(gold)))


def f1_binary(pred, gold) -> float:
    """F1 of the positive class (label 1)."""
    pred, gold = np.asarray(pred), np.asarray(gold)
    tp = float(np.sum((pred == 1) & (gold == 1)))
    fp = float(np.sum((pred == 1) & (gold == 0)))
    fn = float(np.sum((pred == 0) & (gold == 1)))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def matthews(pred, gold) -> float:
    """Matthews correlation coefficient for binary labels."""
    pred, gold = np.asarray(pred), np.asarray(gold)
    tp = float(np.sum((pred == 1) & (gold == 1)))
    tn = float(np.sum((pred == 0) & (gold == 0)))
    fp = float(np.sum((pred == 1) & (gold == 0)))
    fn = float(np.sum((pred == 0) & (gold == 1)))
    denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return 0.0 if denom == 0 else float((tp * tn - fp * fn) / denom)


def pearson(pred, gold) -> float:
    return float(stats.pearsonr(pred, gold)[0])


def spearman(pred, gold) -> float:
    return float(stats.spearmanr(pred, gold)[0])


def f1_macro(pred, gold) -> float:
    """Macro-F1: the unweighted mean of each class's F1 over the classes present in gold or pred."""
    pred, gold = np.asarray(pred), np.asarray(gold)
    scores = []
    for c in np.union1d(pred, gold):
        tp = float(np.sum((pred == c) & (gold == c)))
        fp = float(np.sum((pred == c) & (gold != c)))
        fn = float(np.sum((pred != c) & (gold == c)))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def mcc(pred, gold) -> float:
    """Matthews correlation coefficient for any number of classes (Gorodkin's R_K; = `matthews` for binary)."""
    pred, gold = np.asarray(pred), np.asarray(gold)
    classes = np.union1d(pred, gold)
    t = np.array([np.sum(gold == c) for c in classes], dtype=float)  # true counts
    p = np.array([np.sum(pred == c) for c in classes], dtype=float)  # predicted counts
    c, s = float(np.sum(pred == gold)), float(len(gold))
    denom = np.sqrt((s * s - p @ p) * (s * s - t @ t))
    return 0.0 if denom == 0 else float((c * s - t @ p) / denom)


def entity_scores(gold: list[list[str]], pred: list[list[str]]) -> dict[str, float]:
    """Token classification: entity-level precision, recall and F1 over all entities (micro average) with seqeval's
    default (conlleval) rules, the ones transformers' run_ner.py reports, and token accuracy: the fraction of scored
    words whose tag is right. gold, pred: per sentence, one IOB tag name per scored word."""
    from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score

    return {"f1": float(f1_score(gold, pred, zero_division=0)),
            "precision": float(precision_score(gold, pred, zero_division=0)),
            "recall": float(recall_score(gold, pred, zero_division=0)),
            "accuracy": float(accuracy_score(gold, pred))}


METRICS = {"accuracy": accuracy, "f1": f1_binary, "matthews": matthews, "pearson": pearson, "spearman": spearman,
           "f1_macro": f1_macro, "mcc": mcc}


def compute(names, pred, gold) -> dict[str, float]:
    return {n: METRICS[n](pred, gold) for n in names}
