"""Encoder inference benchmark: images/s and achieved GFLOP/s of the DINOv3 ViT encoder
(:class:`orthonode.inference.encoder.Encoder`, randomly initialised weights: speed does not depend on them)
beside the same run's large-matmul ceiling.

For each architecture, image size, batch size and dtype it times ``Encoder.embed`` (normalisation,
forward pass under ``torch.inference_mode()``, copy of the tokens to float32) on SYNTHETIC uniform-noise
images: one warm-up call, then the median of ``--repeats`` timed calls.

FLOPs are counted analytically per image (multiply-add = 2 FLOPs), with T = 1 + registers + patches tokens:
the patch embedding 2 * patches * (3 * p * p * D), per block the matmuls with the weights
2 * T * (sum of in * out of its Linear layers: qkv, proj, MLP) and the attention 4 * T^2 * D (QK^T and
AV). LayerNorm, softmax, GELU and RoPE are not counted. The ceiling is the median rate of a
4096 x 4096 by 4096 x 4096 matmul (``--ceiling-size``) in fp32 and in bf16 on the same threads.

"bf16" is ``torch.autocast(bfloat16)`` (``Encoder(autocast="bf16")``); on a CPU without AVX512-BF16 or
AMX it is emulated and slower than fp32, which the ceiling column shows.

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

from orthonode.inference.backbones import create_backbone
from orthonode.inference.encoder import Encoder, EncoderCard, fingerprint

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def flops_per_image(model: Any, img: int) -> float:
    """Analytic forward FLOPs of one ``img`` x ``img`` image (see the module docstring)."""
    p = int(model.patch_embed.patch_size[0])
    d = int(model.embed_dim)
    n = (img // p) ** 2
    t = n + int(model.num_prefix_tokens)
    total = 2.0 * n * (3 * p * p * d)
    for blk in model.blocks:
        weights = sum(m.in_features * m.out_features for m in blk.modules() if isinstance(m, torch.nn.Linear))
        total += 2.0 * t * weights + 4.0 * t * t * d
    return total


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
        patch_size=16,
        img_size=img,
        in_chans=3,
        embed_dim=int(model.embed_dim),
        num_reg_tokens=int(model.num_prefix_tokens) - 1,
        mean=0.5,
        std=0.25,
        fingerprint=fingerprint(model.state_dict()),
        name=f"bench-{arch}",
        version="random",
        created=datetime.now(UTC),
    )
    return Encoder(model, card, autocast="bf16" if dtype_name == "bf16" else "off")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--archs", nargs="+", default=["vit_small_patch16_dinov3", "vit_base_patch16_dinov3"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[224, 448])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["fp32", "bf16"])
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

    print("command: " + " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"native bf16: {torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()}"
    )
    ceiling = {name: matmul_ceiling(args.ceiling_size, DTYPES[name], args.repeats) for name in args.dtypes}
    for name, rate in ceiling.items():
        print(f"matmul ceiling {args.ceiling_size}^3 {name}: {rate:.1f} GFLOP/s (median of {args.repeats})")
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
        "\nFLOPs per image are analytic; weights are random; images are SYNTHETIC noise "
        f"({datetime.now(UTC):%F})."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
