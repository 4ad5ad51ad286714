"""The loaded foundation encoder at run time: batched, normalised inference and the features the heads read.

The backbone is a timm model named by the card's ``arch`` and built by
:func:`orthonode.inference.backbones.create_backbone`: the DINOv3 ViT family (Siméoni et al., *DINOv3*,
2025, arXiv:2508.10104) or a convolutional network (EfficientNet-Lite, DINOv3's ConvNeXt). Both hand the
heads the same thing (:func:`forward_tokens`): one pooled vector per image (a ViT's CLS token, a CNN's
global average) and one vector per output position (a ViT's patch tokens, a CNN's last feature map).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from timm.models.convnext import ConvNeXt
from timm.models.eva import Eva
from torch import Tensor

from orthonode.inference.backbones import (
    Backbone,
    backbone_in_chans,
    backbone_stride,
    backbone_width,
)
from orthonode.inference.encoder_card import EncoderCard
from orthonode.inference.precision import bf16_native

AutocastMode = Literal["auto", "bf16", "off"]


@dataclass(frozen=True)
class EncoderOutput:
    """Final-layer features, float32 on the CPU (see :func:`forward_tokens`).

    ``cls``: [B, D] pooled vector (a ViT's CLS token, a CNN's global average); ``patches``: [B, N, D] one
    vector per output position in row-major order over ``grid`` = (h, w), N = h * w.
    """

    cls: Tensor
    patches: Tensor
    grid: tuple[int, int]


def forward_tokens(model: Backbone, x: Tensor) -> tuple[Tensor, Tensor]:
    """``(pooled [B, D], positions [B, N, D])`` of a normalised input ``x`` [B, C, H, W], with autograd.

    * ViT: the final CLS token and the patch tokens after the last LayerNorm (register tokens dropped).
    * ConvNeXt (DINOv3's layout): the final LayerNorm (timm's ``head.norm``) applied to the global
      average of the last feature map, and to each of its positions -- as DINOv3's ConvNeXt returns its
      ``x_norm_clstoken`` and ``x_norm_patchtokens``.
    * Other CNNs (EfficientNet-Lite): the global average of the last feature map (after ``conv_head``,
      BatchNorm and activation: what timm's classifier reads) and its positions.
    """
    if isinstance(model, Eva):
        tokens = model.forward_features(x)
        return tokens[:, 0], tokens[:, int(model.num_prefix_tokens) :]
    fmap = model.forward_features(x)  # type: ignore[operator]
    if isinstance(model, ConvNeXt):
        norm: Any = model.head.norm
        pooled = norm(fmap.mean((2, 3), keepdim=True)).flatten(1)
        fmap = norm(fmap)
    else:
        pooled = fmap.mean((2, 3))
    return pooled, fmap.flatten(2).transpose(1, 2)


class Encoder:
    """A loaded foundation encoder (a timm backbone in eval mode) with its card.

    ``autocast``: ``"off"`` (default; fp32, exact), ``"bf16"`` (bfloat16 autocast always), ``"auto"``
    (bfloat16 only where :func:`bf16_native` says the device has native bfloat16 arithmetic, because on
    a CPU without it autocast is slower than fp32 and less exact).
    """

    def __init__(
        self,
        model: Backbone,
        card: EncoderCard,
        *,
        autocast: AutocastMode = "off",
        dropped: Mapping[str, str] | None = None,
    ) -> None:
        if autocast not in ("auto", "bf16", "off"):
            raise ValueError(f"autocast must be 'auto', 'bf16' or 'off', not {autocast!r}")
        self.model = model.eval()
        self._card = card
        self.dropped = dict(dropped or {})
        self.device = next(model.parameters()).device
        self.use_bf16 = autocast == "bf16" or (autocast == "auto" and bf16_native(self.device))
        mean, std = card.channel_stats()
        self._mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    @property
    def card(self) -> EncoderCard:
        return self._card

    @property
    def fingerprint(self) -> str:
        return self._card.fingerprint

    @property
    def embed_dim(self) -> int:
        return backbone_width(self.model)

    @property
    def patch_size(self) -> int:
        """Input pixels per output position (a ViT's patch size, a CNN's stride)."""
        return backbone_stride(self.model)

    @property
    def in_chans(self) -> int:
        return backbone_in_chans(self.model)

    def prepare(self, images: Tensor | np.ndarray) -> Tensor:
        """[B, 1, H, W] or [B, H, W] single-channel images in [0, 1] -> the normalised [B, in_chans, H, W]
        float32 model input ((x - mean) / std per channel, the grayscale repeated to every channel).

        H and W must be multiples of the patch size. Values far outside [0, 1] (e.g. 0..255 pixels) are
        an error: pixels must be scaled by the preprocessing first.
        """
        x = torch.as_tensor(images)
        if x.ndim == 3:
            x = x.unsqueeze(1)
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"expected images [B, 1, H, W] or [B, H, W], got shape {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError("empty batch")
        p = self.patch_size
        if x.shape[-2] % p or x.shape[-1] % p:
            raise ValueError(f"image size {tuple(x.shape[-2:])} is not a multiple of the patch size {p}")
        x = x.to(torch.float32)
        if not bool(torch.isfinite(x).all()):
            raise ValueError("images contain NaN or infinite values")
        lo, hi = float(x.min()), float(x.max())
        if lo < -0.5 or hi > 1.5:
            raise ValueError(f"images must be scaled to [0, 1]; found values in [{lo:g}, {hi:g}]")
        x = x.expand(-1, self.in_chans, -1, -1)
        return (x - self._mean) / self._std

    def embed(self, images: Tensor | np.ndarray, *, batch_size: int = 16) -> EncoderOutput:
        """Final CLS and patch tokens of ``images`` ([B, 1, H, W] or [B, H, W] in [0, 1]), computed in
        batches of ``batch_size`` under ``torch.inference_mode()`` (bf16 autocast if enabled)."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        x = self.prepare(images)
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        dtype = next(self.model.parameters()).dtype
        cls_parts, patch_parts = [], []
        with torch.inference_mode():
            for start in range(0, x.shape[0], batch_size):
                chunk = x[start : start + batch_size].to(self.device, dtype=dtype)
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
                    pooled, positions = forward_tokens(self.model, chunk)
                cls_parts.append(pooled.float().cpu())
                patch_parts.append(positions.float().cpu())
        return EncoderOutput(cls=torch.cat(cls_parts), patches=torch.cat(patch_parts), grid=(h, w))

    @staticmethod
    def saliency(output: EncoderOutput) -> np.ndarray:
        """[B, h, w] float32 map in [0, 1]: cosine similarity of the final CLS token to each patch token,
        min-max scaled per image (a constant map becomes 0).

        It shows which patches resemble the global summary the heads read; it is a similarity map for
        the key image overlay, not an explanation of any head's decision.
        """
        cls = torch.nn.functional.normalize(output.cls.float(), dim=-1)
        patches = torch.nn.functional.normalize(output.patches.float(), dim=-1)
        sim = torch.einsum("bd,bnd->bn", cls, patches)
        lo = sim.min(dim=1, keepdim=True).values
        span = sim.max(dim=1, keepdim=True).values - lo
        scaled = torch.where(span > 0, (sim - lo) / span.clamp_min(1e-12), torch.zeros_like(sim))
        h, w = output.grid
        return scaled.reshape(-1, h, w).numpy().astype(np.float32)

    @staticmethod
    def upsample(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """Bilinear resize of [B, h, w] (or [h, w]) maps to ``size`` = (H, W), clipped to [0, 1]."""
        arr = np.asarray(maps, dtype=np.float32)
        squeeze = arr.ndim == 2
        if squeeze:
            arr = arr[None]
        if arr.ndim != 3:
            raise ValueError(f"expected maps [B, h, w] or [h, w], got shape {arr.shape}")
        t = torch.from_numpy(np.ascontiguousarray(arr))[:, None]
        out = torch.nn.functional.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)
        res = out[:, 0].clamp(0.0, 1.0).numpy()
        return res[0] if squeeze else res
