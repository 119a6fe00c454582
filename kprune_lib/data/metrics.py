"""GLUE metrics (spec: evaluation protocol)."""
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


METRICS = {"accuracy": accuracy, "f1": f1_binary, "matthews": matthews, "pearson": pearson, "spearman": spearman}


def compute(names, pred, gold) -> dict[str, float]:
    return {n: METRICS[n](pred, gold) for n in names}
