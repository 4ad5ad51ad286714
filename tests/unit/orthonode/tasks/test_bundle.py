"""Bundles: export in heads -> load in the node (orthonode.inference.heads) -> the same probabilities."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from support.encoders import write_test_encoder

from heads.export import export_head, finetuned_name
from heads.features import FeatureSet
from heads.train import FitConfig, fit_head, predict_proba
from orthonode.inference.encoder import load_encoder
from orthonode.inference.heads import HeadRegistry, load_head
from orthonode.tasks.bundle import (
    BundleError,
    EncoderMismatchError,
    HeadCard,
    load_bundle,
    random_bundle,
    read_card,
)
from orthonode.tasks.registry import get_task


def _encoder(directory: Path, seed: int = 0) -> Any:
    return load_encoder(write_test_encoder(directory, seed=seed))


def _features(encoder: Any, n: int = 40) -> FeatureSet:
    torch.manual_seed(1)
    images = torch.rand(n, 1, 32, 32)
    out = encoder.embed(images)
    labels = torch.arange(n) % 2
    return FeatureSet(
        cls=out.cls,
        meanpatch=out.patches.mean(1),
        labels=labels,
        patients=[f"p{i // 2}" for i in range(n)],
        keys=[f"k{i}" for i in range(n)],
        splits=["train"] * n,
    )


def test_export_then_node_load_gives_same_probabilities(tmp_path: Path) -> None:
    encoder = _encoder(tmp_path / "enc")
    task = get_task("tkr")
    features = _features(encoder)
    fit = fit_head(task, features, FitConfig(head="mlp", hparams={"hidden": 8}, epochs=5, seed=0))
    expected = predict_proba(fit.head, features, "cls+meanpatch")
    report = {
        "task": "tkr",
        "metrics": {"auroc": {"value": 0.61, "ci_low": 0.5, "ci_high": 0.7, "n_boot": 10}},
        "data": {"dataset": "fixture", "split": "test", "real": False},
        "n_samples": 40,
        "n_patients": 20,
    }
    path = export_head(
        task,
        fit.head,
        encoder,
        tmp_path / "models",
        version="1.2.0",
        features="cls+meanpatch",
        training={"fit": fit.config.as_dict()},
        report=report,
    )
    assert path.name == "tkr-1.2.0"
    card = json.loads((path / "head.json").read_text())
    assert card["format"] == "orthonode-head/1" and card["trained"] is True
    assert card["codes"]["values"][1] == ["373066001", "SCT", "Yes"]
    assert card["thresholds"] == {"positive": 0.5}
    assert card["encoder"]["fingerprint"] == encoder.fingerprint
    assert card["metrics"]["auroc"]["ci_low"] == 0.5 and card["evaluated_on"]["real"] is False

    installed = load_head(path, encoder.fingerprint)
    torch.manual_seed(1)
    out = encoder.embed(torch.rand(40, 1, 32, 32))  # the same images, through the node's path
    got = installed.predict_array(out)
    assert torch.allclose(torch.from_numpy(got), torch.from_numpy(expected).double(), atol=1e-6)
    rows = installed.predict(out)
    assert list(rows[0]) == ["No", "Yes"] and rows[0]["Yes"] == pytest.approx(float(expected[0, 1]), abs=1e-6)


def test_wrong_encoder_is_refused_naming_both_fingerprints(tmp_path: Path) -> None:
    encoder = _encoder(tmp_path / "enc")
    other = _encoder(tmp_path / "other", seed=5)
    path = random_bundle("kl_grade", encoder, tmp_path / "models")
    with pytest.raises(EncoderMismatchError) as err:
        load_bundle(path, encoder_fingerprint=other.fingerprint)
    assert encoder.fingerprint in str(err.value) and other.fingerprint in str(err.value)
    assert load_bundle(path, encoder_fingerprint=encoder.fingerprint).card.task == "kl_grade"


def test_random_bundle_is_clearly_untrained(tmp_path: Path) -> None:
    encoder = _encoder(tmp_path / "enc")
    path = random_bundle("acl_injury", encoder, tmp_path / "models")
    card = read_card(path)
    assert path.name == "acl_injury-untrained"
    assert card.trained is False and "untrained" in card.name.lower() and "UNTRAINED" in card.name
    assert card.head.kind == "attention" and card.input.kind == "mri_slices" and card.input.slices == 16
    head = load_head(path, encoder.fingerprint)
    out = encoder.embed(torch.rand(6, 1, 32, 32))  # six slices of one series
    probs = head.predict_array(out)
    assert probs.shape == (1, 2) and probs.sum() == pytest.approx(1.0)
    assert read_card(random_bundle("kl_grade", encoder, tmp_path / "m2")).head.kind == "ordinal"


def test_card_is_strict_and_weights_must_fit(tmp_path: Path) -> None:
    encoder = _encoder(tmp_path / "enc")
    path = random_bundle("tkr", encoder, tmp_path / "models")
    data = json.loads((path / "head.json").read_text())
    HeadCard.model_validate(data)
    data["surprise"] = 1
    (path / "head.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="invalid head card"):
        load_bundle(path)
    del data["surprise"]
    data["head"]["in_dim"] = 7
    (path / "head.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="do not fit"):
        load_bundle(path)


def test_registry_prefers_trained_and_skips_other_encoders(tmp_path: Path) -> None:
    encoder = _encoder(tmp_path / "enc")
    other = _encoder(tmp_path / "other", seed=3)
    models = tmp_path / "models"
    random_bundle("kl_grade", encoder, models / "heads")
    random_bundle("tkr", other, models / "heads")
    fit = fit_head(get_task("kl_grade"), _features_kl(encoder), FitConfig(epochs=2))
    export_head(
        get_task("kl_grade"), fit.head, encoder, models / "heads", version="1.0.0", features="cls+meanpatch"
    )
    registry = HeadRegistry(models)
    assert {(b.task, b.version) for b in registry.bundles} == {
        ("kl_grade", "untrained"),
        ("kl_grade", "1.0.0"),
        ("tkr", "untrained"),
    }
    chosen = registry.applicable("knee_radiograph", encoder.fingerprint)
    assert [(b.task, b.version, b.trained) for b in chosen] == [("kl_grade", "1.0.0", True)]
    heads = registry.for_pipeline("knee_radiograph", encoder.fingerprint)
    assert [h.task for h in heads] == ["kl_grade"] and heads[0].trained
    assert registry.for_pipeline("knee_mri", encoder.fingerprint) == []


def _features_kl(encoder: Any) -> FeatureSet:
    fs = _features(encoder, n=30)
    fs.labels = torch.arange(30) % 5
    return fs


def test_further_fine_tuning_stages_count_instead_of_chaining_the_name() -> None:
    tuned = "kl224_ti_f fine-tuned for kl_grade"
    assert finetuned_name("kl224_ti_f", {"epochs": 3}, "kl_grade") == (tuned, 1)
    assert finetuned_name(tuned, {"task": "kl_grade", "stage": 2}, "kl_grade") == (tuned, 3)
    # an encoder exported before stages were recorded: the chained suffixes tell its stage
    legacy = f"{tuned} fine-tuned for kl_grade"
    assert finetuned_name(legacy, {"task": "kl_grade"}, "kl_grade") == (tuned, 3)
    # another task starts its own chain from the tuned encoder
    assert finetuned_name(tuned, {"task": "kl_grade"}, "acl_tear") == (f"{tuned} fine-tuned for acl_tear", 1)
