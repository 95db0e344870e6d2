"""The evaluation suite's metrics on hand-built cases with known answers."""
import math

import numpy as np
import pytest

from video2reward import metrics as M


def test_auroc_separable_inseparable_and_ties():
    labels = np.array([0, 0, 1, 1], dtype=bool)
    assert M.auroc(np.array([0.1, 0.2, 0.8, 0.9]), labels) == 1.0
    assert M.auroc(np.array([0.9, 0.8, 0.2, 0.1]), labels) == 0.0
    assert M.auroc(np.full(4, 0.5), labels) == 0.5  # every pair tied: one half each
    # one of four positive-negative pairs misordered
    assert M.auroc(np.array([0.1, 0.4, 0.35, 0.8]), labels) == pytest.approx(0.75)
    assert math.isnan(M.auroc(np.array([0.1, 0.2]), np.array([True, True])))


def test_roc_curve_points():
    fpr, tpr = M.roc_curve(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1], dtype=bool))
    assert fpr.tolist() == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert tpr.tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    fpr, tpr = M.roc_curve(np.array([0.3, 0.3]), np.array([0, 1], dtype=bool))  # a tie moves both at once
    assert fpr.tolist() == [0.0, 1.0] and tpr.tolist() == [0.0, 1.0]
    assert np.trapezoid(*M.roc_curve(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1], bool))[::-1]) == \
        pytest.approx(0.75)


def test_kendall_tau_a_known_orders():
    assert M.kendall_tau_a([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert M.kendall_tau_a([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert M.kendall_tau_a([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)  # 2 concordant, 1 discordant pair
    # ties stay in the denominator: two groups of two, perfectly separated -> 4 of 6 pairs
    assert M.kendall_tau_a([0, 0, 1, 1], [1, 2, 3, 4]) == pytest.approx(2 / 3)
    assert M.kendall_tau_a([0, 0, 1, 1], [0, 0, 1, 1]) == pytest.approx(2 / 3)
    assert math.isnan(M.kendall_tau_a([1], [1]))


def test_accuracy_difference_and_correlations():
    labels = np.array([0, 1, 0, 1], dtype=bool)
    assert M.accuracy_at(np.array([0.2, 0.5, 0.7, 0.4]), labels, 0.5) == 0.5  # 0.5 counts as success
    assert M.mean_difference(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1, 1, 0, 0], bool)) == -2.0
    assert math.isnan(M.mean_difference(np.ones(3), np.ones(3, bool)))
    t = np.arange(11.0)
    assert M.voc(t ** 2) == pytest.approx(1.0)  # monotone: rank order only
    assert M.voc_r(t / 10) == pytest.approx(1.0)
    assert M.voc_r(t ** 4) < 0.95  # Pearson sees the curvature
    assert M.voc(-t) == pytest.approx(-1.0)
    assert M.spearman(np.ones(4), np.arange(4)) == 0.0 and M.pearson(np.ones(4), np.arange(4)) == 0.0
    assert M.rankdata(np.array([3.0, 1.0, 1.0, 2.0])).tolist() == [3.0, 0.5, 0.5, 2.0]
    assert M.nanmean([1.0, float("nan"), None, 3.0]) == 2.0 and math.isnan(M.nanmean([]))


def test_confusion_gap():
    gap = M.confusion_gap(np.array([[0.9, 0.1], [0.3, 0.8]]))
    assert gap["diagonal"] == pytest.approx(0.85)
    assert gap["off_diagonal"] == pytest.approx(0.2)
    assert gap["gap"] == pytest.approx(0.65)
    with pytest.raises(ValueError, match="square"):
        M.confusion_gap(np.zeros((2, 3)))
