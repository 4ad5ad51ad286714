"""Training: probes learn, early stopping uses train patients only (fine-tuning: test_heads_finetune.py),
and an END-TO-END embed -> fit -> evaluate -> export -> sweep run of the CLI on ~200 real knee images
(knee_kl224: 20 per grade from train, 20 per grade from val) with the tiny random test encoder.

The tiny encoder has random weights: these tests check the plumbing and the honesty rules, not accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from support.encoders import write_test_encoder

from heads import features as features_module
from heads.cli import main
from heads.datasets.base import Sample
from heads.features import FeatureCache, FeatureSet, Preprocessing
from heads.train import (
    FitConfig,
    carve_features,
    class_weights,
    fit_head,
    predict_proba,
)
from orthonode.inference.encoder import load_encoder
from orthonode.inference.heads import HeadRegistry
from orthonode.tasks.bundle import read_card
from orthonode.tasks.registry import get_task


def _separable(n: int, classes: int, dim: int = 12, seed: int = 0) -> FeatureSet:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    direction = torch.nn.functional.normalize(torch.randn(dim, generator=g), dim=0)
    centres = torch.arange(classes, dtype=torch.float32)[:, None] * 3 * direction  # ordered along a line
    cls = centres[labels] + torch.randn(n, dim, generator=g) * 0.5
    return FeatureSet(
        cls=cls,
        meanpatch=torch.randn(n, dim, generator=g),
        labels=labels,
        patients=[f"p{i // 2}" for i in range(n)],
        keys=[f"k{i}" for i in range(n)],
        splits=["train"] * n,
    )


@pytest.mark.parametrize("kind", ["linear", "mlp", "ordinal"])
def test_probe_learns_separable_features(kind: str) -> None:
    task = get_task("kl_grade")
    train, test = _separable(400, 5, seed=0), _separable(200, 5, seed=0)
    fit = fit_head(
        task, train, FitConfig(head=kind, features="cls", epochs=80, lr=0.03, batch_size=64, seed=0)
    )
    probs = predict_proba(fit.head, test, "cls")
    assert float(np.mean(probs.argmax(1) == test.labels.numpy())) > 0.9
    assert fit.best_epoch >= 1 and fit.n_train + fit.n_val == 400
    assert fit.train_patients + fit.val_patients == 200


def test_validation_is_carved_from_train_patients() -> None:
    fs = _separable(100, 2)
    train, val = carve_features(fs, 0.2, seed=3)
    assert set(train.patients).isdisjoint(val.patients)
    assert len(train) + len(val) == 100


def test_attention_head_fits_slice_sets() -> None:
    g = torch.Generator().manual_seed(0)
    n, s, d = 160, 6, 8
    labels = torch.arange(n) % 2
    cls = torch.randn(n, s, d, generator=g)
    cls[labels == 1, 1:4, 0] += 3.0  # a lesion seen on three slices, along one feature direction
    mask = torch.ones(n, s, dtype=torch.bool)
    mask[::3, 4:] = False  # shorter series, zero-padded
    cls[~mask] = 0.0
    fs = FeatureSet(
        cls=cls,
        meanpatch=torch.zeros(n, s, d),
        labels=labels,
        patients=[f"p{i}" for i in range(n)],
        keys=[f"k{i}" for i in range(n)],
        splits=["train"] * n,
        mask=mask,
    )
    config = FitConfig(head="attention", features="cls", epochs=60, lr=5e-3, batch_size=32, patience=15)
    fit = fit_head(get_task("acl_injury"), fs, config)
    probs = predict_proba(fit.head, fs, "cls")
    assert float(np.mean(probs.argmax(1) == labels.numpy())) > 0.9
    with pytest.raises(ValueError):
        fit_head(get_task("acl_injury"), fs, FitConfig(head="linear"))


def test_class_weights_balanced() -> None:
    w = class_weights(torch.tensor([0, 0, 0, 1]), 3, "balanced")
    assert w is not None
    assert torch.allclose(w, torch.tensor([4 / (3 * 3), 4 / 3, 0.0]))
    assert class_weights(torch.tensor([0, 1]), 2, "none") is None


def _chen_root(shared_data: Path) -> Path:
    root = shared_data / "knee_kl224"
    if not root.is_dir():
        pytest.skip("knee_kl224 not present")
    return root


def test_feature_cache_reuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_data: Path) -> None:
    from heads.datasets.chen_kl import load_chen_kl

    samples: list[Sample] = load_chen_kl(_chen_root(shared_data), splits=("val",), limit_per_class=2).samples
    encoder = load_encoder(write_test_encoder(tmp_path / "enc"))
    cache = FeatureCache(tmp_path / "cache")
    prep = Preprocessing("radiograph", img_size=32)
    first = cache.get_or_compute(encoder, "chen", samples, prep)
    assert cache.path_for(encoder.fingerprint, "chen", samples, prep).is_file()

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("recomputed")

    monkeypatch.setattr(features_module, "embed_samples", boom)
    second = cache.get_or_compute(encoder, "chen", samples, prep)
    assert torch.equal(first.cls, second.cls) and second.keys == first.keys
    other = Preprocessing("radiograph", img_size=48)
    assert cache.path_for(encoder.fingerprint, "chen", samples, other) != cache.path_for(
        encoder.fingerprint, "chen", samples, prep
    )


def test_end_to_end_cli_on_real_knees(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _chen_root(shared_data)
    enc = write_test_encoder(tmp_path / "enc", img_size=64)
    common = [
        "--encoder",
        str(enc),
        "--dataset",
        "chen_kl",
        "--data",
        str(root),
        "--limit-per-class",
        "20",
        "--cache",
        str(tmp_path / "cache"),
    ]
    assert main(["embed", *common, "--task", "kl_grade"]) == 0
    assert "train: 100 samples" in capsys.readouterr().out
    run = tmp_path / "run"
    assert (
        main(["fit", *common, "--task", "kl_grade", "--head", "ordinal", "--epochs", "30", "--out", str(run)])
        == 0
    )
    bundle = run / "kl_grade-1.0.0"
    assert (bundle / "head.safetensors").is_file()
    # reporting on the training split is refused
    assert (
        main(["evaluate", *common, "--bundle", str(bundle), "--split", "train", "--out", str(run / "x")]) == 2
    )
    assert (
        main(
            [
                "evaluate",
                *common,
                "--bundle",
                str(bundle),
                "--split",
                "val",
                "--n-boot",
                "200",
                "--out",
                str(run / "eval"),
            ]
        )
        == 0
    )
    report = json.loads((run / "eval" / "results.json").read_text())
    assert report["n_samples"] == 100 and report["data"] == {
        "dataset": "chen_kl",
        "split": "val",
        "real": True,
    }
    for name in ("accuracy", "balanced_accuracy", "qwk", "mae"):
        entry = report["metrics"][name]
        assert entry["ci_low"] <= entry["value"] <= entry["ci_high"]
    assert np.asarray(report["confusion"]).sum() == 100
    assert (run / "eval" / "confusion.png").stat().st_size > 1000
    assert "| qwk |" in (run / "eval" / "results.md").read_text()

    # k-NN on the cached features: train bank, val queries, patient-bootstrap intervals; the same split
    # as bank and queries is refused.
    capsys.readouterr()
    assert main(["knn", *common, "--task", "kl_grade", "--n-boot", "100"]) == 0
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines()[1:])
    for name in ("accuracy", "qwk"):
        value, interval = lines[name].split(" (95% CI ")
        low, high = (float(v) for v in interval.rstrip(")").split("-", 1)) if name == "accuracy" else (-1, 1)
        assert low <= float(value) <= high
    assert main(["knn", *common, "--task", "kl_grade", "--bank-split", "val"]) == 2

    models = tmp_path / "models" / "heads"
    assert (
        main(
            [
                "export",
                "--bundle",
                str(bundle),
                "--results",
                str(run / "eval" / "results.json"),
                "--out",
                str(models),
            ]
        )
        == 0
    )
    installed = HeadRegistry(tmp_path / "models").applicable("knee_radiograph", load_encoder(enc).fingerprint)
    assert [b.task for b in installed] == ["kl_grade"]
    card = installed[0].card
    assert card.trained and card.metrics["qwk"].value == report["metrics"]["qwk"]["value"]
    assert card.evaluated_on is not None and card.evaluated_on.real and card.evaluated_on.split == "val"
    assert card.head.training["data"]["split"] == "train"
    assert card.head.decode == "argmax" and report["decode"] == "argmax"

    # The decoding rule travels with the bundle: results scored by argmax do not go out with a median
    # bundle; a median bundle is evaluated by its own rule and exported with those results.
    results = str(run / "eval" / "results.json")
    median_args = ["export", "--bundle", str(bundle), "--decode", "median", "--version", "1.0.1"]
    assert main([*median_args, "--results", results, "--out", str(models)]) == 2
    assert main([*median_args, "--out", str(run / "median")]) == 0
    median_bundle = run / "median" / "kl_grade-1.0.1"
    evaluate = ["evaluate", *common, "--bundle", str(median_bundle), "--split", "val", "--n-boot", "50"]
    assert main([*evaluate, "--out", str(run / "eval-median")]) == 0
    scored = json.loads((run / "eval-median" / "results.json").read_text())
    assert scored["decode"] == "median" and scored["head"]["decode"] == "median"
    median_results = str(run / "eval-median" / "results.json")
    assert main([*median_args, "--results", median_results, "--out", str(models)]) == 0
    assert read_card(models / "kl_grade-1.0.1").head.decode == "median"

    assert (
        main(
            [
                "sweep",
                *common,
                "--task",
                "kl_grade",
                "--epochs",
                "10",
                "--fractions",
                "0.5",
                "1",
                "--seeds",
                "0",
                "1",
                "--n-boot",
                "50",
                "--out",
                str(run / "sweep"),
            ]
        )
        == 0
    )
    sweep = json.loads((run / "sweep" / "results.json").read_text())
    rows = sweep["label_efficiency"]
    assert [(r["fraction"], r["seed"]) for r in rows] == [(0.5, 0), (0.5, 1), (1.0, 0), (1.0, 1)]
    assert all(r["n_train"] < 100 for r in rows if r["fraction"] == 0.5)
    assert (run / "sweep" / "label_efficiency.png").is_file()
    assert (
        main(["export", "--random", "--task", "acl_injury", "--encoder", str(enc), "--out", str(models)]) == 0
    )
