"""Checkpoint layouts: official DINOv3 and OrthoFoundation-L key layouts against a DINOv3 forward pass
written here from the original-layout tensors (Siméoni et al., DINOv3, arXiv:2508.10104)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import Tensor
from torch.nn import functional as F  # noqa: N812

from orthonode.inference.checkpoints import (
    CheckpointError,
    detect_layout,
    infer_arch,
    to_timm_state_dict,
)
from orthonode.inference.encoder import IMAGENET_MEAN, IMAGENET_STD, load_encoder

PATCH = 16
N_REG = 4


def dinov3_state(
    *,
    dim: int = 48,
    depth: int = 2,
    heads: int = 2,
    seed: int = 0,
    qkv_bias: bool = True,
    base: float = 100.0,
) -> dict[str, Tensor]:
    """A random backbone in exactly the official DINOv3 key layout (no prefix)."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int, scale: float = 0.2) -> Tensor:
        return torch.randn(*shape, generator=g) * scale

    head_dim = dim // heads
    sd: dict[str, Tensor] = {
        "cls_token": rnd(1, 1, dim, scale=1.0),
        "storage_tokens": rnd(1, N_REG, dim, scale=1.0),
        "mask_token": rnd(1, dim),
        "patch_embed.proj.weight": rnd(dim, 3, PATCH, PATCH, scale=0.05),
        "patch_embed.proj.bias": rnd(dim),
        # DINOv3 RopePositionEmbedding: periods = base ** (2 i / (head_dim / 2)), i < head_dim / 4
        "rope_embed.periods": base
        ** (2 * torch.arange(head_dim // 4, dtype=torch.float32) / (head_dim // 2)),
        "norm.weight": 1 + rnd(dim),
        "norm.bias": rnd(dim),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        mask = torch.ones(3 * dim)
        mask[dim : 2 * dim] = 0  # LinearKMaskedBias: the key bias is masked out
        sd |= {
            b + "norm1.weight": 1 + rnd(dim),
            b + "norm1.bias": rnd(dim),
            b + "attn.qkv.weight": rnd(3 * dim, dim),
            b + "attn.proj.weight": rnd(dim, dim),
            b + "attn.proj.bias": rnd(dim),
            b + "ls1.gamma": 0.5 + rnd(dim),
            b + "norm2.weight": 1 + rnd(dim),
            b + "norm2.bias": rnd(dim),
            b + "mlp.fc1.weight": rnd(4 * dim, dim),
            b + "mlp.fc1.bias": rnd(4 * dim),
            b + "mlp.fc2.weight": rnd(dim, 4 * dim),
            b + "mlp.fc2.bias": rnd(dim),
            b + "ls2.gamma": 0.5 + rnd(dim),
        }
        if qkv_bias:
            sd[b + "attn.qkv.bias"] = rnd(3 * dim)  # non-zero key part: must be masked away
            sd[b + "attn.qkv.bias_mask"] = mask
    return sd


def reference_forward(sd: dict[str, Tensor], x: Tensor, heads: int) -> Tensor:
    """DINOv3's forward pass, from the original-layout tensors: [B, 3, H, W] -> [B, 1 + R + N, D]."""
    dim = sd["cls_token"].shape[-1]
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    t = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=PATCH)
    h, w = t.shape[-2:]
    t = t.flatten(2).transpose(1, 2)
    bsz = x.shape[0]
    prefix = 1 + sd["storage_tokens"].shape[1]
    t = torch.cat([sd["cls_token"].expand(bsz, -1, -1), sd["storage_tokens"].expand(bsz, -1, -1), t], dim=1)

    # RoPE: patch-centre coordinates normalised per axis to [-1, 1], angles 2 pi c / period,
    # [h-angles, w-angles] tiled twice, rotate-half convention.
    ch = (torch.arange(h, dtype=torch.float64) + 0.5) / h * 2 - 1
    cw = (torch.arange(w, dtype=torch.float64) + 0.5) / w * 2 - 1
    coords = torch.stack(torch.meshgrid(ch, cw, indexing="ij"), dim=-1).reshape(-1, 2)
    periods = sd["rope_embed.periods"].double()
    angles = (2 * math.pi * coords[:, :, None] / periods[None, None, :]).reshape(h * w, -1).tile(2)
    sin, cos = angles.sin().float(), angles.cos().float()

    def rope(z: Tensor) -> Tensor:  # [B, heads, T, hd]
        zp = z[:, :, prefix:]
        z1, z2 = zp.chunk(2, dim=-1)
        zp = zp * cos + torch.cat([-z2, z1], dim=-1) * sin
        return torch.cat([z[:, :, :prefix], zp], dim=2)

    hd = dim // heads
    for i in range(depth):
        b = f"blocks.{i}."
        y = F.layer_norm(t, (dim,), sd[b + "norm1.weight"], sd[b + "norm1.bias"], eps=1e-5)
        bias = sd.get(b + "attn.qkv.bias")
        if bias is not None:
            bias = bias * sd[b + "attn.qkv.bias_mask"]
        qkv = (
            F.linear(y, sd[b + "attn.qkv.weight"], bias).reshape(bsz, -1, 3, heads, hd).permute(2, 0, 3, 1, 4)
        )
        q, k, v = rope(qkv[0]), rope(qkv[1]), qkv[2]
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(hd), dim=-1) @ v
        att = att.transpose(1, 2).reshape(bsz, -1, dim)
        t = t + sd[b + "ls1.gamma"] * F.linear(att, sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"])
        y = F.layer_norm(t, (dim,), sd[b + "norm2.weight"], sd[b + "norm2.bias"], eps=1e-5)
        y = F.linear(
            F.gelu(F.linear(y, sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"])), sd[b + "mlp.fc2.weight"]
        )
        t = t + sd[b + "ls2.gamma"] * (y + sd[b + "mlp.fc2.bias"])
    return F.layer_norm(t, (dim,), sd["norm.weight"], sd["norm.bias"], eps=1e-5)


def _images(seed: int = 1, h: int = 48, w: int = 32) -> Tensor:
    return torch.rand(2, 1, h, w, generator=torch.Generator().manual_seed(seed))


def _normalised(img: Tensor) -> Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (img.repeat(1, 3, 1, 1) - mean) / std


@pytest.mark.parametrize("layout", ["dinov3", "orthofoundation", "orthofoundation-wrapped"])
@pytest.mark.parametrize("qkv_bias", [True, False])
def test_original_layouts_match_reference_forward(tmp_path: Path, layout: str, qkv_bias: bool) -> None:
    sd = dinov3_state(qkv_bias=qkv_bias)
    saved: object = sd
    if layout.startswith("orthofoundation"):
        saved = {"backbone." + k: v for k, v in sd.items()}
        if layout.endswith("wrapped"):
            saved = {"teacher": {**saved, "dino_head.last_layer.weight": torch.zeros(8, 48)}, "iteration": 3}
    path = tmp_path / "OrthoFoudation-test.pth"
    torch.save(saved, path)

    enc = load_encoder(path)
    assert enc.card.arch == "vit_test_patch16_dinov3"
    assert enc.card.num_reg_tokens == N_REG and enc.embed_dim == 48
    assert "mask_token" in enc.dropped
    assert enc.card.mean == IMAGENET_MEAN and enc.card.std == IMAGENET_STD
    assert enc.card.version == enc.fingerprint
    state = enc.model.state_dict()
    assert torch.equal(state["reg_token"], sd["storage_tokens"])
    assert torch.equal(state["blocks.1.gamma_2"], sd["blocks.1.ls2.gamma"])
    assert ("blocks.0.attn.q_bias" in state) == qkv_bias

    img = _images()
    x = _normalised(img)
    ref = reference_forward(sd, x, heads=2)
    with torch.no_grad():
        got = enc.model.forward_features(x)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)

    out = enc.embed(img)
    assert out.grid == (3, 2)
    torch.testing.assert_close(out.cls, ref[:, 0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.patches, ref[:, 1 + N_REG :], rtol=1e-5, atol=1e-5)


def test_rope_positions_matter(tmp_path: Path) -> None:
    """The reference really depends on RoPE: with the periods scaled the outputs move (so the match above
    is a check of the convention, not of a position-blind network)."""
    sd = dinov3_state()
    x = _normalised(_images())
    other = dict(sd, **{"rope_embed.periods": sd["rope_embed.periods"] * 3})
    assert (reference_forward(sd, x, 2) - reference_forward(other, x, 2)).abs().max() > 1e-2


def test_zero_qkv_bias_is_dropped_and_nonzero_key_bias_rejected() -> None:
    sd = dinov3_state()
    for i in range(2):
        sd[f"blocks.{i}.attn.qkv.bias"] = torch.cat([torch.zeros(48), torch.randn(48), torch.zeros(48)])
    conv = to_timm_state_dict(sd)
    assert not conv.qkv_bias and "blocks.0.attn.qkv.bias" in conv.dropped
    sd["blocks.0.attn.qkv.bias_mask"] = torch.ones(144)
    with pytest.raises(CheckpointError, match=r"blocks\.0\.attn\.qkv\.bias: the key bias"):
        to_timm_state_dict(sd)


def test_shape_inference_of_another_size(tmp_path: Path) -> None:
    sd = dinov3_state(dim=192, depth=12, heads=3, seed=2)
    path = tmp_path / "tiny.pth"
    torch.save({"model": {"backbone." + k: v for k, v in sd.items()}}, path)
    enc = load_encoder(path)
    assert enc.card.arch == "vit_tiny_patch16_dinov3"
    assert enc.embed_dim == 192 and len(enc.model.blocks) == 12
    assert enc.model.blocks[0].attn.num_heads == 3
    torch.testing.assert_close(
        enc.model.state_dict()["blocks.11.attn.qkv.weight"], sd["blocks.11.attn.qkv.weight"], rtol=0, atol=0
    )
    with pytest.raises(CheckpointError, match="vit_test_patch16_dinov3"):
        load_encoder(path, arch="vit_test_patch16_dinov3")


def test_layout_detection() -> None:
    assert detect_layout(dinov3_state()) == "dinov3"
    assert detect_layout({"cls_token": torch.zeros(1), "reg_token": torch.zeros(1)}) == "timm"
    with pytest.raises(CheckpointError, match="not a DINOv3"):
        detect_layout({"fc.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="mixes"):
        detect_layout({"storage_tokens": torch.zeros(1), "reg_token": torch.zeros(1)})


def test_periods_bf16_accepted_other_base_rejected(tmp_path: Path) -> None:
    sd = dinov3_state()
    sd["rope_embed.periods"] = sd["rope_embed.periods"].bfloat16()  # as in DINOv3's released files
    torch.save(sd, tmp_path / "bf16.pth")
    load_encoder(tmp_path / "bf16.pth")
    torch.save(dinov3_state(base=10000.0), tmp_path / "base.pth")
    with pytest.raises(CheckpointError, match=r"rope_embed\.periods differ"):
        load_encoder(tmp_path / "base.pth")


def test_garbage_and_truncated_files(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a checkpoint" * 50)
    with pytest.raises(CheckpointError, match=r"garbage\.pth"):
        load_encoder(garbage)
    whole = tmp_path / "whole.pth"
    torch.save(dinov3_state(), whole)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pth"):
        load_encoder(cut)
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\xff" * 100)
    with pytest.raises(CheckpointError, match=r"bad\.safetensors"):
        load_encoder(bad_st)
    with pytest.raises(CheckpointError, match="not found"):
        load_encoder(tmp_path / "absent.pth")


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("unpickled!",))


def test_arbitrary_objects_are_not_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"cls_token": torch.zeros(1), "x": _Evil()}, path)
    with pytest.raises(CheckpointError, match=r"evil\.pth"):
        load_encoder(path)


def test_missing_block_and_key_named(tmp_path: Path) -> None:
    sd = {k: v for k, v in dinov3_state().items() if not k.startswith("blocks.1.")}
    torch.save(sd, tmp_path / "short.pth")
    with pytest.raises(CheckpointError, match="no single known architecture"):
        load_encoder(tmp_path / "short.pth")
    with pytest.raises(CheckpointError, match=r"missing keys \['blocks\.1\."):
        load_encoder(tmp_path / "short.pth", arch="vit_test_patch16_dinov3")
    sd = {k: v for k, v in dinov3_state().items() if k != "blocks.0.ls1.gamma"}
    torch.save(sd, tmp_path / "nogamma.pth")
    with pytest.raises(CheckpointError, match=r"blocks\.0\.gamma_1"):
        load_encoder(tmp_path / "nogamma.pth")
    sd = {k: v for k, v in dinov3_state().items() if not k.startswith("blocks.0.")}
    torch.save(sd, tmp_path / "gap.pth")
    with pytest.raises(CheckpointError, match=r"blocks \[0\] are missing"):
        load_encoder(tmp_path / "gap.pth")


def test_shape_mismatch_and_unexpected_key_named(tmp_path: Path) -> None:
    sd = dinov3_state()
    sd["blocks.0.attn.proj.weight"] = torch.zeros(48, 40)
    torch.save({"backbone." + k: v for k, v in sd.items()}, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match=r"shape mismatch for 'blocks\.0\.attn\.proj\.weight'"):
        load_encoder(tmp_path / "shape.pth")
    sd = dinov3_state()
    sd["blocks.0.attn.extra.weight"] = torch.zeros(2)
    torch.save(sd, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"unexpected key 'blocks\.0\.attn\.extra\.weight'"):
        load_encoder(tmp_path / "extra.pth")


def test_infer_arch_names_candidates() -> None:
    conv = to_timm_state_dict(dinov3_state())
    assert infer_arch(conv.state_dict) == "vit_test_patch16_dinov3"
    assert infer_arch(conv.state_dict, num_heads=2) == "vit_test_patch16_dinov3"
    with pytest.raises(CheckpointError, match="no single known architecture"):
        infer_arch(conv.state_dict, num_heads=4)


def test_legacy_torch_format_and_safetensors_layout(tmp_path: Path) -> None:
    sd = dinov3_state()
    x = _normalised(_images())
    ref = reference_forward(sd, x, heads=2)
    legacy = tmp_path / "legacy.pth"
    torch.save(sd, legacy, _use_new_zipfile_serialization=False)  # cannot be memory mapped
    st = tmp_path / "dinov3.safetensors"
    save_file({"backbone." + k: v.contiguous() for k, v in sd.items()}, str(st))
    for path in (legacy, st):
        enc = load_encoder(path)
        with torch.no_grad():
            torch.testing.assert_close(enc.model.forward_features(x), ref, rtol=1e-5, atol=1e-5)
