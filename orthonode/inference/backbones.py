"""The DINOv3 ViT family, as both the node and ``ssl_train`` build it.

Backbones are timm's ``vit_*_patch16_dinov3`` models (``timm.models.eva.Eva`` with DINOv3's axial RoPE,
register tokens and LayerScale; Siméoni et al., *DINOv3*, 2025, arXiv:2508.10104). Two smaller variants
are registered beside timm's own, with exactly the same block structure:

* ``vit_tiny_patch16_dinov3`` -- 192 wide, 12 blocks, 3 heads (5.5 M parameters): the size that pretrains
  on a few CPU cores in hours and ships inside the package.
* ``vit_test_patch16_dinov3`` -- 48 wide, 2 blocks, 2 heads: for tests only, never for results.

:func:`create_backbone` is the one place that turns an architecture name into a model: CLS-token pooling
(as upstream DINOv3; timm defaults to average pooling), no classifier, dynamic image size.
"""

from __future__ import annotations

from typing import Any, cast

import timm
from timm.models import register_model
from timm.models.eva import Eva

#: The architectures the node and the trainer accept, smallest first.
ARCHITECTURES = (
    "vit_test_patch16_dinov3",
    "vit_tiny_patch16_dinov3",
    "vit_small_patch16_dinov3",
    "vit_small_plus_patch16_dinov3",
    "vit_base_patch16_dinov3",
    "vit_large_patch16_dinov3",
    "vit_huge_plus_patch16_dinov3",
)


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


def create_backbone(
    arch: str,
    *,
    img_size: int = 224,
    in_chans: int = 3,
    drop_path_rate: float = 0.0,
    **kwargs: Any,
) -> Eva:
    """A randomly initialised DINOv3 ViT ``arch`` with CLS pooling and no classifier head.

    ``img_size`` only sets the default grid: the models take any multiple of the patch size
    (``dynamic_img_size``), and RoPE has no learned position table to interpolate.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown backbone {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    model = timm.create_model(
        arch,
        pretrained=False,
        num_classes=0,
        global_pool="token",
        img_size=img_size,
        in_chans=in_chans,
        drop_path_rate=drop_path_rate,
        **kwargs,
    )
    return cast(Eva, model)
