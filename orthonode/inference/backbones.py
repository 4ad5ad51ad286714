"""The backbones the node and the trainers build: the DINOv3 ViT family and convolutional networks.

Two families, both timm models named by the encoder card's ``arch``:

* **ViT** -- timm's ``vit_*_patch16_dinov3`` models (``timm.models.eva.Eva`` with DINOv3's axial RoPE,
  register tokens and LayerScale; Siméoni et al., *DINOv3*, 2025, arXiv:2508.10104). Two smaller variants
  are registered beside timm's own, with exactly the same block structure:

  * ``vit_tiny_patch16_dinov3`` -- 192 wide, 12 blocks, 3 heads (5.5 M parameters);
  * ``vit_test_patch16_dinov3`` -- 48 wide, 2 blocks, 2 heads: for tests only, never for results.

* **CNN** -- EfficientNet-Lite (Tan & Le, *EfficientNet*, ICML 2019, arXiv:1905.11946; the "Lite"
  variants drop squeeze-excitation and use ReLU6, TensorFlow "same" padding: timm's ``tf_`` models) and
  the ConvNeXt design DINOv3 distils into (Liu et al., *A ConvNet for the 2020s*, CVPR 2022,
  arXiv:2201.03545). ``convnext_test`` is a one-block-per-stage, 32-wide ConvNeXt for tests only.

:func:`create_backbone` is the one place that turns an architecture name into a model: no classifier,
CLS-token pooling for a ViT (as upstream DINOv3; timm defaults to average pooling), global average
pooling for a CNN. :func:`backbone_stride` is the side of one output position in input pixels (the patch
size of a ViT, the total reduction of a CNN): model inputs are multiples of it.
"""

from __future__ import annotations

from typing import Any, Literal, cast

import timm
from timm.models import register_model
from timm.models.convnext import ConvNeXt
from timm.models.eva import Eva
from torch import nn

#: The DINOv3 ViT architectures, smallest first.
VIT_ARCHITECTURES = (
    "vit_test_patch16_dinov3",
    "vit_tiny_patch16_dinov3",
    "vit_small_patch16_dinov3",
    "vit_small_plus_patch16_dinov3",
    "vit_base_patch16_dinov3",
    "vit_large_patch16_dinov3",
    "vit_huge_plus_patch16_dinov3",
)
#: The convolutional architectures, smallest first within each design.
CNN_ARCHITECTURES = (
    "tf_efficientnet_lite0",
    "tf_efficientnet_lite1",
    "tf_efficientnet_lite2",
    "tf_efficientnet_lite3",
    "tf_efficientnet_lite4",
    "convnext_test",
    "convnext_tiny",
    "convnext_small",
    "convnext_base",
    "convnext_large",
)
#: Every architecture the node and the trainers accept.
ARCHITECTURES = VIT_ARCHITECTURES + CNN_ARCHITECTURES

Family = Literal["vit", "cnn"]
#: What :func:`create_backbone` returns: a timm ``Eva`` (ViT) or a timm convolutional network.
Backbone = nn.Module


def family(arch: str) -> Family:
    """``"vit"`` or ``"cnn"`` for a known architecture name (a clear error for any other)."""
    if arch in VIT_ARCHITECTURES:
        return "vit"
    if arch in CNN_ARCHITECTURES:
        return "cnn"
    raise ValueError(f"unknown backbone {arch!r}; choose one of {', '.join(ARCHITECTURES)}")


def is_vit(model: nn.Module) -> bool:
    """Whether ``model`` is a DINOv3-design ViT (timm ``Eva``)."""
    return isinstance(model, Eva)


def _small_variant(pretrained: bool, overrides: dict[str, Any], kwargs: dict[str, Any]) -> Eva:
    if pretrained:
        raise ValueError("project-defined backbones have no hub weights; load a local checkpoint instead")
    model = timm.create_model("vit_small_patch16_dinov3", pretrained=False, **{**overrides, **kwargs})
    return cast(Eva, model)


@register_model
def vit_tiny_patch16_dinov3(pretrained: bool = False, **kwargs: Any) -> Eva:
    """DINOv3 ViT-Ti/16: ViT-S/16's design at width 192 with 3 heads (5.5 M parameters)."""
    return _small_variant(pretrained, {"embed_dim": 192, "num_heads": 3}, kwargs)


@register_model
def vit_test_patch16_dinov3(pretrained: bool = False, **kwargs: Any) -> Eva:
    """A 2-block, 48-wide DINOv3 ViT for tests only (random weights; never reported as a result)."""
    return _small_variant(pretrained, {"embed_dim": 48, "depth": 2, "num_heads": 2}, kwargs)


@register_model
def convnext_test(pretrained: bool = False, **kwargs: Any) -> ConvNeXt:
    """ConvNeXt-T's design with one block per stage, 8 to 32 wide, for tests only (random weights)."""
    if pretrained:
        raise ValueError("project-defined backbones have no hub weights; load a local checkpoint instead")
    model = timm.create_model("convnext_tiny", depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), **kwargs)
    return cast(ConvNeXt, model)


def create_backbone(
    arch: str,
    *,
    img_size: int = 224,
    in_chans: int = 3,
    drop_path_rate: float = 0.0,
    **kwargs: Any,
) -> Backbone:
    """A randomly initialised backbone ``arch`` with no classifier head (see the module docstring).

    ``img_size`` only sets a ViT's default grid: the ViTs take any multiple of the patch size
    (``dynamic_img_size``, and RoPE has no learned position table to interpolate); the CNNs take any
    multiple of their stride.
    """
    options: dict[str, Any] = {"num_classes": 0, "in_chans": in_chans, "drop_path_rate": drop_path_rate}
    if family(arch) == "cnn":
        options["global_pool"] = "avg"
    else:
        options.update(global_pool="token", img_size=img_size)
    model: nn.Module = timm.create_model(arch, pretrained=False, **options, **kwargs)
    return model


def backbone_stride(model: nn.Module) -> int:
    """Input pixels per output position: the patch size of a ViT, the total reduction of a CNN."""
    if isinstance(model, Eva):
        patch = model.patch_embed.patch_size
        return int(patch[0] if isinstance(patch, tuple | list) else patch)
    info = getattr(model, "feature_info", None)
    if not info:
        raise ValueError(f"{type(model).__name__} has no feature_info: not a timm backbone")
    last = info[-1] if isinstance(info, list) else info.info[-1]
    return int(last["reduction"])


def backbone_in_chans(model: nn.Module) -> int:
    """Input channels of ``model`` (the first convolution's, which is a ViT's patch embedding)."""
    if isinstance(model, Eva):
        return int(model.patch_embed.proj.weight.shape[1])
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return int(module.weight.shape[1])
    raise ValueError(f"{type(model).__name__} has no convolution")


def backbone_width(model: nn.Module) -> int:
    """Width of the pooled feature vector (``num_features``)."""
    return int(model.num_features)  # type: ignore[arg-type]
