"""KoLeo regulariser: Kozachenko-Leonenko nearest-neighbour estimate of differential entropy.

References
----------
* Sablayrolles et al., "Spreading vectors for similarity search", ICLR 2019, arXiv:1806.03198 (KoLeo loss).
* Oquab et al., "DINOv2", arXiv:2304.07193 and Siméoni et al., "DINOv3", arXiv:2508.10104 (applied to the
  student CLS features to spread them uniformly over the batch).

Formula
-------
Features ``x`` of shape ``[B, D]`` (``B >= 2``); with ``normalize=True`` (default) they are first
L2-normalised along ``D``. With ``d_i = min_{j != i} ||x_i - x_j||_2``:

    L = -(1 / B) * sum_i log(d_i + eps)

The nearest neighbour is found on pairwise squared distances whose diagonal is set to ``+inf`` (no
gradient through the search); ``d_i`` is then recomputed exactly as ``||x_i - x_nn(i)||`` so the gradient
flows to both points of each pair. Lower loss = features more spread out.

The loss only sees the tensor it is given (no cross-process gather): DINOv2 applies it per process and per
global crop (e.g. ``sum(koleo(c) for c in student_cls.chunk(n_global_crops))``). Shapes: input ``[B, D]``,
output scalar. Computed in at least float32.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional

__all__ = ["KoLeoLoss"]


class KoLeoLoss(nn.Module):
    """``-mean_i log(min_{j != i} ||x_i - x_j|| + eps)`` on (by default L2-normalised) features ``[B, D]``.

    Args:
        eps: added to the nearest-neighbour distance inside the log (and used by the L2 normalisation).
        normalize: L2-normalise the features along ``D`` first (DINOv2 / DINOv3 do).
    """

    def __init__(self, eps: float = 1e-8, normalize: bool = True) -> None:
        super().__init__()
        if eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.eps = eps
        self.normalize = normalize

    def forward(self, features: Tensor) -> Tensor:
        """Args: features ``[B, D]`` with ``B >= 2``. Returns: scalar loss."""
        if features.ndim != 2 or features.shape[0] < 2:
            raise ValueError(f"features must have shape [B, D] with B >= 2, got {tuple(features.shape)}")
        x = features.to(torch.promote_types(features.dtype, torch.float32))
        if self.normalize:
            x = functional.normalize(x, p=2.0, dim=-1, eps=self.eps)
        with torch.no_grad():
            sq_norm = (x * x).sum(dim=-1)
            sq_dist = (sq_norm.unsqueeze(1) + sq_norm.unsqueeze(0) - 2.0 * (x @ x.t())).clamp_min(0.0)
            sq_dist.fill_diagonal_(float("inf"))
            nearest = sq_dist.argmin(dim=1)  # [B]
        dist = torch.linalg.vector_norm(x - x[nearest], ord=2, dim=-1)  # [B]
        return -torch.log(dist + self.eps).mean()
