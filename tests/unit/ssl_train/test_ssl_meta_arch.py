"""Student / EMA teacher / Gram teacher and the losses of one multi-crop step."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from ssl_train.config import CropsConfig, GramConfig, HeadConfig, LossConfig, ModelConfig
from ssl_train.meta_arch import MetaArchConfig, SSLMetaArch

HEAD = HeadConfig(num_prototypes=32, hidden_dim=16, bottleneck_dim=8, n_layers=2)


def make(*, ibot_separate_head: bool = True, gram: GramConfig | None = None, **loss: Any) -> SSLMetaArch:
    """The meta arch of the config sections themselves: a tiny model, ``loss`` fields as given."""
    torch.manual_seed(0)
    model = ModelConfig(
        arch="vit_test_patch16_dinov3", dino_head=HEAD, ibot_head=HEAD, ibot_separate_head=ibot_separate_head
    )
    loss_cfg = LossConfig(gram=gram or GramConfig(), **loss)
    return SSLMetaArch(MetaArchConfig(model=model, loss=loss_cfg, crops=CropsConfig(global_size=32)))


def crops(batch: int = 3, n_local: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    g = torch.randn(2 * batch, 1, 32, 32)
    loc = torch.randn(n_local * batch, 1, 16, 16)
    masks = torch.zeros(2 * batch, 4, dtype=torch.bool)
    masks[0, :2] = True
    masks[4, 3] = True
    return g, loc, masks


def test_losses_and_total_are_the_weighted_sum() -> None:
    meta = make(koleo_weight=0.3, ibot_weight=0.5)
    g, loc, masks = crops()
    out = meta(g, loc, masks, teacher_temp=0.04)
    assert set(out) == {"dino", "ibot", "koleo", "gram", "total"}
    assert all(bool(torch.isfinite(v)) for v in out.values())
    expected = out["dino"] + 0.5 * out["ibot"] + 0.3 * out["koleo"]
    torch.testing.assert_close(out["total"], expected)
    assert float(out["gram"]) == 0.0  # Gram anchoring off
    out["total"].backward()
    assert all(p.grad is None for p in meta.teacher.parameters())
    assert all(p.grad is not None for p in meta.student.parameters())


def test_dino_and_ibot_match_a_direct_computation_with_softmax_centering() -> None:
    meta = make(centering="softmax", koleo_weight=0.0)
    g, loc, masks = crops()
    temp, s_temp = 0.05, 0.1
    with torch.no_grad():
        t = meta.teacher
        t_out = t.backbone(g)
        # center starts at 0: teacher targets are a plain sharpened softmax
        t_cls = torch.softmax(t.dino_head(t_out.cls) / temp, dim=-1).view(2, 3, -1)
        t_patch = torch.softmax(t.ibot_head(t_out.patches) / temp, dim=-1)  # type: ignore[misc]
        s = meta.student
        s_g = s.backbone(g, masks)
        s_cls = torch.cat([s.dino_head(s_g.cls), s.dino_head(s.backbone(loc).cls)]).view(4, 3, -1)
        s_patch = torch.log_softmax(s.ibot_head(s_g.patches) / s_temp, dim=-1)  # type: ignore[misc]
        log_p = torch.log_softmax(s_cls / s_temp, dim=-1)
        total, pairs = 0.0, 0
        for i in range(2):
            for j in range(4):
                if i != j:
                    total += float(-(t_cls[i] * log_p[j]).sum(-1).mean())
                    pairs += 1
        dino = total / pairs
        # iBOT: mean over masked patches of each masked image, then mean over masked images
        per_image = []
        for b in range(6):
            if masks[b].any():
                ce = -(t_patch[b][masks[b]] * s_patch[b][masks[b]]).sum(-1)
                per_image.append(float(ce.mean()))
        ibot = sum(per_image) / len(per_image)
        out = meta(g, loc, masks, teacher_temp=temp)
    assert float(out["dino"]) == pytest.approx(dino, rel=1e-5)
    assert float(out["ibot"]) == pytest.approx(ibot, rel=1e-5)
    assert meta.dino_center is not None and float(meta.dino_center.center.abs().sum()) > 0  # updated


def test_koleo_over_global_crops_of_the_student_cls() -> None:
    meta = make(koleo_weight=1.0)
    g, loc, masks = crops()
    with torch.no_grad():  # full LayerScale: well separated features (at init they nearly coincide)
        for block in meta.student.backbone.model.blocks:
            block.gamma_1.fill_(1.0)
            block.gamma_2.fill_(1.0)
        cls = meta.student.backbone(g, masks).cls
        expected = 0.0
        for chunk in cls.chunk(2):
            x = chunk / chunk.norm(dim=-1, keepdim=True)
            d = torch.cdist(x, x) + torch.eye(3) * 1e9
            expected += float(-torch.log(d.min(dim=1).values + 1e-8).mean())
        out = meta(g, loc, masks, teacher_temp=0.04)
    assert float(out["koleo"]) == pytest.approx(expected, rel=1e-4)


def test_no_mask_gives_zero_ibot_and_no_local_crops_work() -> None:
    meta = make()
    g, _, masks = crops()
    out = meta(g, None, torch.zeros_like(masks), teacher_temp=0.04)
    assert float(out["ibot"].detach()) == 0.0
    out["total"].backward()


def test_ema_update_formula() -> None:
    meta = make()
    with torch.no_grad():
        for p in meta.student.parameters():
            p.add_(torch.randn_like(p))
    teacher_before = [p.detach().clone() for p in meta.teacher.parameters()]
    student = [p.detach().clone() for p in meta.student.parameters()]
    meta.update_teacher(0.9)
    for t_new, t_old, s in zip(meta.teacher.parameters(), teacher_before, student, strict=True):
        torch.testing.assert_close(t_new, 0.9 * t_old + 0.1 * s)


def test_gram_teacher_refresh_schedule_and_loss() -> None:
    meta = make(gram=GramConfig(enabled=True, start_iteration=3, refresh_every=2))
    due = [meta.gram_refresh_due(i) for i in range(9)]
    assert due == [False, False, False, True, False, True, False, True, False]
    g, loc, masks = crops()
    assert float(meta(g, loc, masks, teacher_temp=0.04)["gram"]) == 0.0  # not taken yet
    with torch.no_grad():
        for p in meta.teacher.parameters():
            p.add_(0.01 * torch.randn_like(p))
    meta.refresh_gram_teacher()
    assert meta.gram_teacher is not None
    for a, b in zip(meta.gram_teacher.parameters(), meta.teacher.backbone.parameters(), strict=True):
        assert torch.equal(a, b)
    out = meta(g, loc, masks, teacher_temp=0.04)
    assert float(out["gram"]) > 0.0
    torch.testing.assert_close(out["total"], out["dino"] + out["ibot"] + 0.1 * out["koleo"] + out["gram"])
    # the Gram teacher is frozen: EMA updates leave it alone
    frozen = [p.detach().clone() for p in meta.gram_teacher.parameters()]
    meta.update_teacher(0.5)
    assert all(torch.equal(a, b) for a, b in zip(meta.gram_teacher.parameters(), frozen, strict=True))
    state = meta.state_dict()
    assert any(k.startswith("gram_teacher.") for k in state) and "gram_active" in state


def test_shared_ibot_head_and_teacher_eval_mode() -> None:
    meta = make(ibot_separate_head=False)
    assert meta.student.ibot_head is None and meta.student.patch_head() is meta.student.dino_head
    meta.train()
    assert meta.student.training and not meta.teacher.training
    with pytest.raises(ValueError, match="masks"):
        g, loc, masks = crops()
        meta(g, loc, masks[:, :3], teacher_temp=0.04)


def test_meta_arch_config_is_the_config_sections(tmp_path: Any) -> None:
    from support.ssl_runs import tiny_config

    cfg = tiny_config(tmp_path, tmp_path / "m.csv", "loss.koleo_weight=0.25", "loss.gram.enabled=true")
    meta_cfg = MetaArchConfig.of(cfg)
    assert meta_cfg.model is cfg.model and meta_cfg.loss is cfg.loss and meta_cfg.crops is cfg.crops
    assert meta_cfg.n_global == cfg.crops.n_global
    meta = SSLMetaArch(meta_cfg)
    assert meta.gram_teacher is not None and meta.student.dino_head.num_prototypes == 32


def test_patch_size_is_read_from_the_backbone(monkeypatch: pytest.MonkeyPatch) -> None:
    """A patch-8 tiny ViT: grid, masks and every loss follow the backbone's patch size, not 16."""
    import ssl_train.models.backbone as backbone_module
    from orthonode.inference.backbones import create_backbone

    def patch8(arch: str, **kw: Any) -> torch.nn.Module:
        return create_backbone(arch, patch_size=8, **kw)

    monkeypatch.setattr(backbone_module, "create_backbone", patch8)
    meta = make(centering="softmax")
    assert meta.student.backbone.patch_size == 8 and meta.teacher.backbone.patch_size == 8
    assert meta.student.backbone.grid(32, 32) == (4, 4)
    g, loc, _ = crops()
    masks = torch.zeros(6, 16, dtype=torch.bool)  # (32 / 8) ** 2 patches per global crop
    masks[0, :5] = True
    masks[4, 9] = True
    teacher = meta.get_teacher_output(g, masks, teacher_temp=0.04)
    assert teacher.ibot_targets is not None and teacher.ibot_targets.shape == (6, 32)
    student = meta.get_student_output(g, loc, masks)
    assert student.global_patches.shape == (6, 16, 48) and student.cls_logits.shape == (4, 3, 32)
    out = meta(g, loc, masks, teacher_temp=0.04)
    assert all(bool(torch.isfinite(v)) for v in out.values()) and float(out["ibot"]) > 0
    with pytest.raises(ValueError, match="masks"):  # the patch-16 grid's masks are refused
        meta(g, loc, masks[:, :4], teacher_temp=0.04)
