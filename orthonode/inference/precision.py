"""Which floating-point precision the encoder computes in, at inference and in training runs.

``fp32`` and ``bf16`` are taken as given. ``auto`` picks bf16 autocast where the device computes
bfloat16 natively (:func:`bf16_native`: CUDA with bf16 support, or a CPU
with AVX512-BF16 or AMX), float32 elsewhere. Without native support oneDNN emulates bf16, slower than
float32: ``benchmarks/ssl_throughput.py`` measured bf16 at half the fp32 speed on a 2-core AVX-512 CPU
without AVX512-BF16, and at twice it on one with it (README, Results).

Only the forward pass is autocast; parameters, gradients and optimiser state stay float32.
"""

from __future__ import annotations

import torch

__all__ = ["PRECISIONS", "bf16_native", "resolve_precision"]

PRECISIONS = ("fp32", "bf16", "auto")


def bf16_native(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively: on CUDA, ``torch.cuda.is_bf16_supported()``; on a
    CPU, AVX512-BF16 or AMX tiles (without them oneDNN emulates bf16, slower than fp32)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return False


def resolve_precision(requested: str, device: torch.device | str) -> str:
    """``"fp32"`` or ``"bf16"`` for ``requested`` (one of :data:`PRECISIONS`) on ``device``."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {requested!r}")
    if requested != "auto":
        return requested
    return "bf16" if bf16_native(torch.device(device)) else "fp32"
