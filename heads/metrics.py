"""Classification metrics and patient-level bootstrap confidence intervals (numpy only).

* accuracy; balanced accuracy (mean per-class recall over the classes present in ``y_true``);
* quadratic weighted kappa (Cohen 1968): ``1 - sum(W * O) / sum(W * E)`` with ``W_ij = (i - j)^2 /
  (K - 1)^2``, ``O`` the confusion matrix and ``E`` the outer product of its marginals over ``n``;
* mean absolute error of the predicted grade (ordinal tasks);
* AUROC as the Mann-Whitney statistic (ties count one half), AUPRC as average precision
  ``sum_n (R_n - R_{n-1}) P_n`` over distinct score thresholds (the step-wise area, no interpolation);
* :func:`patient_bootstrap`: percentile CIs from resampling *patients* with replacement (Efron &
  Tibshirani 1993): every sample of a drawn patient enters the replicate together, as many times as the
  patient is drawn, so correlated samples (two knees, several images) are never split apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np


def _as_int(y: Sequence[int] | np.ndarray) -> np.ndarray:
    return np.asarray(y, dtype=np.int64).reshape(-1)


def confusion_matrix(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, k: int
) -> np.ndarray:
    """``[k, k]`` counts, rows true class, columns predicted class."""
    t, p = _as_int(y_true), _as_int(y_pred)
    if t.shape != p.shape:
        raise ValueError("y_true and y_pred differ in length")
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= k):
        raise ValueError(f"labels outside 0..{k - 1}")
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (t, p), 1)
    return matrix


def accuracy(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray) -> float:
    t, p = _as_int(y_true), _as_int(y_pred)
    if t.size == 0:
        raise ValueError("no samples")
    return float(np.mean(t == p))


def balanced_accuracy(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray) -> float:
    """Mean recall over the classes that occur in ``y_true``."""
    t, p = _as_int(y_true), _as_int(y_pred)
    if t.size == 0:
        raise ValueError("no samples")
    recalls = [float(np.mean(p[t == c] == c)) for c in np.unique(t)]
    return float(np.mean(recalls))


def quadratic_weighted_kappa(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, k: int | None = None
) -> float:
    """Cohen's kappa with quadratic weights; 0.0 when the expected disagreement is 0 (one class only)."""
    t, p = _as_int(y_true), _as_int(y_pred)
    if t.size == 0:
        raise ValueError("no samples")
    labels = np.union1d(t, p)
    remap = {int(v): i for i, v in enumerate(labels)}
    kk = len(labels)
    if k is not None and kk > k:
        raise ValueError(f"labels outside 0..{k - 1}")
    observed = confusion_matrix([remap[int(v)] for v in t], [remap[int(v)] for v in p], kk).astype(np.float64)
    expected = np.outer(observed.sum(1), observed.sum(0)) / observed.sum()
    values = labels.astype(np.float64)
    weights = (values[:, None] - values[None, :]) ** 2
    denominator = float((weights * expected).sum())
    if denominator == 0.0:
        return 0.0
    return float(1.0 - (weights * observed).sum() / denominator)


def mean_absolute_error(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray) -> float:
    t, p = _as_int(y_true), _as_int(y_pred)
    if t.size == 0:
        raise ValueError("no samples")
    return float(np.mean(np.abs(t - p)))


def auroc(y_true: Sequence[int] | np.ndarray, score: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U / (n_pos n_neg), ties counted as one half)."""
    t = _as_int(y_true)
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    pos, neg = s[t == 1], s[t == 0]
    if pos.size == 0 or neg.size == 0:
        raise ValueError("AUROC needs both classes")
    # Average ranks (1-based) of all scores, ties sharing their mean rank.
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(s.size, dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < s.size:
        j = i
        while j + 1 < s.size and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    u = ranks[t == 1].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


def roc_curve(
    y_true: Sequence[int] | np.ndarray, score: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at every distinct threshold, from (0, 0) to (1, 1)."""
    t = _as_int(y_true)
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, t_sorted = s[order], t[order]
    last = np.r_[np.nonzero(np.diff(s_sorted))[0], s.size - 1]
    tps = np.cumsum(t_sorted)[last]
    fps = (last + 1) - tps
    n_pos, n_neg = max(int(t.sum()), 1), max(int((t == 0).sum()), 1)
    return np.r_[0.0, fps / n_neg], np.r_[0.0, tps / n_pos]


def auprc(y_true: Sequence[int] | np.ndarray, score: Sequence[float] | np.ndarray) -> float:
    """Average precision: ``sum_n (R_n - R_{n-1}) P_n`` over distinct thresholds, highest first."""
    t = _as_int(y_true)
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    n_pos = int(t.sum())
    if n_pos == 0:
        raise ValueError("AUPRC needs at least one positive")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, t_sorted = s[order], t[order]
    last = np.r_[np.nonzero(np.diff(s_sorted))[0], s.size - 1]
    tps = np.cumsum(t_sorted)[last].astype(np.float64)
    precision = tps / (last + 1)
    recall = tps / n_pos
    previous = np.r_[0.0, recall[:-1]]
    return float(np.sum((recall - previous) * precision))


# ---------------------------------------------------------------------------------- bootstrap


@dataclass(frozen=True)
class Interval:
    """A point estimate with a percentile bootstrap interval."""

    value: float
    low: float
    high: float
    n_boot: int  # replicates on which the metric was defined
    level: float = 0.95

    def as_dict(self) -> dict[str, float | int]:
        return {"value": self.value, "ci_low": self.low, "ci_high": self.high, "n_boot": self.n_boot}


def patient_bootstrap_indices(
    patients: Sequence[str] | np.ndarray, n_boot: int, seed: int
) -> Iterator[np.ndarray]:
    """Sample indices of ``n_boot`` replicates, each drawn by resampling patients with replacement."""
    ids = np.asarray(patients)
    unique, inverse = np.unique(ids, return_inverse=True)
    groups = [np.nonzero(inverse == g)[0] for g in range(unique.size)]
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        drawn = rng.integers(0, unique.size, size=unique.size)
        yield np.concatenate([groups[g] for g in drawn])


def patient_bootstrap(
    metric: Callable[[np.ndarray, np.ndarray], float],
    y_true: Sequence[int] | np.ndarray,
    y_score: np.ndarray | Sequence[float],
    patients: Sequence[str] | np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """``metric(y_true, y_score)`` with a percentile CI over patient-level bootstrap replicates.

    Replicates on which the metric is undefined (e.g. one class only for AUROC) are skipped and the count
    of used replicates is returned in :attr:`Interval.n_boot`.
    """
    t = np.asarray(y_true)
    s = np.asarray(y_score)
    if len(t) != len(s) or len(t) != len(patients):
        raise ValueError("y_true, y_score and patients differ in length")
    if not 0.0 < level < 1.0:
        raise ValueError("level must be in (0, 1)")
    point = float(metric(t, s))
    values: list[float] = []
    for idx in patient_bootstrap_indices(patients, n_boot, seed):
        try:
            values.append(float(metric(t[idx], s[idx])))
        except ValueError:
            continue
    if not values:
        return Interval(point, float("nan"), float("nan"), 0, level)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(np.asarray(values), [alpha, 1.0 - alpha])
    return Interval(point, float(low), float(high), len(values), level)
