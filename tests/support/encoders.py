"""Tiny randomly initialised encoders in the node's export format, for tests of heads and bundles."""

from __future__ import annotations

from pathlib import Path

import torch

from orthonode.inference.backbones import create_backbone
from orthonode.inference.encoder import save_encoder


def write_test_encoder(
    directory: Path, *, img_size: int = 32, seed: int = 0, arch: str = "vit_test_patch16_dinov3"
) -> Path:
    """A tiny test backbone (seeded; the 2-block ViT, or ``arch="convnext_test"``) exported to
    ``directory`` as ``test-encoder-<seed>``; returns it."""
    torch.manual_seed(seed)
    model = create_backbone(arch, img_size=img_size)
    save_encoder(model, directory, name=f"test-encoder-{seed}", version="0", img_size=img_size, arch=arch)
    return directory
