"""Checkpoint key layouts of the DINOv3 ViT family, and their mapping to timm's ``Eva`` names.

Three layouts reach the node:

* ``timm``: timm's own names (``reg_token``, ``blocks.N.gamma_1``, ...), as in our export
  (``encoder.safetensors``) and in state dicts saved from a timm model;
* ``dinov3``: the official DINOv3 backbone layout (Siméoni et al., *DINOv3*, 2025, arXiv:2508.10104;
  github.com/facebookresearch/dinov3): ``storage_tokens``, ``mask_token``, ``rope_embed.periods``,
  ``blocks.N.ls1.gamma``, ``blocks.N.attn.qkv.bias_mask``;
* the released OrthoFoundation-L checkpoint: the ``dinov3`` layout with every key prefixed ``backbone.``,
  possibly inside a ``{"model" | "state_dict" | "teacher": ...}`` wrapper.

:func:`to_timm_state_dict` turns any of them into timm names, :func:`infer_arch` finds which of
:data:`~orthonode.inference.backbones.VIT_ARCHITECTURES` the shapes describe, and :func:`check_rope_periods`
verifies that the checkpoint's RoPE periods are the ones timm recomputes (timm keeps them in a
non-persistent buffer, so they are checked, never loaded).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from orthonode.errors import ConfigError
from orthonode.inference.backbones import VIT_ARCHITECTURES, create_backbone

log = logging.getLogger(__name__)

#: Wrapper keys under which training scripts nest a state dict, tried in this order.
WRAPPER_KEYS = ("teacher", "model_ema", "model", "state_dict", "module")

#: Relative tolerance between a checkpoint's RoPE periods and timm's: DINOv3's released weights hold the
#: periods downcast to bfloat16 (8 significant bits, relative rounding error at most 2**-9).
PERIODS_RTOL = 2.0**-8


class CheckpointError(ConfigError):
    """An encoder checkpoint that cannot be read, or whose keys or shapes do not fit the architecture."""


@dataclass(frozen=True)
class ArchSignature:
    """What a state dict's shapes say about a DINOv3 ViT (``num_heads`` only from the RoPE periods)."""

    embed_dim: int
    depth: int
    num_reg_tokens: int
    mlp_hidden: int
    swiglu: bool
    num_heads: int | None = None


@dataclass
class Converted:
    """A state dict in timm names, and what the conversion dropped or found on the way."""

    layout: str
    state_dict: dict[str, Tensor]
    #: Original keys that were deliberately not loaded, each with the reason.
    dropped: dict[str, str] = field(default_factory=dict)
    #: Whether the model needs ``qkv_bias=True`` (a non-zero query or value bias after masking).
    qkv_bias: bool = False
    #: ``rope_embed.periods`` of a DINOv3 checkpoint (checked against timm's by :func:`check_rope_periods`).
    periods: Tensor | None = None
    #: New key -> the key it came from in the file (for error messages).
    source: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# architectures


@functools.cache
def arch_signature(arch: str) -> ArchSignature:
    """The shape signature of ``arch``, read from a model built on the meta device (no memory used)."""
    if arch not in VIT_ARCHITECTURES:
        raise CheckpointError(f"unknown backbone {arch!r}; choose one of {', '.join(VIT_ARCHITECTURES)}")
    with torch.device("meta"):
        model = create_backbone(arch)
    vit: Any = model
    block: Any = vit.blocks[0]
    mlp: Any = block.mlp
    swiglu = hasattr(mlp, "fc1_g")
    hidden = int(mlp.fc1_g.out_features if swiglu else mlp.fc1.out_features)
    reg = vit.reg_token
    return ArchSignature(
        embed_dim=int(vit.embed_dim),
        depth=len(vit.blocks),
        num_reg_tokens=int(reg.shape[1]) if reg is not None else 0,
        mlp_hidden=hidden,
        swiglu=swiglu,
        num_heads=int(block.attn.num_heads),
    )


def _signature_from_timm(state_dict: Mapping[str, Tensor], num_heads: int | None) -> ArchSignature:
    for key in ("cls_token", "blocks.0.attn.qkv.weight"):
        if key not in state_dict:
            raise CheckpointError(f"not a DINOv3 ViT state dict: key {key!r} is missing")
    depth = 1 + max(int(m.group(1)) for k in state_dict if (m := re.match(r"blocks\.(\d+)\.", k)))
    swiglu = "blocks.0.mlp.fc1_g.weight" in state_dict
    hidden_key = "blocks.0.mlp.fc1_g.weight" if swiglu else "blocks.0.mlp.fc1.weight"
    if hidden_key not in state_dict:
        raise CheckpointError(f"not a DINOv3 ViT state dict: key {hidden_key!r} is missing")
    reg = state_dict.get("reg_token")
    return ArchSignature(
        embed_dim=int(state_dict["cls_token"].shape[-1]),
        depth=depth,
        num_reg_tokens=int(reg.shape[1]) if reg is not None else 0,
        mlp_hidden=int(state_dict[hidden_key].shape[0]),
        swiglu=swiglu,
        num_heads=num_heads,
    )


def _describe(sig: ArchSignature) -> str:
    heads = f", {sig.num_heads} heads" if sig.num_heads is not None else ""
    mlp = "SwiGLU" if sig.swiglu else "GELU"
    return (
        f"width {sig.embed_dim}, {sig.depth} blocks{heads}, {sig.num_reg_tokens} register tokens, "
        f"{mlp} MLP {sig.mlp_hidden}"
    )


def _matches(found: ArchSignature, expected: ArchSignature) -> bool:
    same = (
        found.embed_dim == expected.embed_dim
        and found.depth == expected.depth
        and found.num_reg_tokens == expected.num_reg_tokens
        and found.mlp_hidden == expected.mlp_hidden
        and found.swiglu == expected.swiglu
    )
    return same and (found.num_heads is None or found.num_heads == expected.num_heads)


def infer_arch(
    state_dict: Mapping[str, Tensor], *, num_heads: int | None = None, arch: str | None = None
) -> str:
    """The architecture in :data:`VIT_ARCHITECTURES` whose shapes ``state_dict`` (timm names) has.

    With ``arch`` given it is checked rather than searched for. ``num_heads`` (known from the RoPE
    periods, whose length is head_dim / 4) narrows the match; without it the head count is timm's.
    """
    found = _signature_from_timm(state_dict, num_heads)
    if arch is not None:
        expected = arch_signature(arch)
        if not _matches(found, expected):
            raise CheckpointError(
                f"the checkpoint ({_describe(found)}) is not a {arch} ({_describe(expected)})"
            )
        return arch
    hits = [a for a in VIT_ARCHITECTURES if _matches(found, arch_signature(a))]
    if len(hits) != 1:
        raise CheckpointError(
            f"no single known architecture has the checkpoint's shapes ({_describe(found)}); "
            f"candidates: {hits or 'none'}; pass arch= explicitly"
        )
    return hits[0]


def arch_of_model(model: torch.nn.Module, arch: str | None = None) -> str:
    """The architecture name of a built ``model``: ``arch`` if given, else its ``pretrained_cfg`` name,
    each checked against the model's shapes; failing those, the unique architecture with its shapes.

    (timm's ``pretrained_cfg['architecture']`` of the project's small variants names the timm model they
    are built from, ``vit_small_patch16_dinov3``, so it cannot be trusted blindly.)
    """
    state = model.state_dict()
    heads = getattr(getattr(model, "blocks", [None])[0], "attn", None)
    num_heads = getattr(heads, "num_heads", None)
    if arch is not None:
        return infer_arch(state, num_heads=num_heads, arch=arch)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    named = cfg.get("architecture")
    if isinstance(named, str) and named in VIT_ARCHITECTURES:
        try:
            return infer_arch(state, num_heads=num_heads, arch=named)
        except CheckpointError:
            pass
    return infer_arch(state, num_heads=num_heads)


# --------------------------------------------------------------------------------------------------
# reading files


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """The tensors of a ``.safetensors`` file or a torch state dict file, never unpickling objects.

    Torch files are read with ``weights_only=True`` (tensors, dicts, lists and numbers only), memory
    mapped when the file is in torch's zip format. Wrappers (``teacher``, ``model``, ``state_dict``, ...)
    are unwrapped; every leaf must be a tensor.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc):  # legacy (non-zip) torch files cannot be memory mapped
            raise CheckpointError(f"{path}: not a readable torch checkpoint ({exc})") from exc
        obj = _load_unmapped(path)
    except Exception as exc:  # UnpicklingError, EOFError, zip errors: all mean a damaged or foreign file
        raise CheckpointError(
            f"{path}: not a readable torch checkpoint ({type(exc).__name__}: {exc})"
        ) from exc
    return unwrap(obj, where=str(path))


def _load_unmapped(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path}: not a readable torch checkpoint ({type(exc).__name__}: {exc})"
        ) from exc


def unwrap(obj: Any, *, where: str = "checkpoint") -> dict[str, Tensor]:
    """The state dict inside ``obj``: ``obj`` itself, or the first of :data:`WRAPPER_KEYS` it nests under."""
    for _ in range(3):
        if not isinstance(obj, Mapping):
            raise CheckpointError(f"{where}: expected a dict of tensors, found {type(obj).__name__}")
        if obj and all(isinstance(v, Tensor) for v in obj.values()):
            return {str(k): v for k, v in obj.items()}
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            bad = next((k for k, v in obj.items() if not isinstance(v, Tensor)), None)
            raise CheckpointError(
                f"{where}: no state dict found (entry {bad!r} is not a tensor and none of "
                f"{', '.join(WRAPPER_KEYS)} holds one)"
            )
        obj = inner
    raise CheckpointError(f"{where}: state dict nested too deeply")


# --------------------------------------------------------------------------------------------------
# layouts and mapping

_DINOV3_MARKERS = ("storage_tokens", "rope_embed.periods", "blocks.0.ls1.gamma", "mask_token")
_TIMM_MARKERS = ("reg_token", "blocks.0.gamma_1")


def strip_prefix(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Remove a ``module.`` and then a ``backbone.`` prefix; keys outside ``backbone.`` (heads) are
    returned as dropped when a ``backbone.`` prefix is present."""
    sd = dict(state_dict)
    dropped: dict[str, str] = {}
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    if any(k.startswith("backbone.") for k in sd):
        for k in sd:
            if not k.startswith("backbone."):
                dropped[k] = "outside the backbone (training head)"
        sd = {k[len("backbone.") :]: v for k, v in sd.items() if k.startswith("backbone.")}
    return sd, dropped


def detect_layout(state_dict: Mapping[str, Tensor]) -> str:
    """``"dinov3"`` (official names) or ``"timm"``, from marker keys (after :func:`strip_prefix`)."""
    dinov3 = any(k in state_dict for k in _DINOV3_MARKERS)
    timm_ = any(k in state_dict for k in _TIMM_MARKERS)
    if dinov3 and timm_:
        raise CheckpointError(
            "checkpoint mixes DINOv3 names (storage_tokens, ls1) with timm's (reg_token, gamma_1)"
        )
    if dinov3:
        return "dinov3"
    if timm_ or "cls_token" in state_dict:
        return "timm"
    sample = ", ".join(sorted(state_dict)[:5])
    raise CheckpointError(
        f"not a DINOv3 ViT checkpoint: no cls_token or storage_tokens (keys: {sample}, ...)"
    )


_RENAMES = (
    (re.compile(r"^storage_tokens$"), "reg_token"),
    (re.compile(r"^(blocks\.\d+)\.ls1\.gamma$"), r"\1.gamma_1"),
    (re.compile(r"^(blocks\.\d+)\.ls2\.gamma$"), r"\1.gamma_2"),
    (re.compile(r"^(blocks\.\d+)\.mlp\.w1\.(weight|bias)$"), r"\1.mlp.fc1_g.\2"),
    (re.compile(r"^(blocks\.\d+)\.mlp\.w2\.(weight|bias)$"), r"\1.mlp.fc1_x.\2"),
    (re.compile(r"^(blocks\.\d+)\.mlp\.w3\.(weight|bias)$"), r"\1.mlp.fc2.\2"),
)
_KEPT = re.compile(
    r"^(cls_token|patch_embed\.proj\.(weight|bias)|norm\.(weight|bias)"
    r"|blocks\.\d+\.(norm1|norm2|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)|blocks\.\d+\.attn\.qkv\.weight)$"
)
_QKV_BIAS = re.compile(r"^(blocks\.\d+)\.attn\.qkv\.bias$")


def _masked_qkv_bias(block: str, bias: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """(query bias, value bias) of a block: DINOv3's ``LinearKMaskedBias`` multiplies the bias by
    ``bias_mask`` (1 for q and v, 0 for k) in every forward pass; timm's Eva fixes the key bias at 0."""
    key = f"{block}.attn.qkv.bias"
    if bias.ndim != 1 or bias.shape[0] % 3:
        raise CheckpointError(f"{key}: shape {tuple(bias.shape)} is not (3 * width,)")
    bias = bias.float()
    if mask is not None:
        if mask.shape != bias.shape:
            raise CheckpointError(
                f"{block}.attn.qkv.bias_mask: shape {tuple(mask.shape)} != {tuple(bias.shape)}"
            )
        if not torch.isfinite(mask.float()).all():
            raise CheckpointError(f"{block}.attn.qkv.bias_mask: not finite (uninitialised mask buffer)")
        bias = bias * mask.float()
    q, k, v = bias.chunk(3)
    if bool(k.ne(0).any()):
        raise CheckpointError(
            f"{key}: the key bias is not zero after masking; timm's Eva (and DINOv3) keep it at 0"
        )
    return q, v


def to_timm_state_dict(state_dict: Mapping[str, Tensor]) -> Converted:
    """Map a checkpoint (any layout, prefixes and wrappers removed or not) to timm ``Eva`` key names.

    DINOv3 layout: ``storage_tokens`` -> ``reg_token``, ``ls{1,2}.gamma`` -> ``gamma_{1,2}``; the qkv bias
    times ``bias_mask`` becomes ``q_bias`` / ``v_bias`` when any of it is non-zero, else it is dropped
    (timm's ``vit_*_patch16_dinov3`` have no qkv bias); ``mask_token`` (masked-image pretraining only) is
    dropped; ``rope_embed.periods`` is kept aside for :func:`check_rope_periods`. Any other key is an error.
    """
    sd, dropped = strip_prefix(unwrap(dict(state_dict)) if state_dict else {})
    if not sd:
        raise CheckpointError("checkpoint holds no tensors")
    layout = detect_layout(sd)
    if layout == "timm":
        return Converted(
            layout=layout,
            state_dict=sd,
            dropped=dropped,
            qkv_bias="blocks.0.attn.q_bias" in sd,
            source={k: k for k in sd},
        )
    out: dict[str, Tensor] = {}
    source: dict[str, str] = {}
    biases: dict[str, tuple[Tensor, Tensor]] = {}
    periods: Tensor | None = None
    for key, value in sd.items():
        if key == "mask_token":
            dropped[key] = "mask token of masked-image pretraining, unused at inference"
            continue
        if key == "rope_embed.periods":
            periods = value
            continue
        if key.endswith(".attn.qkv.bias_mask"):
            if key.removesuffix("_mask") not in sd:
                raise CheckpointError(f"{key} without its bias {key.removesuffix('_mask')}")
            continue
        if m := _QKV_BIAS.match(key):
            biases[m.group(1)] = _masked_qkv_bias(m.group(1), value, sd.get(key + "_mask"))
            continue
        new = key
        for pattern, repl in _RENAMES:
            new = pattern.sub(repl, new)
        if new == key and not _KEPT.match(key):
            raise CheckpointError(f"unexpected key {key!r} in a DINOv3 checkpoint")
        out[new] = value
        source[new] = key
    qkv_bias = any(bool(q.ne(0).any() or v.ne(0).any()) for q, v in biases.values())
    if qkv_bias:
        for block, (q, v) in biases.items():
            dtype = sd[f"{block}.attn.qkv.bias"].dtype
            out[f"{block}.attn.q_bias"], out[f"{block}.attn.v_bias"] = q.to(dtype), v.to(dtype)
            source[f"{block}.attn.q_bias"] = source[f"{block}.attn.v_bias"] = f"{block}.attn.qkv.bias"
    else:
        for block in biases:
            dropped[f"{block}.attn.qkv.bias"] = "zero after bias_mask (timm model without qkv bias)"
    return Converted(
        layout="dinov3", state_dict=out, dropped=dropped, qkv_bias=qkv_bias, periods=periods, source=source
    )


def num_heads_from_periods(periods: Tensor | None, embed_dim: int) -> int | None:
    """Head count implied by DINOv3's RoPE periods: one period per head_dim / 4 (two axes, sin and cos)."""
    if periods is None:
        return None
    head_dim = 4 * int(periods.numel())
    if head_dim == 0 or embed_dim % head_dim:
        raise CheckpointError(
            f"rope_embed.periods: {periods.numel()} periods do not divide width {embed_dim} into heads"
        )
    return embed_dim // head_dim


def check_rope_periods(periods: Tensor | None, model: torch.nn.Module) -> float | None:
    """Check a DINOv3 checkpoint's ``rope_embed.periods`` against the periods timm computes for the model.

    timm's ``RotaryEmbeddingDinoV3`` recomputes ``temperature ** (2 i / (head_dim / 2))`` into a
    non-persistent buffer (``model.rope.periods``), so nothing is loaded: the checkpoint's values must
    agree within bfloat16 rounding (DINOv3's released files store them in bfloat16). Returns the largest
    relative difference (``None`` without periods); raises :class:`CheckpointError` when they differ.
    """
    if periods is None:
        return None
    rope = getattr(model, "rope", None)
    ours = getattr(rope, "periods", None)
    if not isinstance(ours, Tensor):
        raise CheckpointError(
            "rope_embed.periods present but the timm model has no DINOv3 RoPE periods buffer"
        )
    if periods.shape != ours.shape:
        raise CheckpointError(
            f"rope_embed.periods: shape {tuple(periods.shape)} != {tuple(ours.shape)} computed by timm"
        )
    theirs = periods.detach().to("cpu", torch.float64)
    ref = ours.detach().to("cpu", torch.float64)
    if not torch.isfinite(theirs).all():
        raise CheckpointError("rope_embed.periods: not finite")
    rel = float(((theirs - ref).abs() / ref.abs()).max())
    if rel > PERIODS_RTOL:
        raise CheckpointError(
            f"rope_embed.periods differ from timm's RoPE (relative difference {rel:.3g}): checkpoint "
            f"{theirs.tolist()} vs timm {ref.tolist()}; the checkpoint was trained with another RoPE "
            "base or min/max period"
        )
    return rel
