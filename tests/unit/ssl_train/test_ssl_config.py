"""Layered YAML configuration: order of layers, unknown keys, type errors, the saved resolved config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ssl_train.config import (
    DEFAULT_CONFIG,
    Config,
    ConfigError,
    apply_overrides,
    config_to_dict,
    load_config,
    parse_overrides,
    save_config,
)

CONFIGS = Path(DEFAULT_CONFIG).parent


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_file_matches_the_schema_defaults() -> None:
    # every key of the packaged defaults exists in the schema, and the two agree
    assert config_to_dict(load_config()) == config_to_dict(Config())


def test_layering_order(tmp_path: Path) -> None:
    exp = write(tmp_path / "exp.yaml", "optim:\n  lr: 0.002\n  epochs: 3\nrun:\n  name: exp\n")
    cfg = load_config(exp)
    assert cfg.optim.lr == 0.002 and cfg.optim.epochs == 3.0 and cfg.run.name == "exp"
    assert cfg.optim.min_lr == 1e-6  # untouched keys keep the defaults
    cfg = load_config(exp, ["optim.lr=0.1", "crops.global_scale=[0.5, 1.0]", "data.manifest=x.csv"])
    assert cfg.optim.lr == 0.1  # command line beats the experiment file
    assert cfg.optim.epochs == 3.0  # experiment beats the defaults
    assert cfg.crops.global_scale == (0.5, 1.0)
    assert cfg.data.manifest == "x.csv"
    # a custom defaults file is the bottom layer
    defaults = write(tmp_path / "defaults.yaml", "optim:\n  lr: 0.5\n  min_lr: 0.25\n")
    cfg = load_config(exp, [], defaults=defaults)
    assert cfg.optim.lr == 0.002 and cfg.optim.min_lr == 0.25


def test_unknown_keys_raise_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"optim\.lrr"):
        load_config(None, ["optim.lrr=1"])
    with pytest.raises(ConfigError, match=r"model\.dino_head\.prototypes"):
        load_config(None, ["model.dino_head.prototypes=4"])
    exp = write(tmp_path / "exp.yaml", "trainer:\n  x: 1\n")
    with pytest.raises(ConfigError, match="'trainer'"):
        load_config(exp)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lr=fast", r"optim\.lr: expected a number"),
        ("data.num_workers=1.5", r"data\.num_workers: expected an integer"),
        ("data.num_workers=true", r"data\.num_workers: expected an integer"),
        ("crops.respect_laterality=1", r"crops\.respect_laterality: expected true or false"),
        ("train.precision=fp16", r"train\.precision: must be one of"),
        ("crops.global_scale=[0.5]", r"crops\.global_scale: expected a list of 2"),
        ("run.name=null", r"run\.name: expected a string, got None"),
        ("optim=3", r"optim: expected a mapping"),
        ("crops.global_size=100", "multiple of 16"),
        ("optim.layer_decay=0", "layer_decay"),
    ],
)
def test_type_and_value_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_int_is_accepted_for_float_and_null_for_optional() -> None:
    cfg = load_config(None, ["optim.lr=1", "optim.clip_grad=null", "data.manifest=null", "optim.min_lr=1e-7"])
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.min_lr == 1e-7  # YAML 1.1 reads 1e-7 as a string; float fields accept it
    assert cfg.optim.clip_grad is None


def test_bad_override_syntax_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        parse_overrides(["optim.lr"])
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        parse_overrides(["optim..lr=1"])
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path / "list.yaml", "- 1\n- 2\n"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path / "bad.yaml", "optim: [1\n"))


def test_saved_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config(CONFIGS / "knee_kl224_vit_tiny.yaml", ["optim.lr=0.001"])
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    data = yaml.safe_load(path.read_text())
    assert data["optim"]["lr"] == 0.001
    assert data["model"]["arch"] == "vit_tiny_patch16_dinov3"
    assert load_config(path) == cfg
    assert apply_overrides(cfg, ["train.max_iterations=7"]).train.max_iterations == 7
