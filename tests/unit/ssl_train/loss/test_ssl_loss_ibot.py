"""IBOTPatchLoss against a loop reference in float64."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_train.loss import IBOTPatchLoss


def _reference_ibot(
    student: torch.Tensor, teacher: torch.Tensor, masks: torch.Tensor, temp: float, average_over: str
) -> float:
    batch, n_patches, _ = student.shape
    per_image: list[float] = []
    for b in range(batch):
        masked = [p for p in range(n_patches) if bool(masks[b, p])]
        if not masked:
            continue
        total = 0.0
        for p in masked:
            z = [v / temp for v in student[b, p].tolist()]
            top = max(z)
            log_norm = top + math.log(sum(math.exp(v - top) for v in z))
            total += -sum(t * (v - log_norm) for t, v in zip(teacher[b, p].tolist(), z, strict=True))
        per_image.append(total / len(masked))
    denominator = len(per_image) if average_over == "masked_images" else batch
    return sum(per_image) / max(denominator, 1)


def _inputs(
    seed: int, batch: int = 4, n: int = 6, k: int = 5
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    student = torch.randn(batch, n, k, generator=gen, dtype=torch.float64)
    teacher = torch.softmax(torch.randn(batch, n, k, generator=gen, dtype=torch.float64) / 0.2, dim=-1)
    masks = torch.rand(batch, n, generator=gen) < 0.4
    masks[0] = False  # one image without any masked patch
    masks[1, :] = True  # one fully masked image
    return student, teacher, masks


@pytest.mark.parametrize("average_over", ["masked_images", "all_images"])
@pytest.mark.parametrize("seed", [0, 1])
def test_ibot_loss_matches_loop_reference(average_over: str, seed: int) -> None:
    student, teacher, masks = _inputs(seed)
    loss_fn = IBOTPatchLoss(student_temp=0.1, average_over=average_over)  # type: ignore[arg-type]
    want = _reference_ibot(student, teacher, masks, 0.1, average_over)
    got = loss_fn(student, teacher, masks)
    assert got.dim() == 0
    assert got.item() == pytest.approx(want, rel=1e-10)
    gathered = loss_fn.forward_masked(student[masks], teacher[masks], masks)
    assert gathered.item() == pytest.approx(want, rel=1e-10)


def test_ibot_loss_weights_images_not_patches() -> None:
    """An image with 1 masked patch counts as much as an image with 5 (per-image mean, then mean)."""
    student, teacher, _ = _inputs(2, batch=2, n=5)
    masks = torch.zeros(2, 5, dtype=torch.bool)
    masks[0, 0] = True
    masks[1, :] = True
    loss_fn = IBOTPatchLoss()
    ce = -(teacher * torch.log_softmax(student / 0.1, dim=-1)).sum(dim=-1)  # [B, N]
    want = 0.5 * (ce[0, 0] + ce[1].mean())
    assert loss_fn(student, teacher, masks).item() == pytest.approx(want.item(), rel=1e-12)


def test_ibot_loss_without_masked_patches_is_zero_and_differentiable() -> None:
    student, teacher, _ = _inputs(3)
    student = student.requires_grad_()
    loss = IBOTPatchLoss()(student, teacher, torch.zeros(4, 6, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert student.grad is not None
    assert (student.grad == 0).all()


def test_ibot_loss_gradient_only_on_masked_student_patches() -> None:
    student, teacher, masks = _inputs(4)
    student = student.float().requires_grad_()
    teacher = teacher.float().requires_grad_()
    IBOTPatchLoss()(student, teacher, masks).backward()
    assert teacher.grad is None
    assert student.grad is not None
    patch_grad = student.grad.abs().sum(dim=-1)
    assert (patch_grad[masks] > 0).all()
    assert (patch_grad[~masks] == 0).all()


def test_ibot_loss_rejects_bad_shapes() -> None:
    loss_fn = IBOTPatchLoss()
    s = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match=r"\(2, 3, 5\)"):
        loss_fn(s, torch.zeros(2, 3, 5), torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(2, 4\)"):
        loss_fn(s, s, torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        loss_fn(s, s, torch.zeros(2, 3))
    masks = torch.zeros(2, 3, dtype=torch.bool)
    masks[0, 1] = True
    with pytest.raises(ValueError, match="select 1 patches"):
        loss_fn.forward_masked(torch.zeros(2, 4), torch.zeros(2, 4), masks)
    with pytest.raises(ValueError):
        IBOTPatchLoss(average_over="patches")  # type: ignore[arg-type]
