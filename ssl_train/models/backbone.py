"""The trained backbone: a timm DINOv3 ``Eva`` plus the iBOT mask token, forwarded WITH its RoPE -- or a
convolutional network (EfficientNet-Lite, ConvNeXt), which has no tokens to mask.

References
----------
* Siméoni et al., "DINOv3", arXiv:2508.10104 -- ViT with axial rotary position embeddings (RoPE), register
  tokens, LayerScale; no absolute position table, so RoPE is the only position signal the model has.
* Zhou et al., "iBOT", arXiv:2111.07832 and Oquab et al., "DINOv2", arXiv:2304.07193 -- masked image
  modelling: masked patch embeddings are replaced by a learned mask token before the transformer blocks.

Forward
-------
``SSLBackbone.forward(x, masks)`` follows timm's ``Eva.forward_features`` step by step (``patch_embed`` ->
optional mask-token substitution -> ``_pos_embed`` (prefix tokens, and the RoPE table of the actual token
grid) -> ``norm_pre`` -> every block called with ``rope=`` -> ``norm``), so without masks it equals
``model.forward_features`` exactly. The RoPE table is computed for the input's own grid (``H/p x W/p``, ``p``
the patch size read from the model, :attr:`SSLBackbone.patch_size`: 16 for the DINOv3 ViTs); they are built
with ``dynamic_img_size`` so any multiple of ``p`` works (global and local crops).
(The OrthoFoundation trainer calls the blocks without the RoPE tensor; the CLS output is then invariant to
shuffling the patches. A test here shows that ours is not.)

Shapes: ``x`` ``[B, C, H, W]`` with ``C`` 1 (repeated to the backbone's 3 input channels) or ``in_chans``;
``masks`` ``[B, (H/p) * (W/p)]`` bool (row-major, True = replaced by the mask token). Output
:class:`BackboneOutput` with ``cls`` ``[B, D]``, ``registers`` ``[B, R, D]``, ``patches`` ``[B, N, D]``, all
after the final norm.

A CNN backbone gives what the node's encoder gives (``orthonode.inference.encoder.forward_tokens``): ``cls``
is the pooled vector (the global average of the last feature map; for ConvNeXt after its final norm),
``patches`` are the ``N = (H/s) * (W/s)`` positions of that map (``s`` the stride, 32), ``registers`` is
empty. It has no mask token: a mask with any True position is refused (iBOT is ViT-only).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from timm.models.eva import Eva
from torch import Tensor, nn

from orthonode.inference.backbones import (
    backbone_stride,
    backbone_width,
    create_backbone,
    family,
)
from orthonode.inference.encoder import forward_tokens

__all__ = ["BackboneOutput", "SSLBackbone"]


@dataclass
class BackboneOutput:
    """Final-norm tokens of one forward: ``cls`` [B, D], ``registers`` [B, R, D], ``patches`` [B, N, D]."""

    cls: Tensor
    registers: Tensor
    patches: Tensor


class SSLBackbone(nn.Module):
    """A backbone from :func:`orthonode.inference.backbones.create_backbone`, with a learned mask token when
    it is a ViT.

    Args:
        arch: one of ``orthonode.inference.backbones.ARCHITECTURES``.
        img_size: default image size (any multiple of the patch size is accepted at run time).
        in_chans: input channels of the patch embedding (single-channel inputs are repeated to it).
        drop_path_rate: stochastic depth rate (uses the global torch RNG in training mode).
        layer_scale_init: initial LayerScale gamma (``None``: the architecture's, 1e-5 for DINOv3; ViT only).

    Attributes:
        model: the timm model (its ``state_dict`` is what gets exported, in timm key names).
        mask_token: ``[1, D]`` learned embedding that replaces masked patches (truncated normal, std 0.02);
            ``None`` for a CNN.
        patch_size: input pixels per output position (a ViT's patch, a CNN's stride).
        depth: the units the layer-wise lr decay counts (a ViT's blocks, a CNN's stages).
    """

    def __init__(
        self,
        arch: str,
        *,
        img_size: int = 224,
        in_chans: int = 3,
        drop_path_rate: float = 0.0,
        layer_scale_init: float | None = None,
    ) -> None:
        super().__init__()
        self.arch = arch
        self.is_vit = family(arch) == "vit"
        if not self.is_vit and layer_scale_init is not None:
            raise ValueError(f"{arch}: model.layer_scale_init applies to the ViTs only")
        extra = {} if layer_scale_init is None else {"init_values": layer_scale_init}
        model = create_backbone(
            arch, img_size=img_size, in_chans=in_chans, drop_path_rate=drop_path_rate, **extra
        )
        self.model: nn.Module = model
        if getattr(self.model, "rope_mixed", False):
            raise ValueError(f"{arch}: mixed-mode (per-depth) RoPE is not supported by the SSL forward")
        self.in_chans = in_chans
        self.embed_dim = backbone_width(model)
        self.patch_size = backbone_stride(model)
        self.mask_token: nn.Parameter | None = None
        if isinstance(model, Eva):
            self.num_prefix_tokens = int(model.num_prefix_tokens)
            self.num_reg_tokens = int(getattr(model, "num_reg_tokens", self.num_prefix_tokens - 1))
            self.depth = len(model.blocks)
            self.mask_token = nn.Parameter(torch.zeros(1, self.embed_dim))
            # Not zero (DINOv2 zero-initialises it, but adds a position embedding afterwards): here a zero
            # token would enter the first LayerNorm as an exact zero vector, whose gradient is ~1/sqrt(eps).
            nn.init.trunc_normal_(self.mask_token, std=0.02)
        else:
            self.num_prefix_tokens = 0
            self.num_reg_tokens = 0
            stages = getattr(model, "blocks", None) or getattr(model, "stages", None)
            self.depth = len(stages) if stages is not None else 1

    def _channels(self, x: Tensor) -> Tensor:
        if x.ndim != 4:
            raise ValueError(f"expected images [B, C, H, W], got shape {tuple(x.shape)}")
        if x.shape[1] == self.in_chans:
            return x
        if x.shape[1] == 1:
            return x.expand(-1, self.in_chans, -1, -1)
        raise ValueError(f"expected 1 or {self.in_chans} input channels, got {x.shape[1]}")

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Patch grid ``(H / p, W / p)`` of an input of ``height x width`` pixels."""
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"image size {height}x{width} is not a multiple of the patch size {self.patch_size}"
            )
        return height // self.patch_size, width // self.patch_size

    def tokens(self, x: Tensor, masks: Tensor | None = None, *, use_rope: bool = True) -> Tensor:
        """All final-norm tokens ``[B, prefix + N, D]`` of a ViT (``use_rope=False`` only exists for the
        tests)."""
        model = self.model
        if not isinstance(model, Eva) or self.mask_token is None:
            raise TypeError(f"{self.arch} is not a ViT: it has no tokens (use forward)")
        x = self._channels(x)
        grid_h, grid_w = self.grid(x.shape[-2], x.shape[-1])
        x = model.patch_embed(x)
        if x.ndim == 3:  # a flattening patch embedding: [B, N, D] -> [B, H, W, D]
            x = x.reshape(x.shape[0], grid_h, grid_w, x.shape[-1])
        if masks is not None:
            batch = x.shape[0]
            if masks.shape != (batch, grid_h * grid_w) or masks.dtype != torch.bool:
                raise ValueError(
                    f"masks must be bool [B, N] = [{batch}, {grid_h * grid_w}], got {masks.dtype} "
                    f"{tuple(masks.shape)}"
                )
            selector = masks.reshape(batch, grid_h, grid_w, 1)
            x = torch.where(selector, self.mask_token.to(x.dtype).view(1, 1, 1, -1), x)
        x, rope = model._pos_embed(x)
        x = model.norm_pre(x)
        if not use_rope:
            rope = None
        for block in model.blocks:
            x = block(x, rope=rope)
        return model.norm(x)

    def forward(self, x: Tensor, masks: Tensor | None = None) -> BackboneOutput:
        """CLS, register and patch tokens of ``x`` with masked patches replaced by the mask token (a CNN:
        pooled vector and positions; see the module docstring)."""
        if not self.is_vit:
            if masks is not None and bool(masks.any()):
                raise ValueError(f"{self.arch} is a CNN: masked-patch (iBOT) training is ViT-only")
            x = self._channels(x)
            self.grid(x.shape[-2], x.shape[-1])
            pooled, positions = forward_tokens(self.model, x)
            return BackboneOutput(cls=pooled, registers=positions[:, :0], patches=positions)
        out = self.tokens(x, masks)
        prefix = self.num_prefix_tokens
        return BackboneOutput(cls=out[:, 0], registers=out[:, 1:prefix], patches=out[:, prefix:])
