"""The foundation encoder: export format, checkpoint loaders and batched inference (one entry point).

The export format (``orthonode-encoder/1``) is a directory holding

* ``encoder.safetensors``: the backbone state dict in timm's key names, contiguous CPU tensors;
* ``encoder.json``: the :class:`EncoderCard` (architecture, input normalisation, fingerprint, provenance).

The backbone is a timm model named by the card's ``arch`` and built by
:func:`orthonode.inference.backbones.create_backbone`: the DINOv3 ViT family (Siméoni et al., *DINOv3*,
2025, arXiv:2508.10104) or a convolutional network (EfficientNet-Lite, DINOv3's ConvNeXt). Both hand the
heads the same thing (:func:`forward_tokens`): one pooled vector per image (a ViT's CLS token, a CNN's
global average) and one vector per output position (a ViT's patch tokens, a CNN's last feature map).

The work is done, one job per module, by :mod:`~orthonode.inference.encoder_card` (the export format:
card, fingerprint, :func:`save_encoder`), :mod:`~orthonode.inference.encoder_loading`
(:func:`load_encoder`) and :mod:`~orthonode.inference.encoder_runtime` (:class:`Encoder`,
:func:`forward_tokens`); callers import from here.
"""

from orthonode.inference.encoder_card import (
    CARD_FILE,
    DEFAULT_IMG_SIZE,
    FORMAT,
    IMAGENET_MEAN,
    IMAGENET_STD,
    WEIGHTS_FILE,
    EncoderCard,
    fingerprint,
    read_card,
    save_encoder,
)
from orthonode.inference.encoder_loading import load_encoder
from orthonode.inference.encoder_runtime import AutocastMode, Encoder, EncoderOutput, forward_tokens

__all__ = [
    "CARD_FILE",
    "DEFAULT_IMG_SIZE",
    "FORMAT",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "WEIGHTS_FILE",
    "AutocastMode",
    "Encoder",
    "EncoderCard",
    "EncoderOutput",
    "fingerprint",
    "forward_tokens",
    "load_encoder",
    "read_card",
    "save_encoder",
]
