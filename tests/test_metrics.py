"""GLUE metrics on hand-checked cases."""
import pytest

from kprune_lib.data import metrics


def test_accuracy_f1_matthews_by_hand():
    pred = [1, 1, 0, 0, 1, 0]
    gold = [1, 0, 0, 1, 1, 0]
    # tp=2 fp=1 fn=1 tn=2
    assert metrics.accuracy(pred, gold) == pytest.approx(4 / 6)
    assert metrics.f1_binary(pred, gold) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert metrics.matthews(pred, gold) == pytest.approx((2 * 2 - 1 * 1) / 9)
    assert metrics.matthews([1, 1], [1, 0]) == 0.0  # degenerate denominator


def test_correlations_by_hand():
    assert metrics.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert metrics.spearman([1, 2, 3, 4], [10, 20, 15, 40]) == pytest.approx(1 - 6 * 2 / (4 * 15))
    assert metrics.spearman([3, 2, 1], [1, 2, 3]) == pytest.approx(-1.0)
