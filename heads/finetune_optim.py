"""The optimiser side of full fine-tuning (:mod:`heads.finetune`): AdamW parameter groups with
layer-wise learning-rate decay, the learning-rate schedule and stochastic depth.

* **Layer-wise learning-rate decay** (BEiT, Bao et al. 2021, arXiv:2106.08254, §2.4): block ``i`` of ``L``
  gets ``lr * decay^(L - i)``, the embeddings ``lr * decay^(L + 1)``, the final norm and the head ``lr``;
  no weight decay on biases, norms, LayerScale gammas and tokens.
* **Schedule**: linear warm-up, then cosine decay to ``min_lr`` (SGDR, Loshchilov & Hutter 2017,
  arXiv:1608.03983, without restarts), stepped every iteration.
* **Stochastic depth** (Huang et al. 2016, arXiv:1603.09382), linearly increasing to ``drop_path`` over
  the blocks.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor, nn

#: Parameter-name prefixes of the input end of a backbone (layer 0): a ViT's tokens and patch embedding,
#: an EfficientNet's stem convolution and BatchNorm, a ConvNeXt's stem.
_STEM_PREFIXES = (
    "cls_token", "reg_token", "pos_embed", "patch_embed", "mask_token", "conv_stem.", "bn1.", "stem.",
)  # fmt: skip


def _stages(backbone: nn.Module) -> nn.Module | None:
    """The sequence the layer-wise decay counts: a ViT's ``blocks``, an EfficientNet's ``blocks`` (one
    entry per stage), a ConvNeXt's ``stages``."""
    return getattr(backbone, "blocks", None) or getattr(backbone, "stages", None)


def _layer_id(name: str, depth: int) -> int:
    if name.startswith(_STEM_PREFIXES):
        return 0
    if name.startswith(("blocks.", "stages.")):
        return int(name.split(".")[1]) + 1
    return depth + 1


def _no_decay(name: str, param: Tensor) -> bool:
    return param.ndim <= 1 or name.endswith(".bias") or "token" in name or "gamma" in name


def layer_decay_param_groups(
    backbone: nn.Module, head: nn.Module, *, lr: float, layer_decay: float, weight_decay: float
) -> list[dict[str, Any]]:
    """AdamW parameter groups with layer-wise lr decay (see the module docstring).

    Every group carries ``lr_scale`` (its multiplier of the base lr), so a schedule can set
    ``group["lr"] = lr_at(step) * group["lr_scale"]``.
    """
    blocks = _stages(backbone)
    if blocks is None:
        raise ValueError("the backbone has neither .blocks nor .stages (not a timm ViT or CNN)")
    depth = len(blocks)  # type: ignore[arg-type]
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    named: list[tuple[str, Tensor, int]] = [
        (n, p, _layer_id(n, depth)) for n, p in backbone.named_parameters()
    ]
    named += [(f"head.{n}", p, depth + 1) for n, p in head.named_parameters()]
    for name, param, layer in named:
        if not param.requires_grad:
            continue
        no_decay = _no_decay(name, param)
        key = (layer, no_decay)
        if key not in groups:
            scale = layer_decay ** (depth + 1 - layer)
            groups[key] = {
                "params": [],
                "names": [],
                "lr": lr * scale,
                "lr_scale": scale,
                "weight_decay": 0.0 if no_decay else weight_decay,
                "layer": layer,
            }
        groups[key]["params"].append(param)
        groups[key]["names"].append(name)
    return [groups[k] for k in sorted(groups)]


def lr_at(step: int, total_steps: int, warmup_steps: int, lr: float, min_lr: float) -> float:
    """Linear warm-up from 0 over ``warmup_steps``, then cosine decay from ``lr`` to ``min_lr``."""
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


_DROP_PATH_ATTRS = ("drop_path1", "drop_path2", "drop_path")


def set_drop_path(backbone: nn.Module, rate: float) -> None:
    """Stochastic depth on every residual branch of a timm ViT or CNN, rising linearly to ``rate`` over
    the residual blocks in execution order (an EfficientNet's blocks nest inside its stages)."""
    from timm.layers import DropPath

    blocks = [m for m in backbone.modules() if any(hasattr(m, a) for a in _DROP_PATH_ATTRS)]
    for index, block in enumerate(blocks):
        block_rate = rate * index / max(len(blocks) - 1, 1)
        for attr in ("drop_path1", "drop_path2", "drop_path"):
            if hasattr(block, attr):
                setattr(block, attr, DropPath(block_rate) if block_rate > 0 else nn.Identity())
