"""Export the EMA teacher backbone of a run as a node encoder (``orthonode-encoder/1``).

The teacher, not the student, is exported: it is the model DINO / DINOv2 / DINOv3 evaluate and release
(Caron et al., arXiv:2104.14294, Section 5.5). The backbone state dict keeps timm key names (the mask token,
a training-only parameter, is not part of it); the card records the arch, the crop size, the input
normalisation and a training summary (iterations, data, resolved config, git commit). Writing the files is
:func:`orthonode.inference.encoder.save_encoder`'s job.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from orthonode.inference.backbones import family
from orthonode.inference.encoder import EncoderCard, save_encoder
from ssl_train.checkpoint import config_of_run, latest_checkpoint, load_checkpoint
from ssl_train.config import config_to_dict
from ssl_train.errors import TrainingError
from ssl_train.models.backbone import SSLBackbone

__all__ = ["export_run"]

logger = logging.getLogger(__name__)

_TEACHER_PREFIX = "teacher.backbone."


def export_run(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    name: str | None = None,
    version: str | None = None,
    checkpoint: str | Path | None = None,
    img_size: int | None = None,
) -> EncoderCard:
    """Write ``encoder.safetensors`` + ``encoder.json`` of the run's teacher backbone.

    Args:
        run_dir: a run directory of :func:`ssl_train.train.fit`.
        out_dir: target folder (default ``run_dir / "export"``).
        name: encoder name (default the run name).
        version: encoder version (default ``it<iteration>``).
        checkpoint: a specific checkpoint file (default the latest).
        img_size: the input side the encoder card declares (default the run's global crop size). Only a
            convolutional backbone may take another: it computes at any size, while a ViT's position
            embeddings were trained for the global crop's grid.

    Raises:
        TrainingError: when the run has no checkpoint.
    """
    run_path = Path(run_dir)
    cfg = config_of_run(run_path)
    side = cfg.crops.global_size if img_size is None else int(img_size)
    if side != cfg.crops.global_size and family(cfg.model.arch) != "cnn":
        raise TrainingError(
            f"--img-size {side}: {cfg.model.arch} is a ViT trained at {cfg.crops.global_size} px; only a "
            "convolutional backbone is exported at another input size"
        )
    ckpt_path = Path(checkpoint) if checkpoint is not None else latest_checkpoint(run_path)
    if ckpt_path is None:
        raise TrainingError(f"{run_path} has no checkpoint to export")
    state = load_checkpoint(ckpt_path)
    teacher = {
        k[len(_TEACHER_PREFIX) :]: v for k, v in state["model"].items() if k.startswith(_TEACHER_PREFIX)
    }
    backbone = SSLBackbone(cfg.model.arch, img_size=cfg.crops.global_size, in_chans=cfg.model.in_chans)
    backbone.load_state_dict(teacher)
    git: dict[str, Any] = {}
    git_file = run_path / "git.json"
    if git_file.is_file():
        git = json.loads(git_file.read_text(encoding="utf-8"))
    iteration = int(state["iteration"])
    training = {
        "method": "DINOv3 recipe (DINO + iBOT + KoLeo + Gram anchoring), ssl_train",
        "iterations": iteration,
        "epoch": int(state.get("epoch", 0)),
        "world_size": int(state.get("world_size", 1)),
        "data": {"manifest": cfg.data.manifest, "split": cfg.data.split},
        "checkpoint": ckpt_path.name,
        "git": git,
        "config": config_to_dict(cfg),
    }
    target = Path(out_dir) if out_dir is not None else run_path / "export"
    card = save_encoder(
        backbone.model,
        target,
        name=name or cfg.run.name,
        version=version or f"it{iteration}",
        img_size=side,
        mean=cfg.crops.mean,
        std=cfg.crops.std,
        training=training,
        arch=cfg.model.arch,
    )
    logger.info("exported %s (fingerprint %s) to %s", card.arch, card.fingerprint, target)
    return card
