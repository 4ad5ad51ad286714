"""Metrics against hand-computed values and scikit-learn; patient-level bootstrap properties."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    roc_auc_score,
)

from heads import metrics as M  # noqa: N812


def test_hand_computed_values() -> None:
    y = [0, 0, 1, 1, 2]
    p = [0, 1, 1, 1, 0]
    assert M.accuracy(y, p) == pytest.approx(3 / 5)
    # recalls: class 0 1/2, class 1 2/2, class 2 0/1 -> mean 0.5
    assert M.balanced_accuracy(y, p) == pytest.approx(0.5)
    assert M.mean_absolute_error(y, p) == pytest.approx((0 + 1 + 0 + 0 + 2) / 5)
    # QWK by hand: O = [[1,1,0],[0,2,0],[1,0,0]], rows (2,2,1), cols (2,3,0), n=5
    # W = (i-j)^2 (unnormalised; scale cancels). sum W*O = 1*1 + 4*1 = 5.
    # E = outer(rows, cols)/5; sum W*E = (1/5)[2*3*1 + 2*2*1 + 1*2*4 + 1*3*1] = 21/5
    assert M.quadratic_weighted_kappa(y, p) == pytest.approx(1 - 5 / (21 / 5))
    # AUROC: positives scores (0.8, 0.4), negatives (0.4, 0.1): pairs 1 + 1 + 0.5 + 1 = 3.5 of 4
    assert M.auroc([1, 1, 0, 0], [0.8, 0.4, 0.4, 0.1]) == pytest.approx(3.5 / 4)
    # AP: ranks 0.9(+) 0.7(-) 0.5(+) -> recall 0.5 at P=1, recall 1 at P=2/3 -> 0.5*1 + 0.5*2/3
    assert M.auprc([1, 0, 1], [0.9, 0.7, 0.5]) == pytest.approx(0.5 + 1 / 3)
    assert M.confusion_matrix(y, p, 3).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]


def test_against_sklearn_on_random_data() -> None:
    rng = np.random.default_rng(7)
    for _ in range(5):
        y = rng.integers(0, 5, 300)
        p = np.clip(y + rng.integers(-2, 3, 300), 0, 4)
        assert M.accuracy(y, p) == pytest.approx(accuracy_score(y, p))
        assert M.balanced_accuracy(y, p) == pytest.approx(balanced_accuracy_score(y, p))
        assert M.quadratic_weighted_kappa(y, p) == pytest.approx(cohen_kappa_score(y, p, weights="quadratic"))
        yb = rng.integers(0, 2, 200)
        score = np.round(yb * 0.3 + rng.random(200), 2)  # rounding makes ties
        assert M.auroc(yb, score) == pytest.approx(roc_auc_score(yb, score))
        assert M.auprc(yb, score) == pytest.approx(average_precision_score(yb, score))


def test_roc_curve_ends_and_undefined_metrics() -> None:
    fpr, tpr = M.roc_curve([0, 1, 1, 0], [0.1, 0.9, 0.6, 0.7])
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(M.auroc([0, 1, 1, 0], [0.1, 0.9, 0.6, 0.7]))
    with pytest.raises(ValueError):
        M.auroc([1, 1], [0.2, 0.3])
    assert M.quadratic_weighted_kappa([1, 1, 1], [1, 1, 1]) == 0.0


def _data(n_patients: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    patients = np.repeat([f"p{i}" for i in range(n_patients)], 2)  # two knees each
    y = rng.integers(0, 2, patients.size)
    score = y * 0.5 + rng.random(patients.size)
    return y, score, patients


def test_bootstrap_ci_contains_point_and_shrinks_with_n() -> None:
    auc = lambda y, s: M.auroc(y, s)  # noqa: E731
    y, s, pts = _data(40, 0)
    small = M.patient_bootstrap(auc, y, s, pts, n_boot=300, seed=1)
    assert small.low <= small.value <= small.high
    assert small.value == pytest.approx(roc_auc_score(y, s))
    y, s, pts = _data(1000, 0)
    large = M.patient_bootstrap(auc, y, s, pts, n_boot=300, seed=1)
    assert large.low <= large.value <= large.high
    assert (large.high - large.low) < (small.high - small.low) / 2
    again = M.patient_bootstrap(auc, y, s, pts, n_boot=300, seed=1)
    assert (again.low, again.high) == (large.low, large.high)  # seeded


def test_bootstrap_resamples_patients_not_images() -> None:
    patients = np.array(["a", "a", "a", "b", "c", "c"])
    sizes = {"a": 3, "b": 1, "c": 2}
    for idx in M.patient_bootstrap_indices(patients, 200, seed=3):
        drawn = patients[idx]
        assert len(set(np.unique(patients[idx]))) >= 1
        for patient, size in sizes.items():
            count = int(np.sum(drawn == patient))
            assert count % size == 0  # whole patients only
            # every sample of a drawn patient appears equally often
            members = np.nonzero(patients == patient)[0]
            per_member = [int(np.sum(idx == m)) for m in members]
            assert len(set(per_member)) == 1
        assert len(set(map(str, drawn))) <= 3
    # n patients are drawn per replicate
    for idx in M.patient_bootstrap_indices(patients, 50, seed=4):
        counts = {p: int(np.sum(patients[idx] == p)) // sizes[p] for p in sizes}
        assert sum(counts.values()) == 3
