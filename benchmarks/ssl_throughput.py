"""Pretraining throughput of ``ssl_train`` (issue 4 benchmark): training images/s and achieved GFLOP/s of
one full DINOv3 step (teacher forward on the global crops, student forward + backward on global and local
crops with iBOT masks, DINO + iBOT + KoLeo losses, AdamW step, EMA update) beside the same run's matmul
ceiling, in fp32 and with bf16 autocast over the forward pass.

Inputs are SYNTHETIC uniform-noise crops (speed does not depend on the pixels). FLOPs count the backbone
only, analytically (``benchmarks/infer_encoder.flops_per_image``): student forward + backward = 3x its
forward on every crop, plus the teacher's forward on the global crops; the projection heads are not
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
from infer_encoder import flops_per_image, matmul_ceiling

from ssl_train.config import load_config
from ssl_train.train import build_meta_arch, build_optimizer, global_masks


def step_seconds(arch: str, batch: int, steps: int, n_local: int, bf16: bool) -> tuple[float, float]:
    """Median seconds of one training step, and the backbone FLOPs of one step."""
    cfg = load_config(
        overrides=[f"model.arch={arch}", f"crops.n_local={n_local}", f"data.batch_size_per_device={batch}"]
    )
    torch.manual_seed(0)
    meta = build_meta_arch(cfg)
    meta.train()
    optimizer = build_optimizer(meta, cfg)
    g, loc = cfg.crops.global_size, cfg.crops.local_size
    global_crops = torch.rand(cfg.crops.n_global * batch, 1, g, g)
    local_crops = torch.rand(n_local * batch, 1, loc, loc)
    grid = (g // 16, g // 16)
    model = meta.student.backbone.model
    flops = batch * (
        cfg.crops.n_global * 4 * flops_per_image(model, g) + n_local * 3 * flops_per_image(model, loc)
    )
    times = []
    for iteration in range(steps + 1):
        masks = global_masks(cfg, iteration, grid=grid, rank=0, world=1, batch_size=batch)
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
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    args = parser.parse_args(argv)
    print(f"$ {shlex.join([sys.executable, *sys.argv])}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    ceilings = {
        "fp32": matmul_ceiling(4096, torch.float32, 3),
        "bf16": matmul_ceiling(4096, torch.bfloat16, 3),
    }
    print(
        f"{args.arch}, 2 x 224 px global + {args.n_local} x 96 px local crops, batch {args.batch}, "
        f"median of {args.steps} steps after one warm-up"
    )
    print("| precision | s/step | images/s | backbone GFLOP/s | matmul ceiling GFLOP/s | % of ceiling |")
    print("|---|---|---|---|---|---|")
    for dtype in args.dtypes:
        seconds, flops = step_seconds(args.arch, args.batch, args.steps, args.n_local, dtype == "bf16")
        rate = flops / seconds / 1e9
        ceiling = ceilings[dtype]
        print(
            f"| {dtype} | {seconds:.2f} | {args.batch / seconds:.2f} | {rate:.1f} | {ceiling:.1f} | "
            f"{100 * rate / ceiling:.0f}% |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
