"""Randomly initialised models that say so everywhere: for the demo until a trained default model ships,
and for tests. Never presented as findings: the encoder is named ``untrained-random-init`` and every head
bundle has ``trained: false``, which the SR and SC writers turn into "UNTRAINED MODEL - NOT A FINDING"."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from orthonode.inference.backbones import create_backbone
from orthonode.inference.encoder import load_encoder, save_encoder
from orthonode.tasks.bundle import random_bundle

UNTRAINED_ENCODER_NAME = "untrained-random-init"


def write_untrained_models(
    root: Path,
    *,
    tasks: Sequence[str] = ("kl_grade",),
    arch: str = "vit_tiny_patch16_dinov3",
    img_size: int = 224,
    seed: int = 0,
) -> Path:
    """``root/encoder`` (random ``arch``) and ``root/heads/<task>-untrained`` for each task; returns root."""

    torch.manual_seed(seed)
    model = create_backbone(arch, img_size=img_size)
    save_encoder(
        model,
        root / "encoder",
        name=UNTRAINED_ENCODER_NAME,
        version="0",
        img_size=img_size,
        arch=arch,
        training={"note": "random initialisation, never trained"},
    )
    encoder = load_encoder(root / "encoder")
    for number, task in enumerate(tasks):
        random_bundle(task, encoder, root / "heads", seed=seed + number)
    return root
