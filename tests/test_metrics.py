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


def test_collapse_is_one_class_for_every_example_or_a_near_constant_regression():
    import numpy as np

    from kprune_lib.config import COLLAPSE_SD_FRACTION
    from kprune_lib.data.evaluate import collapsed
    from kprune_lib.data.tasks import get_task

    mrpc, stsb = get_task("mrpc"), get_task("stsb")
    one_class = np.array([[0.2, 0.9], [0.1, 0.3], [-1.0, 2.0]])  # argmax 1 everywhere
    assert collapsed(mrpc, one_class, [0, 1, 1])
    assert not collapsed(mrpc, np.array([[0.2, 0.9], [0.5, 0.3]]), [1, 0])
    labels = [0.0, 2.5, 5.0, 1.0]
    sd = np.std(labels)
    near = np.array([[3.0], [3.0 + 0.5 * COLLAPSE_SD_FRACTION * sd], [3.0], [3.0]])
    varied = np.array([[0.5], [2.0], [4.5], [1.2]])
    assert collapsed(stsb, near, labels) and not collapsed(stsb, varied, labels)
