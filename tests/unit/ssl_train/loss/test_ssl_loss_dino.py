"""DINOLoss against a loop reference in float64, Gibbs inequality, gradients and shape errors."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_train.loss import DINOLoss


def _log_softmax(row: list[float], temperature: float) -> list[float]:
    z = [v / temperature for v in row]
    top = max(z)
    log_norm = top + math.log(sum(math.exp(v - top) for v in z))
    return [v - log_norm for v in z]


def _reference_dino(student: torch.Tensor, teacher: torch.Tensor, student_temp: float) -> float:
    n_s, batch, _ = student.shape
    n_g = teacher.shape[0]
    total, pairs = 0.0, 0
    for i in range(n_g):
        for j in range(n_s):
            if i == j:
                continue
            pairs += 1
            for b in range(batch):
                log_p = _log_softmax(student[j, b].tolist(), student_temp)
                total += -sum(t * lp for t, lp in zip(teacher[i, b].tolist(), log_p, strict=True)) / batch
    return total / pairs


def _random_inputs(n_s: int, n_g: int, batch: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    student = torch.randn(n_s, batch, k, generator=gen, dtype=torch.float64)
    teacher = torch.softmax(torch.randn(n_g, batch, k, generator=gen, dtype=torch.float64) / 0.3, dim=-1)
    return student, teacher


@pytest.mark.parametrize(("n_s", "n_g", "temp"), [(2, 2, 0.1), (6, 2, 0.1), (4, 1, 0.2), (5, 3, 0.07)])
def test_dino_loss_matches_loop_reference(n_s: int, n_g: int, temp: float) -> None:
    student, teacher = _random_inputs(n_s, n_g, batch=3, k=7, seed=n_s * 10 + n_g)
    loss_fn = DINOLoss(student_temp=temp)
    want = _reference_dino(student, teacher, temp)
    got = loss_fn(student, teacher)
    assert got.dim() == 0
    assert got.item() == pytest.approx(want, rel=1e-10)
    got_lists = loss_fn(list(student.unbind(0)), list(teacher.unbind(0)))
    assert got_lists.item() == pytest.approx(want, rel=1e-10)


def test_dino_loss_default_temperature_is_point_one() -> None:
    assert DINOLoss().student_temp == 0.1


def test_dino_loss_is_cross_entropy_bounded_by_teacher_entropy() -> None:
    """Gibbs: H(t, s) >= H(t), with equality when the student softmax equals the teacher distribution."""
    gen = torch.Generator().manual_seed(11)
    batch, k, temp = 4, 9, 0.1
    target = torch.softmax(torch.randn(batch, k, generator=gen, dtype=torch.float64), dim=-1)
    teacher = target.unsqueeze(0).expand(2, batch, k)  # both global views share the target
    entropy = -(target * target.log()).sum(dim=-1).mean().item()
    loss_fn = DINOLoss(student_temp=temp)
    matching = (temp * target.log() + 3.0).unsqueeze(0).expand(5, batch, k)  # softmax(z / temp) == target
    assert loss_fn(matching, teacher).item() == pytest.approx(entropy, rel=1e-10)
    for seed in range(5):
        student = torch.randn(5, batch, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        assert loss_fn(student, teacher).item() >= entropy - 1e-12


def test_dino_loss_gradient_reaches_student_only() -> None:
    student, teacher = _random_inputs(4, 2, batch=3, k=5, seed=3)
    student = student.float().requires_grad_()
    teacher = teacher.float().requires_grad_()
    loss = DINOLoss()(student, teacher)
    loss.backward()
    assert teacher.grad is None
    assert student.grad is not None
    assert torch.isfinite(student.grad).all()
    assert (student.grad.abs().sum(dim=(1, 2)) > 0).all()


def test_dino_loss_skips_identical_views() -> None:
    """Teacher crop i never supervises student crop i: its gradient ignores that teacher crop entirely."""
    student, teacher = _random_inputs(3, 2, batch=2, k=4, seed=5)
    other_teacher = teacher.clone()
    other_teacher[0] = torch.softmax(torch.randn(2, 4, dtype=torch.float64), dim=-1)

    def grad_of_student(t: torch.Tensor) -> torch.Tensor:
        s = student.clone().requires_grad_()
        DINOLoss()(s, t).backward()
        assert s.grad is not None
        return s.grad

    g_base, g_other = grad_of_student(teacher), grad_of_student(other_teacher)
    torch.testing.assert_close(g_base[0], g_other[0])  # student crop 0 only sees teacher crop 1
    assert not torch.allclose(g_base[1], g_other[1])  # student crop 1 sees teacher crop 0
    assert not torch.allclose(g_base[2], g_other[2])  # local crop sees both


def test_dino_loss_low_precision_inputs_give_float32() -> None:
    student, teacher = _random_inputs(3, 2, batch=2, k=6, seed=7)
    loss = DINOLoss()(student.bfloat16(), teacher.bfloat16())
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss)


@pytest.mark.parametrize(
    ("student_shape", "teacher_shape"),
    [
        ((4, 3, 5), (2, 3, 6)),  # K differs
        ((4, 3, 5), (2, 2, 5)),  # B differs
        ((1, 3, 5), (2, 3, 5)),  # more teacher than student crops
        ((1, 3, 5), (1, 3, 5)),  # no pair of different views
        ((3, 5), (2, 3, 5)),  # not [n_crops, B, K]
    ],
)
def test_dino_loss_rejects_bad_shapes(student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"\d"):
        DINOLoss()(torch.zeros(student_shape), torch.zeros(teacher_shape))


def test_dino_loss_rejects_ragged_lists() -> None:
    with pytest.raises(ValueError, match="shapes"):
        DINOLoss()([torch.zeros(3, 5), torch.zeros(2, 5)], [torch.zeros(3, 5)])
    with pytest.raises(ValueError):
        DINOLoss()([], [torch.zeros(3, 5)])
    with pytest.raises(ValueError):
        DINOLoss(student_temp=0.0)
