"""Which floating-point precision a training run computes in.

``fp32`` and ``bf16`` are taken as given. ``auto`` picks bf16 autocast where the device computes
bfloat16 natively (:func:`orthonode.inference.encoder.bf16_native`: CUDA with bf16 support, or a CPU
with AVX512-BF16 or AMX), float32 elsewhere. Without native support oneDNN emulates bf16, slower than
float32: ``benchmarks/ssl_throughput.py`` measured bf16 at half the fp32 speed on a 2-core AVX-512 CPU
without AVX512-BF16, and at twice it on one with it (README, Results).

Only the forward pass is autocast; parameters, gradients and optimiser state stay float32.
"""

from __future__ import annotations

import torch

from orthonode.inference.encoder import bf16_native

__all__ = ["PRECISIONS", "resolve_precision"]

PRECISIONS = ("fp32", "bf16", "auto")


def resolve_precision(requested: str, device: torch.device | str) -> str:
    """``"fp32"`` or ``"bf16"`` for ``requested`` (one of :data:`PRECISIONS`) on ``device``."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {requested!r}")
    if requested != "auto":
        return requested
    return "bf16" if bf16_native(torch.device(device)) else "fp32"
