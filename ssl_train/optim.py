"""The optimiser and the schedules of a run (DINO / DINOv2 / DINOv3 recipe).

AdamW over the student with layer-wise lr decay and no weight decay on norms, biases and tokens; the lr,
weight decay, teacher temperature and EMA momentum schedules of the config in iterations (the references
and formulas are in :mod:`ssl_train.schedules`).
"""

from __future__ import annotations

import torch

from ssl_train.config import Config
from ssl_train.meta_arch import SSLMetaArch
from ssl_train.schedules import Schedules, param_groups

__all__ = ["build_optimizer", "build_schedules"]


def build_optimizer(meta: SSLMetaArch, cfg: Config) -> torch.optim.AdamW:
    """AdamW over the student with layer-wise lr decay and no weight decay on norms / biases / tokens."""
    backbone = meta.student.backbone
    named_backbone = [(n, p) for n, p in backbone.model.named_parameters()]
    if backbone.mask_token is not None:
        named_backbone.append(("mask_token", backbone.mask_token))
    named_heads = [(f"dino_head.{n}", p) for n, p in meta.student.dino_head.named_parameters()]
    if meta.student.ibot_head is not None:
        named_heads += [(f"ibot_head.{n}", p) for n, p in meta.student.ibot_head.named_parameters()]
    groups = param_groups(
        named_backbone, named_heads, depth=backbone.depth, layer_decay=cfg.optim.layer_decay
    )
    return torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=cfg.optim.betas, weight_decay=0.0)


def build_schedules(cfg: Config, iterations_per_epoch: int) -> Schedules:
    """The schedules of ``cfg`` in iterations."""

    def iters(epochs: float) -> int:
        return round(epochs * iterations_per_epoch)

    return Schedules(
        total_iters=max(1, iters(cfg.optim.epochs)),
        lr=cfg.optim.lr,
        min_lr=cfg.optim.min_lr,
        warmup_iters=iters(cfg.optim.warmup_epochs),
        weight_decay=cfg.optim.weight_decay,
        weight_decay_end=cfg.optim.weight_decay_end,
        teacher_temp=cfg.loss.teacher_temp,
        warmup_teacher_temp=cfg.loss.warmup_teacher_temp,
        warmup_teacher_temp_iters=iters(cfg.loss.warmup_teacher_temp_epochs),
        momentum=cfg.optim.momentum_teacher,
        freeze_last_layer_iters=iters(cfg.optim.freeze_last_layer_epochs),
    )
