"""Export of the EMA teacher backbone as a node encoder (orthonode-encoder/1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ssl_train.config import load_config
from ssl_train.data import scan_corpus, write_manifest
from ssl_train.export import export_run
from ssl_train.models import SSLBackbone
from ssl_train.train import TrainingError, fit, load_checkpoint


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    tmp = tmp_path_factory.mktemp("export")
    rng = torch.Generator().manual_seed(0)
    for i in range(4):
        pixels = (torch.rand(48, 40, generator=rng) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(tmp / f"{9000000 + i}L.png")
    manifest = write_manifest(scan_corpus(tmp).rows, tmp / "m.csv")
    head = "{num_prototypes: 16, hidden_dim: 16, bottleneck_dim: 8, n_layers: 2}"
    cfg = load_config(
        None,
        [
            "model.arch=vit_test_patch16_dinov3",
            f"model.dino_head={head}",
            f"model.ibot_head={head}",
            "crops.global_size=32",
            "crops.local_size=16",
            "crops.n_local=1",
            "data.batch_size_per_device=2",
            "data.num_workers=0",
            "data.split=null",
            f"data.manifest={manifest}",
            f"run.output_dir={tmp}",
            "run.name=exp",
            "optim.epochs=1",
            "optim.warmup_epochs=0",
            "train.progress=none",
        ],
    )
    fit(cfg)
    return tmp / "exp"


def test_export_holds_the_teacher_backbone_in_timm_names(run_dir: Path, tmp_path: Path) -> None:
    card = export_run(run_dir, tmp_path / "enc", name="knee-test", version="0.0.1")
    ckpt = load_checkpoint(next((run_dir / "checkpoints").glob("*.pt")))
    teacher = {
        k.removeprefix("teacher.backbone.model."): v
        for k, v in ckpt["model"].items()
        if k.startswith("teacher.backbone.model.")
    }
    tensors = load_file(str(tmp_path / "enc" / "encoder.safetensors"))
    assert set(tensors) == set(teacher)
    assert "mask_token" not in tensors and "cls_token" in tensors and "blocks.0.attn.qkv.weight" in tensors
    for key, value in teacher.items():
        assert torch.equal(tensors[key], value), key
    student = ckpt["model"]["student.backbone.model.blocks.0.mlp.fc1.weight"]
    assert not torch.equal(tensors["blocks.0.mlp.fc1.weight"], student)  # the teacher, not the student
    data = json.loads((tmp_path / "enc" / "encoder.json").read_text())
    assert data["format"] == "orthonode-encoder/1" and data["arch"] == "vit_test_patch16_dinov3"
    assert (data["name"], data["version"], data["img_size"], data["mean"], data["std"]) == (
        "knee-test",
        "0.0.1",
        32,
        0.5,
        0.25,
    )
    assert data["fingerprint"] == card.fingerprint
    assert data["training"]["iterations"] == ckpt["iteration"] == 2
    assert data["training"]["config"]["model"]["arch"] == "vit_test_patch16_dinov3"


def test_exported_encoder_reproduces_the_teacher(run_dir: Path) -> None:
    from orthonode.inference.encoder import load_encoder

    card = export_run(run_dir)  # default: RUN_DIR/export, name = run name, version = it<iteration>
    assert (card.name, card.version) == ("exp", "it2")
    encoder = load_encoder(run_dir / "export")
    ckpt = load_checkpoint(next((run_dir / "checkpoints").glob("*.pt")))
    backbone = SSLBackbone("vit_test_patch16_dinov3", img_size=32)
    backbone.load_state_dict(
        {
            k.removeprefix("teacher.backbone."): v
            for k, v in ckpt["model"].items()
            if k.startswith("teacher.backbone.")
        }
    )
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        expected = backbone.eval()(x).cls
        got = encoder.model(x.expand(-1, 3, -1, -1))  # CLS pooling, no classifier
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_a_vit_is_not_exported_at_another_input_size(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="only a convolutional backbone"):
        export_run(run_dir, tmp_path / "enc", img_size=64)


def test_export_without_checkpoint_raises(tmp_path: Path, run_dir: Path) -> None:
    empty = tmp_path / "run"
    empty.mkdir()
    (empty / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    with pytest.raises(TrainingError, match="no checkpoint"):
        export_run(empty)


def test_export_random_writes_the_random_init_baseline(tmp_path: Path) -> None:
    from orthonode.inference.backbones import create_backbone
    from orthonode.inference.encoder import load_encoder
    from ssl_train.cli import main

    out = tmp_path / "random"
    args = ["export-random", "vit_test_patch16_dinov3", "--out", str(out), "--img-size", "64", "--seed", "3"]
    assert main(args) == 0
    encoder = load_encoder(out)
    assert encoder.card.name == "random-init-vit_test_patch16_dinov3" and encoder.card.img_size == 64
    torch.manual_seed(3)
    reference = create_backbone("vit_test_patch16_dinov3", img_size=64).state_dict()
    loaded = encoder.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in reference.items())
