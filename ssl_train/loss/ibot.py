"""iBOT masked-patch self-distillation loss.

References
----------
* Zhou et al., "iBOT: Image BERT Pre-Training with Online Tokenizer", ICLR 2022, arXiv:2111.07832
  (masked image modelling by self-distillation on patch tokens).
* Bao et al., "BEiT: BERT Pre-Training of Image Transformers", ICLR 2022, arXiv:2106.08254 (Algorithm 1,
  blockwise masking, drawn by :mod:`ssl_train.data.masking`).
* Oquab et al., "DINOv2", arXiv:2304.07193 and Siméoni et al., "DINOv3", arXiv:2508.10104 (a fraction of
  the batch is masked, with masking ratios spread over a range; per-image weighting of masked patches).

Loss
----
Student patch logits ``z`` ``[B, N, K]``, teacher patch probabilities ``P_t`` ``[B, N, K]`` (already
centered, detached here), boolean mask ``M`` ``[B, N]`` (True = the patch was masked in the student input),
student temperature ``tau_s``. With ``n_b = sum_p M[b, p]`` and ``I = {b : n_b > 0}``:

    ce(b, p) = -sum_k P_t[b, p, k] * log_softmax(z[b, p] / tau_s)[k]
    L_img(b) = (1 / n_b) * sum_{p : M[b, p]} ce(b, p)                   (mean over the masked patches)
    L        = (1 / |I|) * sum_{b in I} L_img(b)     if average_over == "masked_images"  (default)
    L        = (1 / B)   * sum_{b in I} L_img(b)     if average_over == "all_images"

Every masked patch is thus weighted by ``1 / n_b`` of its own image (as in DINOv2), so images with few
masked patches count as much as heavily masked ones. DINOv2 then divides by the total number of images in
the batch, unmasked ones included: that is ``average_over="all_images"``. The default divides only by the
number of images that have at least one masked patch. When no patch is masked at all the loss is an exact
zero that is still connected to the student graph (zero gradients, no DDP "unused parameter" issue).

``IBOTPatchLoss.forward_masked`` takes the already gathered masked tokens ``[M_tot, K]`` (in the row-major
order that ``x[mask]`` produces), so the head only has to run on masked tokens; ``forward`` gathers them
from dense ``[B, N, K]`` tensors and calls it.

The masks themselves (BEiT / iBOT block masking) are drawn with the data: :mod:`ssl_train.data.masking`.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional

__all__ = ["IBOTPatchLoss"]


class IBOTPatchLoss(nn.Module):
    """Masked-patch cross-entropy between teacher probabilities and student patch softmax.

    Args:
        student_temp: student temperature ``tau_s`` (0.1 in iBOT / DINOv2 / DINOv3).
        average_over: ``"masked_images"`` (default) divides by the number of images with at least one
            masked patch; ``"all_images"`` divides by the batch size (DINOv2's normalisation).
    """

    def __init__(
        self,
        student_temp: float = 0.1,
        average_over: Literal["masked_images", "all_images"] = "masked_images",
    ) -> None:
        super().__init__()
        if student_temp <= 0:
            raise ValueError(f"student_temp must be > 0, got {student_temp}")
        if average_over not in ("masked_images", "all_images"):
            raise ValueError(f"average_over must be 'masked_images' or 'all_images', got {average_over!r}")
        self.student_temp = student_temp
        self.average_over = average_over

    def forward(self, student_patch_logits: Tensor, teacher_patch_probs: Tensor, masks: Tensor) -> Tensor:
        """Loss from dense patch tensors.

        Args:
            student_patch_logits: ``[B, N, K]``.
            teacher_patch_probs: ``[B, N, K]`` (only the masked positions are used).
            masks: ``[B, N]`` bool, True where the student input patch was masked.

        Returns:
            Scalar loss.
        """
        if student_patch_logits.ndim != 3 or teacher_patch_probs.shape != student_patch_logits.shape:
            raise ValueError(
                "student_patch_logits and teacher_patch_probs must both have shape [B, N, K], got "
                f"{tuple(student_patch_logits.shape)} and {tuple(teacher_patch_probs.shape)}"
            )
        if masks.shape != student_patch_logits.shape[:2] or masks.dtype != torch.bool:
            raise ValueError(
                f"masks must be a bool tensor of shape [B, N] = {tuple(student_patch_logits.shape[:2])}, "
                f"got {masks.dtype} {tuple(masks.shape)}"
            )
        return self.forward_masked(student_patch_logits[masks], teacher_patch_probs[masks], masks)

    def forward_masked(
        self, student_masked_logits: Tensor, teacher_masked_probs: Tensor, masks: Tensor
    ) -> Tensor:
        """Loss from already gathered masked tokens.

        Args:
            student_masked_logits: ``[M_tot, K]``, the student logits of the masked patches in the order
                ``dense[masks]`` yields (image-major, then patch index).
            teacher_masked_probs: ``[M_tot, K]``, same order.
            masks: ``[B, N]`` bool with ``masks.sum() == M_tot``.

        Returns:
            Scalar loss.
        """
        if student_masked_logits.ndim != 2 or teacher_masked_probs.shape != student_masked_logits.shape:
            raise ValueError(
                "student_masked_logits and teacher_masked_probs must both have shape [M_tot, K], got "
                f"{tuple(student_masked_logits.shape)} and {tuple(teacher_masked_probs.shape)}"
            )
        if masks.ndim != 2 or masks.dtype != torch.bool:
            raise ValueError(
                f"masks must be a bool tensor of shape [B, N], got {masks.dtype} {tuple(masks.shape)}"
            )
        per_image = masks.sum(dim=1)  # [B]
        n_masked = int(per_image.sum())
        if n_masked != student_masked_logits.shape[0]:
            raise ValueError(
                f"masks {tuple(masks.shape)} select {n_masked} patches but the masked logits have shape "
                f"{tuple(student_masked_logits.shape)}"
            )
        if masks.shape[0] == 0:
            raise ValueError(f"empty batch: masks {tuple(masks.shape)}")

        dtype = torch.promote_types(student_masked_logits.dtype, torch.float32)
        log_p = functional.log_softmax(student_masked_logits.to(dtype) / self.student_temp, dim=-1)
        ce = -(teacher_masked_probs.detach().to(dtype) * log_p).sum(dim=-1)  # [M_tot]
        image_weight = 1.0 / per_image.clamp_min(1).to(dtype)  # [B]
        patch_weight = image_weight.unsqueeze(1).expand(masks.shape)[masks]  # [M_tot]
        total = (ce * patch_weight).sum()
        if self.average_over == "all_images":
            n_images = torch.tensor(float(masks.shape[0]), dtype=dtype, device=total.device)
        else:
            n_images = (per_image > 0).sum().to(dtype).clamp_min(1.0)
        return total / n_images
