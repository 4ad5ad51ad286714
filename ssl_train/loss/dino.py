"""DINO self-distillation loss on the CLS (image-level) prototype scores.

References
----------
* Caron et al., "Emerging Properties in Self-Supervised Vision Transformers" (DINO), ICCV 2021,
  arXiv:2104.14294, Eq. (2) / Algorithm 1.
* Oquab et al., "DINOv2", arXiv:2304.07193 and Siméoni et al., "DINOv3", arXiv:2508.10104 (same image-level
  objective; teacher targets produced by Sinkhorn-Knopp, see ``ssl_train.loss.centering``).

Formula
-------
Teacher probabilities ``P_t[i]`` for the ``n_g`` global crops (already centered / sharpened and detached),
student logits ``z_s[j]`` for all ``n_s`` crops (the ``n_g`` global crops FIRST, in the same order as the
teacher crops, then the local crops), student temperature ``tau_s``:

    log P_s[j] = log_softmax(z_s[j] / tau_s, dim=K)
    H(i, j)    = -(1 / B) * sum_b sum_k P_t[i, b, k] * log P_s[j, b, k]
    L          = (1 / n_pairs) * sum_{i < n_g} sum_{j < n_s, j != i} H(i, j),   n_pairs = n_g * n_s - n_g

i.e. the cross-entropy averaged over the batch and over all (teacher crop, student crop) pairs except the
pairs where the student sees the very same global view as the teacher.

Shapes
------
* ``student_logits``: ``[n_s, B, K]`` tensor or a sequence of ``n_s`` tensors ``[B, K]``.
* ``teacher_probs``: ``[n_g, B, K]`` tensor or a sequence of ``n_g`` tensors ``[B, K]``; ``n_g <= n_s``.
* output: scalar.

The student log-softmax is computed in at least float32. Teacher probabilities are detached (no gradient
ever reaches them).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional

__all__ = ["DINOLoss", "stack_crops"]


def stack_crops(crops: Tensor | Sequence[Tensor], name: str) -> Tensor:
    """Return ``[n_crops, B, K]`` from a stacked tensor or a sequence of ``[B, K]`` tensors.

    Raises:
        ValueError: when the tensor is not 3-D, the sequence is empty or its members differ in shape.
    """
    if isinstance(crops, Tensor):
        if crops.ndim != 3:
            raise ValueError(f"{name} must have shape [n_crops, B, K], got {tuple(crops.shape)}")
        return crops
    crops = list(crops)
    if not crops:
        raise ValueError(f"{name} is an empty sequence")
    shapes = [tuple(c.shape) for c in crops]
    if any(len(s) != 2 for s in shapes) or len(set(shapes)) != 1:
        raise ValueError(f"{name} must be a sequence of equally shaped [B, K] tensors, got shapes {shapes}")
    return torch.stack(crops, dim=0)


class DINOLoss(nn.Module):
    """Cross-entropy between teacher probabilities and student softmax over crop pairs (see module doc).

    Args:
        student_temp: student temperature ``tau_s`` (DINO / DINOv2 / DINOv3 use 0.1).
    """

    def __init__(self, student_temp: float = 0.1) -> None:
        super().__init__()
        if student_temp <= 0:
            raise ValueError(f"student_temp must be > 0, got {student_temp}")
        self.student_temp = student_temp

    def forward(
        self, student_logits: Tensor | Sequence[Tensor], teacher_probs: Tensor | Sequence[Tensor]
    ) -> Tensor:
        """Mean cross-entropy over batch and (teacher crop, different student crop) pairs.

        Args:
            student_logits: ``[n_s, B, K]`` (global crops first, same order as the teacher crops).
            teacher_probs: ``[n_g, B, K]`` detached-or-not teacher probabilities (detached here).

        Returns:
            Scalar loss.
        """
        student = stack_crops(student_logits, "student_logits")
        teacher = stack_crops(teacher_probs, "teacher_probs").detach()
        n_s, batch = student.shape[0], student.shape[1]
        n_g = teacher.shape[0]
        if teacher.shape[1:] != student.shape[1:]:
            raise ValueError(
                f"teacher_probs {tuple(teacher.shape)} and student_logits {tuple(student.shape)} must agree "
                "on [B, K]"
            )
        if n_g > n_s:
            raise ValueError(
                f"student_logits has {n_s} crops but teacher_probs has {n_g}: the student must see every "
                "global crop (first) plus optional local crops"
            )
        n_pairs = n_g * n_s - n_g
        if n_pairs == 0:
            raise ValueError(
                f"no (teacher, student) pair of different views: teacher {tuple(teacher.shape)}, "
                f"student {tuple(student.shape)}"
            )
        if batch == 0:
            raise ValueError(f"empty batch: student {tuple(student.shape)}, teacher {tuple(teacher.shape)}")

        dtype = torch.promote_types(student.dtype, torch.float32)
        log_p = functional.log_softmax(student.to(dtype) / self.student_temp, dim=-1)  # [n_s, B, K]
        # cross[i, j] = -(1/B) sum_b sum_k t[i, b, k] log p[j, b, k]
        cross = -torch.einsum("ibk,jbk->ij", teacher.to(dtype), log_p) / batch  # [n_g, n_s]
        keep = ~torch.eye(n_g, n_s, dtype=torch.bool, device=cross.device)
        return (cross * keep).sum() / n_pairs
