"""Schedules against hand-computed values; layer-wise lr decay and no-weight-decay parameter groups."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_train.models import DINOHead, SSLBackbone
from ssl_train.schedules import Schedules, apply_schedule, cosine, layer_id, param_groups, uses_weight_decay


def make(**kw: float) -> Schedules:
    base = dict(
        total_iters=10,
        lr=1.0,
        min_lr=0.0,
        warmup_iters=2,
        weight_decay=0.04,
        weight_decay_end=0.4,
        teacher_temp=0.07,
        warmup_teacher_temp=0.04,
        warmup_teacher_temp_iters=3,
        momentum=0.9,
        freeze_last_layer_iters=2,
    )
    base.update(kw)
    return Schedules(**base)  # type: ignore[arg-type]


def test_cosine_endpoints_and_midpoint() -> None:
    assert cosine(1.0, 0.0, 0, 8) == pytest.approx(1.0)
    assert cosine(1.0, 0.0, 4, 8) == pytest.approx(0.5)
    assert cosine(1.0, 0.0, 2, 8) == pytest.approx((1 + math.sqrt(0.5)) / 2)
    assert cosine(1.0, 0.0, 8, 8) == 0.0
    assert cosine(1.0, 0.0, 99, 8) == 0.0


def test_learning_rate_warmup_then_cosine() -> None:
    s = make()
    # warm-up: 0, 0.5 ; then cosine from 1 to 0 over the 8 remaining iterations
    expected = {0: 0.0, 1: 0.5, 2: 1.0, 4: (1 + math.cos(math.pi * 2 / 8)) / 2, 6: 0.5, 10: 0.0}
    for t, value in expected.items():
        assert s.at(t).lr == pytest.approx(value, abs=1e-12), t
    s2 = make(min_lr=0.1)
    assert s2.at(6).lr == pytest.approx(0.1 + 0.9 * 0.5)


def test_weight_decay_teacher_temp_momentum_freeze() -> None:
    s = make()
    assert s.at(0).weight_decay == pytest.approx(0.04)
    assert s.at(5).weight_decay == pytest.approx(0.22)  # halfway between 0.04 and 0.4
    assert s.at(10).weight_decay == pytest.approx(0.4)
    assert [round(s.at(t).teacher_temp, 10) for t in range(5)] == [0.04, 0.05, 0.06, 0.07, 0.07]
    assert s.at(0).momentum == pytest.approx(0.9)
    assert s.at(5).momentum == pytest.approx(0.95)
    assert s.at(10).momentum == pytest.approx(1.0)
    assert [s.at(t).freeze_last_layer for t in range(4)] == [True, True, False, False]


def test_bad_schedule_raises() -> None:
    with pytest.raises(ValueError, match="total_iters"):
        make(total_iters=0)
    with pytest.raises(ValueError, match="momentum"):
        make(momentum=1.5)
    with pytest.raises(ValueError, match="iteration"):
        make().at(-1)


def test_layer_ids() -> None:
    assert layer_id("cls_token", 12) == 0
    assert layer_id("patch_embed.proj.weight", 12) == 0
    assert layer_id("mask_token", 12) == 0
    assert layer_id("blocks.0.attn.qkv.weight", 12) == 1
    assert layer_id("blocks.11.mlp.fc2.bias", 12) == 12
    assert layer_id("norm.weight", 12) == 13


def test_param_groups_layer_decay_and_no_weight_decay() -> None:
    torch.manual_seed(0)
    backbone = SSLBackbone("vit_test_patch16_dinov3", img_size=32)
    head = DINOHead(48, 16, hidden_dim=8, bottleneck_dim=4, n_layers=2)
    named = [*list(backbone.model.named_parameters()), ("mask_token", backbone.mask_token)]
    heads = [(f"dino_head.{n}", p) for n, p in head.named_parameters()]
    groups = param_groups(named, heads, depth=2, layer_decay=0.5)
    lr_of: dict[str, float] = {}
    wd_of: dict[str, float] = {}
    for group in groups:
        for name in group["names"]:
            lr_of[name] = group["lr_multiplier"]
            wd_of[name] = group["wd_multiplier"]
    assert set(lr_of) == {n for n, _ in named} | {n for n, _ in heads}
    # depth 2: embeddings 0.5**3, block 0 0.5**2, block 1 0.5, final norm and heads 1
    assert lr_of["cls_token"] == pytest.approx(0.125)
    assert lr_of["reg_token"] == pytest.approx(0.125)
    assert lr_of["mask_token"] == pytest.approx(0.125)
    assert lr_of["patch_embed.proj.weight"] == pytest.approx(0.125)
    assert lr_of["blocks.0.attn.qkv.weight"] == pytest.approx(0.25)
    assert lr_of["blocks.1.mlp.fc1.weight"] == pytest.approx(0.5)
    assert lr_of["norm.weight"] == pytest.approx(1.0)
    assert lr_of["dino_head.prototypes.weight"] == pytest.approx(1.0)
    # no weight decay: biases, norms, LayerScale gammas, tokens -- listed by hand
    no_wd = {
        n
        for n in lr_of
        if n.endswith(".bias")
        or ".norm" in f".{n}"
        or "gamma" in n
        or n in ("cls_token", "reg_token", "mask_token")
        or n.endswith("q_bias")
        or n.endswith("v_bias")
    }
    assert {n for n, w in wd_of.items() if w == 0.0} == no_wd
    assert wd_of["blocks.0.attn.qkv.weight"] == 1.0
    assert wd_of["patch_embed.proj.weight"] == 1.0
    assert wd_of["dino_head.prototypes.weight"] == 1.0
    assert not uses_weight_decay("blocks.0.gamma_1", backbone.model.blocks[0].gamma_1)


def test_apply_schedule_sets_group_values() -> None:
    p1, p2 = torch.nn.Parameter(torch.zeros(2, 2)), torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW(
        [
            {"params": [p1], "lr_multiplier": 0.5, "wd_multiplier": 1.0},
            {"params": [p2], "lr_multiplier": 1.0, "wd_multiplier": 0.0},
        ]
    )
    apply_schedule(opt, make().at(1))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.25)
    assert opt.param_groups[1]["lr"] == pytest.approx(0.5)
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(make().at(1).weight_decay)
    assert opt.param_groups[1]["weight_decay"] == 0.0
