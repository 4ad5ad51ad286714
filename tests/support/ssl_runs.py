"""Tiny pretraining runs for the ssl_train tests: a small config and readers of a run's metrics and state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ssl_train.config import Config, load_config
from ssl_train.train import latest_checkpoint, load_checkpoint

TINY_HEAD = "{num_prototypes: 32, hidden_dim: 32, bottleneck_dim: 16, n_layers: 2}"


def tiny_config(tmp: Path, manifest: Path, *extra: str) -> Config:
    return load_config(
        None,
        [
            "model.arch=vit_test_patch16_dinov3",
            f"model.dino_head={TINY_HEAD}",
            f"model.ibot_head={TINY_HEAD}",
            "crops.global_size=32",
            "crops.local_size=16",
            "crops.n_local=2",
            "data.batch_size_per_device=4",
            "data.num_workers=0",
            "data.max_side=64",
            f"data.manifest={manifest}",
            f"run.output_dir={tmp / 'runs'}",
            "optim.epochs=3",
            "optim.lr=0.002",
            "optim.warmup_epochs=0.5",
            "optim.freeze_last_layer_epochs=0.5",
            "loss.warmup_teacher_temp_epochs=1",
            "train.log_every=1",
            "train.progress=none",
            "train.checkpoint_every=2",
            *extra,
        ],
    )


def metrics(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "eval" not in r]


def student_teacher_state(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = latest_checkpoint(run_dir)
    assert ckpt is not None
    return load_checkpoint(ckpt)["model"]
