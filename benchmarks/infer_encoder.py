"""Encoder inference benchmark: images/s and achieved GFLOP/s of the node's encoders -- the DINOv3 ViTs and
the EfficientNet-Lite CNNs (:class:`orthonode.inference.encoder.Encoder`, randomly initialised weights:
speed does not depend on them) -- beside the same run's large-matmul ceiling.

For each architecture, image size, batch size and dtype it times ``Encoder.embed`` (normalisation,
forward pass under ``torch.inference_mode()``, copy of the tokens to float32) on SYNTHETIC uniform-noise
images: one warm-up call, then the median of ``--repeats`` timed calls.

FLOPs per image are counted by ``torch.utils.flop_counter.FlopCounterMode`` over one forward pass
(matmuls, convolutions and attention; multiply-add = 2 FLOPs; norms and activations are not counted).
The ceiling is the median rate of a 4096 x 4096 by 4096 x 4096 matmul (``--ceiling-size``) on the same
threads.

"bf16" is ``torch.autocast(bfloat16)`` (``Encoder(autocast="bf16")``). It is measured by default only
where the CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere it is emulated, 3-300x slower than
fp32 (a 4096^3 emulated matmul alone took minutes on an AVX2 machine), so it runs only when asked for
with ``--dtypes fp32 bf16``. Each row is printed as soon as it is measured.

The default grid (ViT-S/16 and ViT-B/16, 224 and 448 px, batch 1 and 16, fp32 and bf16) would take far
longer than a few minutes on 2 cores, so each configuration whose estimated time (FLOPs over a quarter
of the ceiling, warm-up plus repeats) exceeds ``--budget`` seconds is reported as skipped; pass
``--budget 0`` for the whole grid. Options: ``.venv/bin/python benchmarks/infer_encoder.py --help``.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import torch

from orthonode.inference.backbones import (
    backbone_in_chans,
    backbone_stride,
    backbone_width,
    create_backbone,
    is_vit,
)
from orthonode.inference.encoder import Encoder, EncoderCard, fingerprint, forward_tokens

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def flops_per_image(model: Any, img: int) -> float:
    """Forward FLOPs of one ``img`` x ``img`` image (``FlopCounterMode``; see the module docstring)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, backbone_in_chans(model), img, img)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        forward_tokens(model, x)
    return float(counter.get_total_flops())


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_ceiling(size: int, dtype: torch.dtype, repeats: int) -> float:
    """GFLOP/s of a ``size`` x ``size`` matmul in ``dtype`` (median of ``repeats`` after one warm-up)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=g).to(dtype)
    b = torch.randn(size, size, generator=g).to(dtype)
    seconds = median_time(lambda: torch.mm(a, b), repeats)
    return 2.0 * size**3 / seconds / 1e9


def _embed_call(enc: Encoder, images: torch.Tensor) -> Callable[[], object]:
    return lambda: enc.embed(images, batch_size=len(images))


def make_encoder(arch: str, img: int, dtype_name: str) -> Encoder:
    model = create_backbone(arch, img_size=img)
    card = EncoderCard(
        format="orthonode-encoder/1",
        arch=arch,
        patch_size=backbone_stride(model),
        img_size=img,
        in_chans=backbone_in_chans(model),
        embed_dim=backbone_width(model),
        num_reg_tokens=int(model.num_prefix_tokens) - 1 if is_vit(model) else 0,
        mean=0.5,
        std=0.25,
        fingerprint=fingerprint(model.state_dict()),
        name=f"bench-{arch}",
        version="random",
        created=datetime.now(UTC),
    )
    return Encoder(model, card, autocast="bf16" if dtype_name == "bf16" else "off")


def native_bf16() -> bool:
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def default_dtypes() -> list[str]:
    """fp32, and bf16 only where the CPU computes it natively (emulated bf16 only when asked for)."""
    return ["fp32", "bf16"] if native_bf16() else ["fp32"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--archs",
        nargs="+",
        default=[
            "tf_efficientnet_lite0",
            "tf_efficientnet_lite2",
            "vit_small_patch16_dinov3",
            "vit_base_patch16_dinov3",
        ],
    )
    parser.add_argument("--sizes", nargs="+", type=int, default=[224, 448])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    parser.add_argument(
        "--dtypes", nargs="+", choices=sorted(DTYPES), default=None,
        help="default: fp32, and bf16 where the CPU computes it natively",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per configuration (median)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--ceiling-size", type=int, default=4096)
    parser.add_argument(
        "--budget",
        type=float,
        default=25.0,
        help="skip configurations estimated above this many seconds (0: none)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.dtypes = args.dtypes or default_dtypes()

    print("command: " + " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"native bf16: {native_bf16()}",
        flush=True,
    )
    ceiling = {}
    for name in args.dtypes:
        ceiling[name] = matmul_ceiling(args.ceiling_size, DTYPES[name], args.repeats)
        print(
            f"matmul ceiling {args.ceiling_size}^3 {name}: {ceiling[name]:.1f} GFLOP/s "
            f"(median of {args.repeats})",
            flush=True,
        )
    print()
    header = f"{'arch':<30} {'px':>4} {'batch':>5} {'dtype':>5} {'images/s':>9} {'GFLOP/s':>8} {'% ceil':>6}"
    print(header)
    print("-" * len(header))
    for arch in args.archs:
        for img in args.sizes:
            for dtype_name in args.dtypes:
                enc = make_encoder(arch, img, dtype_name)
                per_image = flops_per_image(enc.model, img)
                for batch in args.batches:
                    est = (args.repeats + 1) * batch * per_image / (0.25 * ceiling[dtype_name] * 1e9)
                    label = f"{arch:<30} {img:>4} {batch:>5} {dtype_name:>5}"
                    if args.budget and est > args.budget:
                        print(f"{label} skipped (estimated {est:.0f} s > --budget {args.budget:g})")
                        continue
                    images = torch.rand(batch, 1, img, img, generator=torch.Generator().manual_seed(batch))
                    seconds = median_time(_embed_call(enc, images), args.repeats)
                    rate = batch / seconds
                    gflops = rate * per_image / 1e9
                    print(f"{label} {rate:>9.2f} {gflops:>8.1f} {100 * gflops / ceiling[dtype_name]:>5.0f}%")
                    sys.stdout.flush()
    print(
        "\nFLOPs per image from FlopCounterMode; weights are random; images are SYNTHETIC noise "
        f"({datetime.now(UTC):%F})."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
