"""Metrics of a reward model's scores, as pure functions on numpy arrays (docs/evaluation.md).

Every function takes plain arrays and returns floats (``nan`` where the metric is undefined, e.g.
AUROC with one class only), so each can be checked on hand-built cases.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks (0-based) with ties given their average rank."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = 0.5 * (s + e - 1)
    return ranks


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; 0.0 when either input is constant."""
    x = np.asarray(x, dtype=np.float64) - np.mean(x)
    y = np.asarray(y, dtype=np.float64) - np.mean(y)
    denom = np.sqrt((x ** 2).sum() * (y ** 2).sum())
    return float((x * y).sum() / denom) if denom > 0 else 0.0


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (Pearson of the average ranks); 0.0 when either input is constant."""
    return pearson(rankdata(x), rankdata(y))


def voc(mu: np.ndarray) -> float:
    """Value-order correlation: Spearman of ``mu`` ``(L,)`` with the frame index."""
    return spearman(mu, np.arange(len(mu)))


def voc_r(mu: np.ndarray) -> float:
    """Robometer's VOC-r: Pearson of ``mu`` ``(L,)`` with normalised time ``t / (L - 1)``."""
    return pearson(mu, np.linspace(0.0, 1.0, len(mu)))


def kendall_tau_a(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall tau-a: (concordant - discordant pairs) / all ``n (n - 1) / 2`` pairs.

    A pair tied in either input counts as neither, but stays in the denominator, so with ties in
    ``x`` the largest reachable value is ``kendall_tau_a(x, x) < 1``. ``nan`` for fewer than 2 items.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = len(x)
    if n < 2:
        return float("nan")
    sx = np.sign(x[:, None] - x[None, :])
    sy = np.sign(y[:, None] - y[None, :])
    return float(np.triu(sx * sy, k=1).sum() / (n * (n - 1) / 2))


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for boolean ``labels``: the probability that a random
    positive scores above a random negative, ties counting one half (Mann-Whitney U / (n+ n-)).
    ``nan`` unless both classes are present."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores) + 1.0  # 1-based average ranks
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(false positive rate, true positive rate)`` at every threshold ``score >= t``, from (0, 0)
    to (1, 1); tied scores move both rates at once. Empty arrays unless both classes are present."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return np.zeros(0), np.zeros(0)
    order = np.argsort(-scores, kind="mergesort")
    s, lab = scores[order], labels[order]
    last = np.r_[s[1:] != s[:-1], True]  # the last item of each run of tied scores
    tp, fp = np.cumsum(lab)[last], np.cumsum(~lab)[last]
    return np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos]


def accuracy_at(scores: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> float:
    """Fraction of items where ``score >= threshold`` equals the boolean label; ``nan`` if empty."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    return float(np.mean((scores >= threshold) == labels)) if len(scores) else float("nan")


def mean_difference(scores: np.ndarray, labels: np.ndarray) -> float:
    """``mean(scores[labels]) - mean(scores[~labels])``; ``nan`` unless both classes are present."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    if labels.all() or not labels.any():
        return float("nan")
    return float(scores[labels].mean() - scores[~labels].mean())


def confusion_gap(matrix: np.ndarray) -> dict[str, float]:
    """``matrix[i, j]`` = score of task-i trajectories under task-j goals (square). Returns the mean of
    the diagonal, the mean of the off-diagonal entries and ``gap`` = diagonal - off-diagonal."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {m.shape}")
    diag = float(np.mean(np.diag(m))) if len(m) else float("nan")
    off = m[~np.eye(len(m), dtype=bool)]
    off_mean = float(off.mean()) if off.size else float("nan")
    return {"diagonal": diag, "off_diagonal": off_mean, "gap": diag - off_mean}


def nanmean(values: Sequence[float]) -> float:
    """Mean of the finite values; ``nan`` when there are none (no warning)."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


__all__ = ["accuracy_at", "auroc", "confusion_gap", "kendall_tau_a", "mean_difference", "nanmean", "pearson",
           "rankdata", "roc_curve", "spearman", "voc", "voc_r"]
