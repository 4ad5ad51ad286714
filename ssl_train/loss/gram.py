"""Gram anchoring loss (DINOv3 §4): match the patch-similarity structure of a frozen Gram teacher.

Reference
---------
* Siméoni et al., "DINOv3", arXiv:2508.10104, Section 4 (Gram anchoring):
  ``L_Gram = || X_S X_S^T - X_G X_G^T ||_F^2`` with ``X_S`` / ``X_G`` the L2-normalised patch features of
  the student / the Gram teacher (an earlier, frozen teacher checkpoint). How and when the Gram teacher is
  refreshed is the trainer's business, not this module's.

Formula
-------
Student patch features ``S`` ``[B, N, D_s]`` and Gram-teacher patch features ``T`` ``[B, N, D_t]``
(``D_s`` and ``D_t`` may differ; only the ``N x N`` Gram matrices are compared). Per image ``b``:

    X_S = S[b] / ||S[b]||_row,   X_T = T[b] / ||T[b]||_row          (L2 along D, if normalize=True)
    G_S = X_S X_S^T,  G_T = X_T X_T^T                               ([N, N], cosine similarities)
    G_T <- max(G_T, 0)                                              (only if remove_negatives=True)
    L   = (1 / B) * sum_b ||G_S - G_T||_F^2 / N^2

i.e. the mean squared error over all ``B * N * N`` Gram entries (``torch.nn.functional.mse_loss`` on
``[B, N, N]``).
Gram matrices are computed per image (no similarities across images of the batch). The teacher is
detached. Shapes: inputs ``[B, N, D]``, output scalar. Computed in at least float32. The loss is invariant
to any rotation (orthogonal transform) of the feature space of either input.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional

__all__ = ["GramLoss"]


class GramLoss(nn.Module):
    """Mean squared difference of student and Gram-teacher patch Gram matrices (see module doc).

    Args:
        remove_negatives: clamp negative teacher similarities to 0 before comparing.
        normalize: L2-normalise the patch features along ``D`` first (the DINOv3 formulation).
        eps: epsilon of the L2 normalisation.
    """

    def __init__(self, remove_negatives: bool = False, normalize: bool = True, eps: float = 1e-8) -> None:
        super().__init__()
        self.remove_negatives = remove_negatives
        self.normalize = normalize
        self.eps = eps

    def forward(self, student_patches: Tensor, teacher_patches: Tensor) -> Tensor:
        """Args: student ``[B, N, D_s]``, Gram teacher ``[B, N, D_t]``. Returns: scalar loss."""
        if student_patches.ndim != 3 or teacher_patches.ndim != 3:
            raise ValueError(
                "student_patches and teacher_patches must have shape [B, N, D], got "
                f"{tuple(student_patches.shape)} and {tuple(teacher_patches.shape)}"
            )
        if student_patches.shape[:2] != teacher_patches.shape[:2]:
            raise ValueError(
                f"student_patches {tuple(student_patches.shape)} and teacher_patches "
                f"{tuple(teacher_patches.shape)} must agree on [B, N]"
            )
        if student_patches.shape[0] == 0 or student_patches.shape[1] == 0:
            raise ValueError(f"empty input: student_patches {tuple(student_patches.shape)}")
        dtype = torch.promote_types(student_patches.dtype, torch.float32)
        student = student_patches.to(dtype)
        teacher = teacher_patches.detach().to(dtype)
        if self.normalize:
            student = functional.normalize(student, p=2.0, dim=-1, eps=self.eps)
            teacher = functional.normalize(teacher, p=2.0, dim=-1, eps=self.eps)
        gram_student = torch.bmm(student, student.transpose(1, 2))  # [B, N, N]
        with torch.no_grad():
            gram_teacher = torch.bmm(teacher, teacher.transpose(1, 2))  # [B, N, N]
            if self.remove_negatives:
                gram_teacher = gram_teacher.clamp_min(0.0)
        return functional.mse_loss(gram_student, gram_teacher)
