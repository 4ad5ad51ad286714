"""Fine-tuning (heads.finetune): layer-wise lr decay groups, the warm-up + cosine schedule, the batch
augmentation, and real-knee runs with the tiny random test encoder: the encoder changes (a copy), a run
split over two calls equals an uninterrupted one, and another run's state is refused.

The encoder has random weights: these tests check the mechanics, not accuracy (README has the real runs).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from support.encoders import write_test_encoder

from heads.datasets.chen_kl import load_chen_kl
from heads.features import Preprocessing
from heads.finetune import (
    STATE_FILE,
    FineTuneConfig,
    augment_batch,
    finetune,
    layer_decay_param_groups,
    lr_at,
)
from orthonode.inference.backbones import create_backbone
from orthonode.inference.encoder import load_encoder
from orthonode.tasks.registry import get_task


def _encoder(directory: Path, arch: str = "vit_test_patch16_dinov3") -> Any:
    return load_encoder(write_test_encoder(directory, arch=arch))


def _samples(shared_data: Path, per_class: int = 4) -> list[Any]:
    root = shared_data / "knee_kl224"
    if not root.is_dir():
        pytest.skip("knee_kl224 not present")
    return load_chen_kl(root, splits=("train",), limit_per_class=per_class).samples


def test_layer_decay_groups() -> None:
    model = create_backbone("vit_test_patch16_dinov3", img_size=32)
    head = torch.nn.Linear(96, 5)
    groups = layer_decay_param_groups(model, head, lr=1.0, layer_decay=0.5, weight_decay=0.05)
    lr_of = {name: g["lr"] for g in groups for name in g["names"]}
    wd_of = {name: g["weight_decay"] for g in groups for name in g["names"]}
    depth = 2
    assert lr_of["patch_embed.proj.weight"] == pytest.approx(0.5 ** (depth + 1))
    assert lr_of["blocks.0.attn.qkv.weight"] == pytest.approx(0.5**depth)
    assert lr_of["blocks.1.mlp.fc1.weight"] == pytest.approx(0.5)
    assert lr_of["head.weight"] == pytest.approx(1.0)
    assert all(g["lr"] == pytest.approx(g["lr_scale"]) for g in groups)  # base lr 1
    assert wd_of["blocks.0.attn.qkv.weight"] == 0.05
    assert wd_of["blocks.0.attn.proj.bias"] == 0.0 and wd_of["cls_token"] == 0.0
    n_params = sum(1 for _ in model.parameters()) + 2
    assert sum(len(g["params"]) for g in groups) == n_params


def test_layer_decay_groups_of_a_cnn() -> None:
    """EfficientNet: stem at the bottom, one layer per stage (7), conv_head with the head at the top."""
    model = create_backbone("tf_efficientnet_lite0")
    head = torch.nn.Linear(1280, 5)
    groups = layer_decay_param_groups(model, head, lr=1.0, layer_decay=0.5, weight_decay=0.05)
    lr_of = {name: g["lr"] for g in groups for name in g["names"]}
    wd_of = {name: g["weight_decay"] for g in groups for name in g["names"]}
    depth = 7
    assert lr_of["conv_stem.weight"] == pytest.approx(0.5 ** (depth + 1))
    assert lr_of["bn1.weight"] == pytest.approx(0.5 ** (depth + 1))
    assert lr_of["blocks.0.0.conv_dw.weight"] == pytest.approx(0.5**depth)
    assert lr_of["blocks.6.0.conv_pw.weight"] == pytest.approx(0.5)
    assert lr_of["conv_head.weight"] == lr_of["head.weight"] == pytest.approx(1.0)
    assert wd_of["blocks.3.1.conv_pw.weight"] == 0.05 and wd_of["blocks.3.1.bn1.weight"] == 0.0
    assert sum(len(g["params"]) for g in groups) == sum(1 for _ in model.parameters()) + 2


def test_drop_path_reaches_the_nested_blocks_of_a_cnn() -> None:
    from timm.layers import DropPath

    from heads.finetune import set_drop_path

    model = create_backbone("tf_efficientnet_lite0")
    set_drop_path(model, 0.2)
    rates = [m.drop_prob for m in model.modules() if isinstance(m, DropPath)]
    assert len(rates) > 10 and max(rates) == pytest.approx(0.2)
    assert rates == sorted(rates)
    set_drop_path(model, 0.0)
    assert not any(isinstance(m, DropPath) for m in model.modules())


def test_lr_schedule_warmup_then_cosine() -> None:
    total, warm, lr, low = 100, 10, 1.0, 0.01
    assert lr_at(0, total, warm, lr, low) == pytest.approx(0.1)
    assert lr_at(9, total, warm, lr, low) == pytest.approx(1.0)
    assert lr_at(10, total, warm, lr, low) == pytest.approx(1.0)
    middle = low + 0.5 * (lr - low) * (1 + math.cos(math.pi * 45 / 90))
    assert lr_at(55, total, warm, lr, low) == pytest.approx(middle)
    assert lr_at(100, total, warm, lr, low) == pytest.approx(low)
    values = [lr_at(s, total, warm, lr, low) for s in range(warm, total)]
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_augment_identity_and_flip() -> None:
    images = torch.rand(6, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    still = FineTuneConfig(scale=(1.0, 1.0), rotate_deg=0.0, intensity=0.0, hflip=False)
    out = augment_batch(images, still, torch.Generator().manual_seed(1))
    assert torch.allclose(out, images, atol=1e-5)
    flips = FineTuneConfig(scale=(1.0, 1.0), rotate_deg=0.0, intensity=0.0, hflip=True)
    out = augment_batch(images, flips, torch.Generator().manual_seed(1))
    for a, b in zip(out, images, strict=True):
        assert torch.allclose(a, b, atol=1e-5) or torch.allclose(a, b.flip(-1), atol=1e-5)
    assert any(not torch.allclose(a, b, atol=1e-5) for a, b in zip(out, images, strict=True))


def test_augment_stays_in_range_and_varies() -> None:
    images = torch.rand(8, 1, 32, 32, generator=torch.Generator().manual_seed(0)).half()
    out = augment_batch(images, FineTuneConfig(), torch.Generator().manual_seed(2))
    assert out.dtype == torch.float32 and out.shape == images.shape
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    again = augment_batch(images, FineTuneConfig(), torch.Generator().manual_seed(3))
    assert not torch.allclose(out, again)


def test_finetune_updates_a_copy_of_the_encoder(shared_data: Path, tmp_path: Path) -> None:
    samples = _samples(shared_data)
    encoder = _encoder(tmp_path / "enc")
    before = {k: v.clone() for k, v in encoder.model.state_dict().items()}
    config = FineTuneConfig(epochs=2, batch_size=8, patience=5, warmup_epochs=0.5)
    result = finetune(encoder, get_task("kl_grade"), samples, Preprocessing("radiograph", 32), config)
    assert len(result.history) == 2 and 1 <= result.best_epoch <= 2
    assert {"val_loss", "val_accuracy", "val_qwk"} <= set(result.history[0])
    tuned = result.backbone.state_dict()
    assert any(not torch.equal(before[k], tuned[k]) for k in before if before[k].is_floating_point())
    assert all(torch.equal(before[k], v) for k, v in encoder.model.state_dict().items())


def test_bf16_autocast_trains_close_to_fp32_with_float32_weights(shared_data: Path, tmp_path: Path) -> None:
    samples = _samples(shared_data)
    runs = {}
    for precision in ("fp32", "bf16"):
        config = FineTuneConfig(epochs=1, batch_size=8, warmup_epochs=0.5, precision=precision)
        encoder = _encoder(tmp_path / precision)
        runs[precision] = finetune(
            encoder, get_task("kl_grade"), samples, Preprocessing("radiograph", 32), config
        )
    fp32, bf16 = (runs[p].history[0]["train_loss"] for p in ("fp32", "bf16"))
    assert fp32 != bf16  # the forward really ran in bf16 ...
    assert bf16 == pytest.approx(fp32, rel=0.05)  # ... and trained the same model, to bf16 rounding
    weights = itertools.chain(runs["bf16"].backbone.parameters(), runs["bf16"].head.parameters())
    assert all(p.dtype == torch.float32 for p in weights)
    with pytest.raises(ValueError, match="precision"):
        FineTuneConfig(precision="fp8")


@pytest.mark.parametrize("arch", ["vit_test_patch16_dinov3", "convnext_test"])
def test_resumed_finetune_equals_uninterrupted(shared_data: Path, tmp_path: Path, arch: str) -> None:
    samples = _samples(shared_data)
    encoder = _encoder(tmp_path / "enc", arch)
    task, prep = get_task("kl_grade"), Preprocessing("radiograph", 32)
    config = FineTuneConfig(epochs=3, batch_size=8, patience=5, select="accuracy", drop_path=0.2)

    whole = finetune(encoder, task, samples, prep, config, state_dir=tmp_path / "whole")
    split = tmp_path / "split"
    first = finetune(encoder, task, samples, prep, config, state_dir=split, max_epochs_this_call=1)
    assert len(first.history) == 1 and (tmp_path / "split" / STATE_FILE).is_file()
    second = finetune(encoder, task, samples, prep, config, state_dir=tmp_path / "split")
    assert second.resumed_from_epoch == 1
    assert [h["train_loss"] for h in second.history] == [h["train_loss"] for h in whole.history]
    assert second.best_epoch == whole.best_epoch
    for key, value in whole.backbone.state_dict().items():
        assert torch.equal(value, second.backbone.state_dict()[key]), key
    for key, value in whole.head.state_dict().items():
        assert torch.equal(value, second.head.state_dict()[key]), key

    other = FineTuneConfig(epochs=3, batch_size=8, patience=5, lr=1e-3)
    with pytest.raises(ValueError, match="another fine-tuning run"):
        finetune(encoder, task, samples, prep, other, state_dir=tmp_path / "split")


def test_ensemble_members_with_other_seeds_share_one_carve(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``carve_seed`` keeps the carve while ``seed`` changes initialisation and batches: a member trained
    with another seed never trains on the patients the others chose their epochs on."""
    import heads.finetune as ft
    from heads.datasets.base import carve_validation

    carves: list[set[str]] = []

    def recording(samples: Any, fraction: float, seed: int) -> Any:
        fitted, carve = carve_validation(samples, fraction, seed)
        carves.append({s.key for s in carve})
        return fitted, carve

    monkeypatch.setattr(ft, "carve_validation", recording)
    samples = _samples(shared_data, per_class=6)
    encoder = _encoder(tmp_path / "enc")
    for seed, carve_seed in ((0, None), (1, 0), (1, None)):
        config = FineTuneConfig(epochs=1, batch_size=8, warmup_epochs=0.5, seed=seed, carve_seed=carve_seed)
        finetune(encoder, get_task("kl_grade"), samples, Preprocessing("radiograph", 32), config)
    assert carves[0] == carves[1] != carves[2]
    assert "carve_seed" not in FineTuneConfig().as_dict()  # older runs keep their resume identity
    assert FineTuneConfig(seed=3, carve_seed=0).as_dict()["carve_seed"] == 0


def test_a_train_fraction_sees_only_its_patients_carve_included(shared_data: Path, tmp_path: Path) -> None:
    """Label efficiency: the fraction is drawn by patient with ``seed`` BEFORE the carve is cut, so the
    images trained on and the carve together are that fraction's patients and nothing else."""
    from heads.datasets.base import subsample_patients

    samples = _samples(shared_data, per_class=12)
    encoder = _encoder(tmp_path / "enc")
    config = FineTuneConfig(epochs=1, batch_size=8, warmup_epochs=0.5, seed=2, train_fraction=0.5)
    result = finetune(encoder, get_task("kl_grade"), samples, Preprocessing("radiograph", 32), config)
    subset = subsample_patients(samples, 0.5, 2)
    assert result.n_train + result.n_val == len(subset) < len(samples)
    assert FineTuneConfig(train_fraction=0.5).as_dict()["train_fraction"] == 0.5
    assert "train_fraction" not in FineTuneConfig().as_dict()  # older runs keep their resume identity
    with pytest.raises(ValueError, match="train_fraction"):
        FineTuneConfig(train_fraction=0.0)
