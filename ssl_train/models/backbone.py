"""The trained backbone: a timm DINOv3 ``Eva`` plus the iBOT mask token, forwarded WITH its RoPE.

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
``model.forward_features`` exactly. The RoPE table is computed for the input's own grid (``H/16 x W/16``);
the DINOv3 ViTs are built with ``dynamic_img_size`` so any multiple of 16 works (global and local crops).
(The OrthoFoundation trainer calls the blocks without the RoPE tensor; the CLS output is then invariant to
shuffling the patches. A test here shows that ours is not.)

Shapes: ``x`` ``[B, C, H, W]`` with ``C`` 1 (repeated to the backbone's 3 input channels) or ``in_chans``;
``masks`` ``[B, (H/16) * (W/16)]`` bool (row-major, True = replaced by the mask token). Output
:class:`BackboneOutput` with ``cls`` ``[B, D]``, ``registers`` ``[B, R, D]``, ``patches`` ``[B, N, D]``, all
after the final norm.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from timm.models.eva import Eva
from torch import Tensor, nn

from orthonode.inference.backbones import create_backbone

__all__ = ["BackboneOutput", "SSLBackbone"]


@dataclass
class BackboneOutput:
    """Final-norm tokens of one forward: ``cls`` [B, D], ``registers`` [B, R, D], ``patches`` [B, N, D]."""

    cls: Tensor
    registers: Tensor
    patches: Tensor


class SSLBackbone(nn.Module):
    """A DINOv3 ViT from :func:`orthonode.inference.backbones.create_backbone` with a learned mask token.

    Args:
        arch: one of ``orthonode.inference.backbones.ARCHITECTURES``.
        img_size: default image size (any multiple of the patch size is accepted at run time).
        in_chans: input channels of the patch embedding (single-channel inputs are repeated to it).
        drop_path_rate: stochastic depth rate (uses the global torch RNG in training mode).
        layer_scale_init: initial LayerScale gamma (``None``: the architecture's, 1e-5 for DINOv3).

    Attributes:
        model: the timm ``Eva`` (its ``state_dict`` is what gets exported, in timm key names).
        mask_token: ``[1, D]`` learned embedding that replaces masked patches (truncated normal, std 0.02).
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
        extra = {} if layer_scale_init is None else {"init_values": layer_scale_init}
        model = create_backbone(
            arch, img_size=img_size, in_chans=in_chans, drop_path_rate=drop_path_rate, **extra
        )
        if not isinstance(model, Eva):
            raise ValueError(f"{arch}: the masked-token SSL backbone is a ViT; CNNs use the pooled path")
        self.model: Eva = model
        if getattr(self.model, "rope_mixed", False):
            raise ValueError(f"{arch}: mixed-mode (per-depth) RoPE is not supported by the SSL forward")
        self.in_chans = in_chans
        self.embed_dim = int(self.model.embed_dim)
        self.num_prefix_tokens = int(self.model.num_prefix_tokens)
        self.num_reg_tokens = int(getattr(self.model, "num_reg_tokens", self.num_prefix_tokens - 1))
        patch = self.model.patch_embed.patch_size
        self.patch_size = int(patch[0] if isinstance(patch, tuple | list) else patch)
        self.depth = len(self.model.blocks)
        self.mask_token = nn.Parameter(torch.zeros(1, self.embed_dim))
        # Not zero (DINOv2 zero-initialises it, but adds a position embedding afterwards): here a zero token
        # would enter the first LayerNorm as an exact zero vector, whose gradient is ~1/sqrt(eps).
        nn.init.trunc_normal_(self.mask_token, std=0.02)

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
        """All final-norm tokens ``[B, prefix + N, D]`` (``use_rope=False`` only exists for the tests)."""
        x = self._channels(x)
        grid_h, grid_w = self.grid(x.shape[-2], x.shape[-1])
        model = self.model
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
        """CLS, register and patch tokens of ``x`` with masked patches replaced by the mask token."""
        out = self.tokens(x, masks)
        prefix = self.num_prefix_tokens
        return BackboneOutput(cls=out[:, 0], registers=out[:, 1:prefix], patches=out[:, prefix:])
