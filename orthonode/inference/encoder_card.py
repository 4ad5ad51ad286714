"""The encoder export format ``orthonode-encoder/1``: the card, the weights' fingerprint, and writing both.

The export is a directory holding

* ``encoder.safetensors``: the backbone state dict in timm's key names, contiguous CPU tensors;
* ``encoder.json``: the :class:`EncoderCard` (architecture, input normalisation, fingerprint, provenance).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

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
    arch_of_model,
)
from orthonode.inference.layout import ENCODER_CARD_FILE

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


#: ImageNet mean / std per RGB channel, which the DINOv3 and OrthoFoundation checkpoints were trained with.
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
#: Input size of a synthesised card (DINOv3's and OrthoFoundation's global crops are 224 px).
DEFAULT_IMG_SIZE = 224


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
