"""GramLoss against a loop reference in float64, invariances, gradients and shape errors."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_train.loss import GramLoss


def _reference_gram(student: torch.Tensor, teacher: torch.Tensor, remove_negatives: bool) -> float:
    batch, n_patches, _ = student.shape

    def cosine(a: list[float], b: list[float]) -> float:
        dot = sum(x * y for x, y in zip(a, b, strict=True))
        return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))

    total = 0.0
    for b in range(batch):
        s_rows, t_rows = student[b].tolist(), teacher[b].tolist()
        frobenius_sq = 0.0
        for i in range(n_patches):
            for j in range(n_patches):
                g_s = cosine(s_rows[i], s_rows[j])
                g_t = cosine(t_rows[i], t_rows[j])
                if remove_negatives:
                    g_t = max(g_t, 0.0)
                frobenius_sq += (g_s - g_t) ** 2
        total += frobenius_sq / n_patches**2
    return total / batch


def _features(seed: int, batch: int = 3, n: int = 5, d: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    student = torch.randn(batch, n, d, generator=gen, dtype=torch.float64)
    teacher = torch.randn(batch, n, d, generator=gen, dtype=torch.float64)
    return student, teacher


@pytest.mark.parametrize("remove_negatives", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_gram_loss_matches_loop_reference(remove_negatives: bool, seed: int) -> None:
    student, teacher = _features(seed)
    got = GramLoss(remove_negatives=remove_negatives)(student, teacher)
    assert got.dim() == 0
    assert got.item() == pytest.approx(_reference_gram(student, teacher, remove_negatives), rel=1e-10)


def test_gram_loss_zero_for_identical_features() -> None:
    student, _ = _features(2)
    assert GramLoss()(student, student.clone()).item() == pytest.approx(0.0, abs=1e-24)
    positive = student.abs()  # all cosine similarities >= 0: clamping changes nothing
    assert GramLoss(remove_negatives=True)(positive, positive.clone()).item() == pytest.approx(0.0, abs=1e-24)


def test_gram_loss_invariant_to_orthogonal_rotation_and_patch_scaling() -> None:
    student, teacher = _features(3, d=6)
    gen = torch.Generator().manual_seed(9)
    rotation, _ = torch.linalg.qr(torch.randn(6, 6, generator=gen, dtype=torch.float64))
    loss_fn = GramLoss()
    base = loss_fn(student, teacher).item()
    assert loss_fn(student @ rotation, teacher @ rotation).item() == pytest.approx(base, rel=1e-10)
    assert loss_fn(student @ rotation, teacher).item() == pytest.approx(base, rel=1e-10)
    scales = torch.rand(3, 5, 1, generator=gen, dtype=torch.float64) + 0.5
    assert loss_fn(student * scales, teacher).item() == pytest.approx(base, rel=1e-10)


def test_gram_loss_gradient_reaches_student_only() -> None:
    student, teacher = _features(4)
    student = student.float().requires_grad_()
    teacher = teacher.float().requires_grad_()
    GramLoss(remove_negatives=True)(student, teacher).backward()
    assert teacher.grad is None
    assert student.grad is not None
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0


def test_gram_loss_allows_different_feature_dims_and_upcasts() -> None:
    student, _ = _features(5, d=4)
    _, teacher = _features(6, d=7)
    assert torch.isfinite(GramLoss()(student, teacher))
    assert GramLoss()(student.bfloat16(), teacher.bfloat16()).dtype == torch.float32


def test_gram_loss_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(2, 5, 4\)"):
        GramLoss()(torch.zeros(2, 5, 4), torch.zeros(2, 6, 4))
    with pytest.raises(ValueError, match=r"\(5, 4\)"):
        GramLoss()(torch.zeros(5, 4), torch.zeros(5, 4))
