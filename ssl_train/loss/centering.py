"""Teacher-output centering: Sinkhorn-Knopp (SwAV / DINOv2 / DINOv3) and softmax centering (DINO).

References
----------
* Caron et al., "Unsupervised Learning of Visual Features by Contrasting Cluster Assignments" (SwAV),
  NeurIPS 2020, arXiv:2006.09882 -- Sinkhorn-Knopp equipartition of samples over prototypes.
* Caron et al., "Emerging Properties in Self-Supervised Vision Transformers" (DINO), ICCV 2021,
  arXiv:2104.14294 -- EMA centering followed by a sharpened softmax.
* Oquab et al., "DINOv2", arXiv:2304.07193 and Siméoni et al., "DINOv3", arXiv:2508.10104 -- both use the
  Sinkhorn-Knopp teacher targets for the DINO (CLS) and iBOT (patch) losses.

Sinkhorn-Knopp
--------------
Input: teacher logits ``L`` of shape ``[B, K]`` (B samples on this process, K prototypes), temperature
``tau``. Let ``B_tot`` be the number of samples summed over all processes and ``m_k = max_b L[b, k]`` the
per-prototype maximum over the global batch (all-reduced with MAX). Start from

    Q = exp((L - m) / tau)^T                                        # [K, B], every entry in [0, 1]

and repeat ``n_iterations`` times (SwAV Algorithm 1 / DINOv2 order: prototypes first, then samples):

    Q <- Q / (K * sum_b Q[k, b])      (prototype rows; sum over b is all-reduced over processes)
    Q <- Q / (B_tot * sum_k Q[k, b])  (sample columns; purely local)

and finally return ``(B_tot * Q)^T`` of shape ``[B, K]``. Every returned row (sample) sums to exactly 1;
every returned column (prototype) sums to approximately ``B_tot / K`` over the global batch (exactly at
convergence; 3 iterations give an approximation whose quality depends on how peaked the logits are).

Invariances and stability: the shift ``m_k`` only rescales prototype row ``k`` of ``Q``, which the first
prototype normalisation removes exactly, so the result equals SwAV's un-shifted ``exp(L / tau)`` for any
number of iterations while never overflowing; more generally the output is exactly invariant to adding a
per-prototype constant (a column of ``L``). Adding a per-sample constant (a row of ``L``) rescales a sample
column of the initial ``Q``; this is only removed in the limit (the Sinkhorn fixed point is unique up to
the diagonal scalings), so with a finite ``n_iterations`` the output changes slightly. Every prototype row
keeps a non-zero entry (its max), so no division by zero occurs there; a sample whose scores all lie more
than ~87 * tau (float32) below every prototype's batch maximum would underflow to a zero column and then
gets an all-zero output row instead of NaN (not reachable with the bounded cosine logits of a DINO head).
The SwAV initial division by the total sum of ``Q`` is omitted: it is a global scale that the first
prototype normalisation removes anyway.

Softmax centering
-----------------
``SoftmaxCentering`` keeps an EMA buffer ``center`` of shape ``[1, K]`` (initialised to zero) and returns

    P = softmax((L - center) / tau)          for logits L of shape [..., K]

``update(L)`` performs ``center <- m * center + (1 - m) * mean(L)`` where the mean is over every leading
index of ``L`` (all-reduced over processes when ``torch.distributed`` is initialised). As in DINO, call
``forward`` with the current center and then ``update`` with the same teacher logits.

All outputs are computed in at least float32 (float64 stays float64), are detached from the autograd graph
and never require grad: they are targets.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["SoftmaxCentering", "sinkhorn_knopp"]


def _distributed_active() -> bool:
    """True when a default ``torch.distributed`` process group exists."""
    return dist.is_available() and dist.is_initialized()


def _all_reduce(tensor: Tensor, op: Literal["sum", "max"] = "sum") -> Tensor:
    """Reduce ``tensor`` in place over all processes when distributed; return it (no-op otherwise)."""
    if _distributed_active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return tensor


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """At least float32 (bf16 / fp16 are upcast, float64 is kept)."""
    return torch.promote_types(dtype, torch.float32)


@torch.no_grad()
def sinkhorn_knopp(teacher_logits: Tensor, temperature: float, n_iterations: int = 3) -> Tensor:
    """Sinkhorn-Knopp assignment probabilities of teacher logits (SwAV / DINOv2 / DINOv3).

    Args:
        teacher_logits: ``[B, K]`` teacher prototype scores of this process's samples (may be 0 samples on
            a process when distributed; the other processes still get a consistent result).
        temperature: teacher temperature ``tau > 0``.
        n_iterations: number of (prototype, sample) normalisation rounds, ``>= 1``.

    Returns:
        ``[B, K]`` detached probabilities: each row sums to 1, each column sums to about ``B_tot / K``
        where ``B_tot`` is the global batch size (summed over processes when distributed).

    Raises:
        ValueError: on a non-2-D input, ``K == 0``, a non-positive temperature or ``n_iterations < 1``.
    """
    if teacher_logits.ndim != 2:
        raise ValueError(f"teacher_logits must have shape [B, K], got {tuple(teacher_logits.shape)}")
    if teacher_logits.shape[1] == 0:
        raise ValueError(f"teacher_logits needs at least one prototype, got {tuple(teacher_logits.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if n_iterations < 1:
        raise ValueError(f"n_iterations must be >= 1, got {n_iterations}")

    dtype = _compute_dtype(teacher_logits.dtype)
    logits = teacher_logits.detach().to(dtype)
    n_local, n_prototypes = logits.shape
    if n_local > 0:
        proto_max = logits.amax(dim=0)
    else:
        proto_max = torch.full((n_prototypes,), float("-inf"), dtype=dtype, device=logits.device)
    proto_max = _all_reduce(proto_max, "max")
    proto_max = torch.where(torch.isfinite(proto_max), proto_max, torch.zeros_like(proto_max))
    q = torch.exp((logits - proto_max) / temperature).t()  # [K, B]

    n_total = _all_reduce(torch.tensor([float(n_local)], dtype=dtype, device=logits.device))
    tiny = torch.finfo(dtype).tiny
    for _ in range(n_iterations):
        prototype_mass = _all_reduce(q.sum(dim=1, keepdim=True))  # [K, 1]
        q = q / (prototype_mass.clamp_min(tiny) * n_prototypes)
        sample_mass = q.sum(dim=0, keepdim=True)  # [1, B]
        q = q / (sample_mass.clamp_min(tiny) * n_total)
    q = q * n_total
    return q.t().contiguous()


class SoftmaxCentering(nn.Module):
    """DINO centering: ``softmax((logits - center) / tau)`` with an EMA ``center`` buffer of shape ``[1, K]``.

    Args:
        num_prototypes: ``K``, the last dimension of the teacher logits.
        momentum: EMA momentum ``m`` of ``center <- m * center + (1 - m) * batch_mean`` (DINO uses 0.9).
    """

    center: Tensor

    def __init__(self, num_prototypes: int, momentum: float = 0.9) -> None:
        super().__init__()
        if num_prototypes < 1:
            raise ValueError(f"num_prototypes must be >= 1, got {num_prototypes}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.num_prototypes = num_prototypes
        self.momentum = momentum
        self.register_buffer("center", torch.zeros(1, num_prototypes))

    def _check(self, teacher_logits: Tensor) -> None:
        if teacher_logits.ndim < 1 or teacher_logits.shape[-1] != self.num_prototypes:
            raise ValueError(
                f"teacher_logits must have shape [..., K] with K={self.num_prototypes}, "
                f"got {tuple(teacher_logits.shape)}"
            )

    @torch.no_grad()
    def forward(self, teacher_logits: Tensor, temperature: float) -> Tensor:
        """Centered, sharpened teacher probabilities.

        Args:
            teacher_logits: ``[..., K]`` (e.g. ``[n_global_crops * B, K]`` or ``[n_global_crops, B, K]``).
            temperature: teacher temperature ``tau > 0``.

        Returns:
            Detached probabilities with the shape of ``teacher_logits`` (rows over K sum to 1).
        """
        self._check(teacher_logits)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        dtype = _compute_dtype(teacher_logits.dtype)
        logits = teacher_logits.detach().to(dtype)
        # torch.softmax subtracts the row max internally, so this is overflow-safe.
        return torch.softmax((logits - self.center.to(dtype)) / temperature, dim=-1)

    @torch.no_grad()
    def update(self, teacher_logits: Tensor) -> None:
        """EMA update of ``center`` with the mean of ``teacher_logits`` over all leading indices.

        When distributed, sums and counts are all-reduced so every process holds the same center. An empty
        batch (zero rows in total) leaves the center unchanged.
        """
        self._check(teacher_logits)
        flat = (
            teacher_logits.detach().reshape(-1, self.num_prototypes).to(_compute_dtype(teacher_logits.dtype))
        )
        count = torch.full((1,), float(flat.shape[0]), dtype=flat.dtype, device=flat.device)
        stats = _all_reduce(torch.cat([flat.sum(dim=0), count]))
        total, n = stats[:-1], stats[-1]
        batch_mean = (total / n.clamp_min(1.0)).unsqueeze(0).to(self.center.dtype)
        new_center = self.center * self.momentum + batch_mean * (1.0 - self.momentum)
        self.center.copy_(torch.where(n > 0, new_center, self.center))
