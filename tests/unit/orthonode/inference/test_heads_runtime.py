"""The node's run time for head bundles: scanning, selection per pipeline, prediction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from orthonode.inference.backbones import create_backbone
from orthonode.inference.encoder import load_encoder, save_encoder
from orthonode.inference.heads import HeadRegistry, load_head
from orthonode.tasks.bundle import BundleError, random_bundle


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> Any:
    directory = tmp_path_factory.mktemp("enc")
    torch.manual_seed(0)
    save_encoder(
        create_backbone("vit_test_patch16_dinov3", img_size=32), directory, name="t", version="0", img_size=32
    )
    return load_encoder(directory)


def test_scan_lists_bundles_and_skips_broken_ones(tmp_path: Path, encoder: Any) -> None:
    for task in ("kl_grade", "acl_injury", "hip_labral_tear", "atfl_injury", "cfl_injury"):
        random_bundle(task, encoder, tmp_path / "heads")
    (tmp_path / "heads" / "broken-1").mkdir()
    (tmp_path / "heads" / "broken-1" / "head.json").write_text("{not json")
    bundles = HeadRegistry.scan(tmp_path)
    assert sorted(b.task for b in bundles) == [
        "acl_injury",
        "atfl_injury",
        "cfl_injury",
        "hip_labral_tear",
        "kl_grade",
    ]
    assert all(not b.trained and b.encoder_fingerprint == encoder.fingerprint for b in bundles)
    assert HeadRegistry.scan(tmp_path / "missing") == []

    registry = HeadRegistry(tmp_path)
    assert [b.task for b in registry.applicable("knee_radiograph")] == ["kl_grade"]
    assert [b.task for b in registry.applicable("knee_mri")] == ["acl_injury"]
    assert [b.task for b in registry.applicable("hip_mri")] == ["hip_labral_tear"]
    assert [b.task for b in registry.applicable("ankle_mri")] == ["atfl_injury", "cfl_injury"]
    assert registry.applicable("shoulder_mri") == []
    assert registry.applicable("knee_mri", "0" * 16) == []  # another encoder: nothing runs
    with pytest.raises(ValueError, match="unknown pipeline"):
        registry.applicable("spine_ct")


def test_highest_version_wins(tmp_path: Path, encoder: Any) -> None:
    import json

    path = random_bundle("tkr", encoder, tmp_path)
    for version in ("1.2.0", "1.10.0", "1.9.3"):
        card = json.loads((path / "head.json").read_text())
        card.update(version=version, trained=True, name="OrthoFoundation TKR")
        target = tmp_path / f"tkr-{version}"
        target.mkdir()
        (target / "head.json").write_text(json.dumps(card))
        (target / "head.safetensors").write_bytes((path / "head.safetensors").read_bytes())
    chosen = HeadRegistry(tmp_path).applicable("knee_radiograph", encoder.fingerprint)
    assert [(b.task, b.version) for b in chosen] == [("tkr", "1.10.0")]


def test_predict_radiographs_and_slice_sets(tmp_path: Path, encoder: Any) -> None:
    kl = load_head(random_bundle("kl_grade", encoder, tmp_path), encoder.fingerprint)
    out = encoder.embed(torch.rand(3, 1, 32, 32))
    rows = kl.predict(out)
    assert len(rows) == 3 and list(rows[0]) == [f"Kellgren-Lawrence grade {g}" for g in range(5)]
    assert all(sum(r.values()) == pytest.approx(1.0) for r in rows)
    # a ready feature tensor gives the same answer as the EncoderOutput
    ready = torch.cat([out.cls, out.patches.mean(1)], dim=1)
    assert np.allclose(kl.predict_array(ready), kl.predict_array(out))
    with pytest.raises(BundleError, match="expects features"):
        kl.predict_array(out.cls)

    acl = load_head(random_bundle("acl_injury", encoder, tmp_path), encoder.fingerprint)
    slices = encoder.embed(torch.rand(5, 1, 32, 32))
    probs = acl.predict_array(slices)
    assert probs.shape == (1, 2)
    assert list(acl.predict(slices)[0]) == ["Absent", "Present"]
    assert not acl.trained and "UNTRAINED" in acl.card.name
