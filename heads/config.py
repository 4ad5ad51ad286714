"""The hyper-parameters that probe training (:mod:`heads.train`) and full fine-tuning
(:mod:`heads.finetune`) share: the head, its input features, the AdamW optimiser, early stopping on the
patient carve, class weighting and the seed.

:class:`HeadTraining` holds them once. Its defaults are the probe's (:class:`heads.train.FitConfig`);
:class:`heads.finetune.FineTuneConfig` sets its own for a whole encoder (fewer epochs, smaller batches,
a lower lr, the stronger weight decay of ViT fine-tuning).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class HeadTraining:
    """What training a head involves, probe or fine-tuned (saved in the bundle card)."""

    head: str = "linear"  # linear | mlp | ordinal | attention
    features: str = "cls+meanpatch"  # cls | cls+meanpatch
    hparams: dict[str, Any] = field(default_factory=dict)  # head constructor arguments
    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 10
    val_fraction: float = 0.15
    class_weighting: str = "balanced"  # balanced | none
    seed: int = 0

    def shared(self) -> dict[str, Any]:
        """The :class:`HeadTraining` fields of this configuration by name (values as they are, not
        copied), e.g. to start a fine-tuning configuration from a probe's."""
        return {f.name: getattr(self, f.name) for f in fields(HeadTraining)}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
