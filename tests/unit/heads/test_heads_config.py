"""heads.config: the fields probe training and fine-tuning share have one home, each keeps its defaults,
and the saved configurations (bundle card, fine-tuning resume identity) keep their keys."""

from __future__ import annotations

from dataclasses import fields

from heads.config import HeadTraining
from heads.finetune import FineTuneConfig
from heads.train import FitConfig

SHARED = [
    "head", "features", "hparams", "epochs", "batch_size", "lr", "weight_decay", "patience", "val_fraction",
    "class_weighting", "seed",
]  # fmt: skip


def test_the_shared_fields_are_declared_once() -> None:
    assert [f.name for f in fields(HeadTraining)] == SHARED
    assert issubclass(FitConfig, HeadTraining) and issubclass(FineTuneConfig, HeadTraining)
    assert [f.name for f in fields(FitConfig)] == SHARED


def test_each_keeps_its_defaults() -> None:
    fit, ft = FitConfig(), FineTuneConfig()
    assert (fit.epochs, fit.batch_size, fit.lr, fit.weight_decay, fit.patience) == (100, 256, 1e-3, 1e-4, 10)
    assert (ft.epochs, ft.batch_size, ft.lr, ft.weight_decay, ft.patience) == (20, 32, 5e-4, 0.05, 5)
    for config in (fit, ft):
        assert (config.head, config.features, config.hparams) == ("linear", "cls+meanpatch", {})
        assert (config.val_fraction, config.class_weighting, config.seed) == (0.15, "balanced", 0)


def test_saved_keys_are_unchanged() -> None:
    assert list(FitConfig().as_dict()) == SHARED
    assert sorted(FineTuneConfig().as_dict()) == sorted(
        [*SHARED, "min_lr", "warmup_epochs", "layer_decay", "drop_path", "clip_grad", "select", "augment",
         "hflip", "scale", "rotate_deg", "intensity", "label_smoothing", "precision", "device"]
    )  # fmt: skip
    assert FineTuneConfig(carve_seed=2).as_dict()["carve_seed"] == 2


def test_a_finetune_config_starts_from_a_probe_config() -> None:
    probe = FitConfig(head="mlp", hparams={"hidden": 8}, epochs=7, lr=0.1, seed=3)
    ft = FineTuneConfig(**{**probe.shared(), "batch_size": 16}, select="qwk")
    assert ft.shared() == {**probe.shared(), "batch_size": 16}
    assert ft.hparams is probe.hparams and ft.select == "qwk"
