"""Pretraining throughput of ``ssl_train`` (issue 4 benchmark): training images/s and achieved GFLOP/s of
one full DINOv3 step (teacher forward on the global crops, student forward + backward on global and local
crops with iBOT masks, DINO + iBOT + KoLeo losses, AdamW step, EMA update) beside the same run's matmul
ceiling, in fp32 and with bf16 autocast over the forward pass. A CNN (``--arch tf_efficientnet_lite0``)
runs the step a CNN takes: no iBOT, DINO + KoLeo on the pooled vector, 224 / 96 px crops.

bf16 is measured by default only where the CPU computes it natively; emulated bf16 (and its matmul
ceiling, which alone took minutes on an AVX2 machine) only with ``--dtypes fp32 bf16``. Each row is
printed as soon as it is measured.

Inputs are SYNTHETIC uniform-noise crops (speed does not depend on the pixels). FLOPs count the backbone
only (``benchmarks/infer_encoder.flops_per_image``, torch's FlopCounterMode): student forward + backward =
3x its forward on every crop, plus the teacher's forward on the global crops; the projection heads are not
counted, so the figure is a lower bound on the work done. "images/s" counts source images (each gives
``n_global + n_local`` crops).

    .venv/bin/python benchmarks/ssl_throughput.py [--arch vit_small_patch16_dinov3] [--batch 8] [--steps 3]
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from infer_encoder import default_dtypes, flops_per_image, matmul_ceiling, native_bf16

from orthonode.inference.backbones import family
from ssl_train.config import load_config
from ssl_train.train import build_meta_arch, build_optimizer, global_masks


def step_seconds(arch: str, batch: int, steps: int, n_local: int, bf16: bool) -> tuple[float, float]:
    """Median seconds of one training step, and the backbone FLOPs of one step."""
    cnn = family(arch) == "cnn"
    extra = ["loss.ibot_weight=0", "model.ibot_separate_head=false"] if cnn else []
    cfg = load_config(
        overrides=[
            f"model.arch={arch}", f"crops.n_local={n_local}", f"data.batch_size_per_device={batch}", *extra
        ]
    )  # fmt: skip
    torch.manual_seed(0)
    meta = build_meta_arch(cfg)
    meta.train()
    optimizer = build_optimizer(meta, cfg)
    g, loc = cfg.crops.global_size, cfg.crops.local_size
    global_crops = torch.rand(cfg.crops.n_global * batch, 1, g, g)
    local_crops = torch.rand(n_local * batch, 1, loc, loc)
    grid = meta.student.backbone.grid(g, g)
    model = meta.student.backbone.model
    flops = batch * (
        cfg.crops.n_global * 4 * flops_per_image(model, g) + n_local * 3 * flops_per_image(model, loc)
    )
    times = []
    for iteration in range(steps + 1):
        masks = global_masks(cfg, iteration, grid=grid, rank=0, world=1, batch_size=batch)
        if cnn:
            masks = torch.zeros_like(masks)
        start = time.perf_counter()
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=bf16):
            losses = meta(global_crops, local_crops, masks, teacher_temp=0.04)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimizer.step()
        meta.update_teacher(0.996)
        if iteration:  # the first step warms up
            times.append(time.perf_counter() - start)
    return statistics.median(times), flops


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--arch", default="vit_small_patch16_dinov3")
    parser.add_argument("--batch", type=int, default=8, help="source images per step")
    parser.add_argument("--n-local", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up")
    parser.add_argument("--dtypes", nargs="+", default=None, choices=["fp32", "bf16"])
    args = parser.parse_args(argv)
    dtypes = args.dtypes or default_dtypes()
    print(f"$ {shlex.join([sys.executable, *sys.argv])}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, native bf16: {native_bf16()}")
    ceilings = {d: matmul_ceiling(4096, torch.float32 if d == "fp32" else torch.bfloat16, 3) for d in dtypes}
    print(
        f"{args.arch}, 2 x 224 px global + {args.n_local} x 96 px local crops, batch {args.batch}, "
        f"median of {args.steps} steps after one warm-up"
    )
    print("| precision | s/step | images/s | backbone GFLOP/s | matmul ceiling GFLOP/s | % of ceiling |")
    print("|---|---|---|---|---|---|", flush=True)
    for dtype in dtypes:
        seconds, flops = step_seconds(args.arch, args.batch, args.steps, args.n_local, dtype == "bf16")
        rate = flops / seconds / 1e9
        ceiling = ceilings[dtype]
        print(
            f"| {dtype} | {seconds:.2f} | {args.batch / seconds:.2f} | {rate:.1f} | {ceiling:.1f} | "
            f"{100 * rate / ceiling:.0f}% |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
