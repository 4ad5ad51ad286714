"""Training schedules of the DINO family and the optimiser parameter groups.

References
----------
* Caron et al., "DINO", arXiv:2104.14294, Section 4 / Appendix: learning rate linearly warmed up then
  cosine-decayed; weight decay cosine from 0.04 to 0.4; teacher temperature linearly warmed up from 0.04 to
  its final value; teacher EMA momentum cosine from 0.996 to 1; the last layer of the head frozen during the
  first epoch.
* Clark et al., "ELECTRA" / Bao et al., "BEiT", arXiv:2106.08254: layer-wise learning-rate decay (block ``i``
  of ``L`` scaled by ``decay ** (L + 1 - (i + 1))``, the embeddings by ``decay ** (L + 1)``).

Formulas (``t`` = iteration, 0-based, ``T`` = total iterations):

* cosine from ``a`` to ``b`` over ``[t0, T)``: ``b + (a - b) * (1 + cos(pi * (t - t0) / (T - t0))) / 2``,
  and ``b`` from ``T`` on.
* learning rate: ``lr * t / W`` for ``t < W`` (linear warm-up from 0), then cosine from ``lr`` to ``min_lr``
  over ``[W, T)``.
* weight decay: cosine from ``wd`` to ``wd_end`` over ``[0, T)``.
* teacher temperature: ``w + (tau - w) * t / Wt`` for ``t < Wt`` (linear from ``w``), then ``tau``.
* EMA momentum: cosine from ``m`` to 1 over ``[0, T)``.

Every schedule is a pure function of the iteration, so an exactly resumed run needs no schedule state.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from torch import nn

__all__ = [
    "ScheduleValues",
    "Schedules",
    "cosine",
    "layer_id",
    "param_groups",
    "uses_weight_decay",
]


def cosine(start: float, end: float, step: float, total: float) -> float:
    """Half-cosine from ``start`` (step 0) to ``end`` (step ``total`` and later)."""
    if total <= 0 or step >= total:
        return end
    step = max(step, 0.0)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * step / total))


@dataclass(frozen=True)
class ScheduleValues:
    """The scheduled values of one iteration."""

    lr: float
    weight_decay: float
    teacher_temp: float
    momentum: float
    freeze_last_layer: bool


@dataclass(frozen=True)
class Schedules:
    """All schedules of a run, in iterations (see the module docstring).

    Raises:
        ValueError: for negative lengths or values out of range.
    """

    total_iters: int
    lr: float
    min_lr: float
    warmup_iters: int
    weight_decay: float
    weight_decay_end: float
    teacher_temp: float
    warmup_teacher_temp: float
    warmup_teacher_temp_iters: int
    momentum: float
    freeze_last_layer_iters: int = 0

    def __post_init__(self) -> None:
        if self.total_iters < 1:
            raise ValueError(f"total_iters must be >= 1, got {self.total_iters}")
        for name in ("warmup_iters", "warmup_teacher_temp_iters", "freeze_last_layer_iters"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.lr < 0 or self.min_lr < 0:
            raise ValueError(f"learning rates must be >= 0, got lr={self.lr}, min_lr={self.min_lr}")
        if not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {self.momentum}")
        if self.teacher_temp <= 0 or self.warmup_teacher_temp <= 0:
            raise ValueError("teacher temperatures must be > 0")

    def learning_rate(self, t: int) -> float:
        """Linear warm-up from 0 to ``lr`` over ``warmup_iters``, then cosine to ``min_lr``."""
        if t < self.warmup_iters:
            return self.lr * t / self.warmup_iters
        return cosine(self.lr, self.min_lr, t - self.warmup_iters, self.total_iters - self.warmup_iters)

    def weight_decay_at(self, t: int) -> float:
        """Cosine from ``weight_decay`` to ``weight_decay_end``."""
        return cosine(self.weight_decay, self.weight_decay_end, t, self.total_iters)

    def teacher_temp_at(self, t: int) -> float:
        """Linear from ``warmup_teacher_temp`` to ``teacher_temp`` over the warm-up, then constant."""
        if t < self.warmup_teacher_temp_iters:
            frac = t / self.warmup_teacher_temp_iters
            return self.warmup_teacher_temp + (self.teacher_temp - self.warmup_teacher_temp) * frac
        return self.teacher_temp

    def momentum_at(self, t: int) -> float:
        """Cosine from ``momentum`` to 1."""
        return cosine(self.momentum, 1.0, t, self.total_iters)

    def at(self, t: int) -> ScheduleValues:
        """All values of iteration ``t``."""
        if t < 0:
            raise ValueError(f"iteration must be >= 0, got {t}")
        return ScheduleValues(
            lr=self.learning_rate(t),
            weight_decay=self.weight_decay_at(t),
            teacher_temp=self.teacher_temp_at(t),
            momentum=self.momentum_at(t),
            freeze_last_layer=t < self.freeze_last_layer_iters,
        )


_NO_DECAY_NAMES = ("cls_token", "reg_token", "mask_token", "pos_embed", "storage_tokens")


def uses_weight_decay(name: str, param: nn.Parameter) -> bool:
    """False for biases, norm weights, LayerScale gammas (all 1-D) and the learned tokens."""
    if param.ndim <= 1:
        return False
    return not any(part in _NO_DECAY_NAMES for part in name.split("."))


#: First name parts of a backbone's input end (layer 0): a ViT's embeddings and tokens, an EfficientNet's
#: stem convolution and BatchNorm, a ConvNeXt's stem.
_INPUT_END = (
    "cls_token",
    "reg_token",
    "mask_token",
    "pos_embed",
    "patch_embed",
    "rope",
    "conv_stem",
    "bn1",
    "stem",
)


def layer_id(name: str, depth: int) -> int:
    """Layer of a backbone parameter name (relative to the timm model): 0 for the embeddings and tokens (a
    CNN's stem), ``i + 1`` for ``blocks.i`` (a ViT block, an EfficientNet stage) or ``stages.i`` (a
    ConvNeXt stage), ``depth + 1`` for the final norm / head convolution and anything else."""
    parts = name.split(".")
    if parts[0] in _INPUT_END:
        return 0
    if parts[0] in ("blocks", "stages") and len(parts) > 1 and parts[1].isdigit():
        return int(parts[1]) + 1
    return depth + 1


def param_groups(
    named_backbone: Iterable[tuple[str, nn.Parameter]],
    named_heads: Iterable[tuple[str, nn.Parameter]],
    *,
    depth: int,
    layer_decay: float = 1.0,
) -> list[dict[str, Any]]:
    """AdamW parameter groups with ``lr_multiplier`` (layer decay) and ``wd_multiplier`` (0 or 1).

    Backbone names are relative to the timm model (``blocks.3.attn.qkv.weight``; ``mask_token`` of the
    wrapper counts as an embedding); backbone layer ``l`` gets ``layer_decay ** (depth + 1 - l)``; heads
    get 1.
    Parameters that do not require grad are left out. Groups are keyed by (multipliers) and keep the order of
    first appearance, so the optimiser state dict is the same in every run.
    """
    if not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
    groups: dict[tuple[float, float], dict[str, Any]] = {}

    def add(name: str, param: nn.Parameter, lr_mult: float) -> None:
        if not param.requires_grad:
            return
        wd_mult = 1.0 if uses_weight_decay(name, param) else 0.0
        key = (lr_mult, wd_mult)
        if key not in groups:
            groups[key] = {"params": [], "names": [], "lr_multiplier": lr_mult, "wd_multiplier": wd_mult}
        groups[key]["params"].append(param)
        groups[key]["names"].append(name)

    for name, param in named_backbone:
        add(name, param, layer_decay ** (depth + 1 - layer_id(name, depth)))
    for name, param in named_heads:
        add(name, param, 1.0)
    return list(groups.values())


def apply_schedule(optimizer: Any, values: ScheduleValues) -> None:
    """Set every group's ``lr`` and ``weight_decay`` from ``values`` and the group's multipliers."""
    for group in optimizer.param_groups:
        group["lr"] = values.lr * group.get("lr_multiplier", 1.0)
        group["weight_decay"] = values.weight_decay * group.get("wd_multiplier", 1.0)
