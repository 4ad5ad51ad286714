"""Teacher and student statistics of a pretraining run, at initialisation and at its latest checkpoint.

    python experiments/knee_kl224/inspect_teacher.py RUN_DIR [--size 160] [--images 64]

On ``--images`` knee_kl224 train images (every 97th file, resized to ``--size``), for the teacher and the
student: the mean pairwise cosine of the CLS tokens and of the DINO-head bottleneck features, the spread of
the prototype scores across images and across prototypes, the entropy of the Sinkhorn-Knopp targets at
T = 0.04 and of the student softmax at T = 0.1 (ln K = uniform). This is how the collapse described in the
README was found: a flat student output (tiny spread across prototypes) with uniform teacher targets.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ssl_train.loss import sinkhorn_knopp
from ssl_train.meta_arch import SSLMetaArch
from ssl_train.train import build_meta_arch, config_of_run, latest_checkpoint, load_checkpoint


def _images(data: Path, size: int, count: int) -> torch.Tensor:
    files = sorted(data.glob("train/*/*.png"))[::97][:count]
    pixels = [
        np.asarray(Image.open(f).convert("L").resize((size, size)), dtype=np.float32) / 255 for f in files
    ]
    return (torch.from_numpy(np.stack(pixels))[:, None] - 0.5) / 0.25


def _mean_offdiag_cosine(x: torch.Tensor) -> float:
    x = torch.nn.functional.normalize(x, dim=-1)
    sim = x @ x.T
    return float(sim[~torch.eye(len(x), dtype=torch.bool)].mean())


def _entropy(p: torch.Tensor) -> float:
    return float(-(p * p.clamp_min(1e-12).log()).sum(-1).mean())


@torch.no_grad()
def report(meta: SSLMetaArch, x: torch.Tensor, tag: str) -> None:
    for who in ("teacher", "student"):
        net = getattr(meta, who)
        out = net.backbone(x)
        logits = net.dino_head(out.cls)
        targets = sinkhorn_knopp(logits, 0.04)
        print(
            f"{tag:>6} {who}: CLS cos {_mean_offdiag_cosine(out.cls):.4f}, "
            f"bottleneck cos {_mean_offdiag_cosine(net.dino_head.project(out.cls)):.4f}, "
            f"score std across images {float(logits.std(0).mean()):.4f} / across prototypes "
            f"{float(logits.std(1).mean()):.4f}, SK target entropy {_entropy(targets):.3f}, "
            f"softmax(T=0.1) entropy {_entropy(torch.softmax(logits / 0.1, -1)):.3f} "
            f"(ln K = {np.log(logits.shape[-1]):.3f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/knee_kl224"))
    args = parser.parse_args()
    cfg = config_of_run(args.run_dir)
    torch.manual_seed(cfg.run.seed)
    meta = build_meta_arch(cfg)
    x = _images(args.data, args.size, args.images)
    report(meta, x, "init")
    checkpoint = latest_checkpoint(args.run_dir)
    if checkpoint is not None:
        state = load_checkpoint(checkpoint)
        meta.load_state_dict(state["model"])
        report(meta, x, f"it {state['iteration']}")


if __name__ == "__main__":
    main()
