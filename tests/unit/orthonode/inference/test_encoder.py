"""The encoder export format, the export loader and batched inference (tiny test backbone)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from timm.models.eva import Eva

from orthonode.inference.backbones import create_backbone
from orthonode.inference.checkpoints import CheckpointError
from orthonode.inference.encoder import (
    CARD_FILE,
    WEIGHTS_FILE,
    Encoder,
    EncoderCard,
    EncoderOutput,
    fingerprint,
    load_encoder,
    read_card,
    save_encoder,
)

ARCH = "vit_test_patch16_dinov3"


def _model(seed: int = 0) -> Eva:
    torch.manual_seed(seed)
    model = create_backbone(ARCH, img_size=64)
    with torch.no_grad():  # non-trivial layer scale so every block changes the output
        for blk in model.blocks:
            blk.gamma_1.fill_(0.5)
            blk.gamma_2.fill_(0.5)
    return model.eval()


def _images(n: int = 3, h: int = 64, w: int = 48, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, h, w, generator=torch.Generator().manual_seed(seed))


def _spec_fingerprint(sd: dict[str, torch.Tensor]) -> str:
    """The fingerprint as the shared spec states it, written out independently."""
    h = hashlib.sha256()
    for key in sorted(sd):
        t = sd[key].detach().cpu().contiguous()
        h.update(key.encode() + b"\0" + str(t.dtype).split(".")[-1].encode() + b"\0")
        h.update("x".join(map(str, t.shape)).encode() + b"\0")
        h.update(bytes(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()[:16]


def test_fingerprint_spec_stable_and_sensitive() -> None:
    sd = _model().state_dict()
    fp = fingerprint(sd)
    assert fp == _spec_fingerprint(sd)
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert fingerprint(dict(reversed(list(sd.items())))) == fp
    assert fingerprint({k: v.clone() for k, v in sd.items()}) == fp
    changed = {k: v.clone() for k, v in sd.items()}
    changed["blocks.1.mlp.fc2.bias"][7] += 1e-6
    assert fingerprint(changed) != fp
    assert fingerprint({k: v.double() for k, v in sd.items()}) != fp
    renamed = dict(sd)
    renamed["x" + "cls_token"] = renamed.pop("cls_token")
    assert fingerprint(renamed) != fp


def test_export_round_trip(tmp_path: Path) -> None:
    model = _model()
    card = save_encoder(
        model, tmp_path / "enc", name="knee-ti", version="0.1", img_size=64, training={"iters": 3}
    )
    files = sorted(p.name for p in (tmp_path / "enc").iterdir())
    assert files == [CARD_FILE, WEIGHTS_FILE]  # no temporary left behind
    raw = json.loads((tmp_path / "enc" / CARD_FILE).read_text())
    assert raw["format"] == "orthonode-encoder/1" and raw["arch"] == ARCH
    assert raw["mean"] == 0.5 and raw["std"] == 0.25 and raw["num_reg_tokens"] == 4
    assert raw["embed_dim"] == 48 and raw["in_chans"] == 3 and raw["patch_size"] == 16
    stored = load_file(str(tmp_path / "enc" / WEIGHTS_FILE))
    assert card.fingerprint == _spec_fingerprint(stored) == fingerprint(model.state_dict())

    for path in (tmp_path / "enc", tmp_path / "enc" / CARD_FILE, tmp_path / "enc" / WEIGHTS_FILE):
        enc = load_encoder(path)
        assert enc.card == card and enc.fingerprint == card.fingerprint
        loaded = enc.model.state_dict()
        assert loaded.keys() == model.state_dict().keys()
        assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())

    img = _images()
    x = ((img - 0.5) / 0.25).repeat(1, 3, 1, 1)  # the shared convention, written out here
    with torch.inference_mode():
        ref = model.forward_features(x)
    out = enc.embed(img, batch_size=2)
    assert out.grid == (4, 3) and out.cls.shape == (3, 48) and out.patches.shape == (3, 12, 48)
    assert out.cls.dtype == torch.float32
    assert torch.equal(out.cls, ref[:, 0]) and torch.equal(out.patches, ref[:, 5:])
    # batching does not change the result
    torch.testing.assert_close(enc.embed(img, batch_size=16).cls, out.cls, rtol=1e-6, atol=1e-6)
    half = load_encoder(tmp_path / "enc", dtype=torch.bfloat16)
    assert next(half.model.parameters()).dtype == torch.bfloat16
    cos = torch.nn.functional.cosine_similarity(half.embed(img).cls, out.cls, dim=-1)
    assert float(cos.min()) > 0.99


def test_export_with_qkv_bias_and_bf16_storage(tmp_path: Path) -> None:
    model = create_backbone(ARCH, qkv_bias=True)
    with torch.no_grad():
        model.blocks[0].attn.q_bias.normal_()
    card = save_encoder(model, tmp_path, name="b", version="1", img_size=224, dtype=torch.bfloat16)
    assert card.fingerprint == fingerprint({k: v.bfloat16() for k, v in model.state_dict().items()})
    enc = load_encoder(tmp_path)
    assert torch.equal(enc.model.blocks[0].attn.q_bias, model.blocks[0].attn.q_bias.bfloat16().float())


def test_arch_from_pretrained_cfg_is_checked(tmp_path: Path) -> None:
    tiny = create_backbone("vit_tiny_patch16_dinov3")
    # timm's pretrained_cfg of the project's variants names vit_small; the shapes decide
    assert (
        save_encoder(tiny, tmp_path / "a", name="t", version="1", img_size=224).arch
        == "vit_tiny_patch16_dinov3"
    )
    with pytest.raises(CheckpointError, match="not a vit_base_patch16_dinov3"):
        save_encoder(
            tiny, tmp_path / "b", name="t", version="1", img_size=224, arch="vit_base_patch16_dinov3"
        )


def _write_card(tmp_path: Path, **changes: object) -> Path:
    save_encoder(_model(), tmp_path, name="n", version="1", img_size=64)
    data = json.loads((tmp_path / CARD_FILE).read_text())
    data.update(changes)
    (tmp_path / CARD_FILE).write_text(json.dumps(data))
    return tmp_path


def test_card_unknown_key_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"encoder\.json: invalid encoder card: colour: Extra inputs"):
        load_encoder(_write_card(tmp_path, colour="blue"))


def test_card_wrong_format_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"format: Input should be 'orthonode-encoder/1'"):
        read_card(_write_card(tmp_path, format="orthonode-encoder/2") / CARD_FILE)


def test_card_bad_values(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"arch: .*unknown backbone"):
        load_encoder(_write_card(tmp_path / "a", arch="resnet50"))
    with pytest.raises(CheckpointError, match=r"std: .*positive"):
        load_encoder(_write_card(tmp_path / "b", std=[0.2, 0.0, 0.2]))
    with pytest.raises(CheckpointError, match="2 values for 3 input channels"):
        load_encoder(_write_card(tmp_path / "c", mean=[0.1, 0.2]))
    with pytest.raises(CheckpointError, match="card says arch"):
        load_encoder(_write_card(tmp_path / "d"), arch="vit_tiny_patch16_dinov3")


def test_tampered_weights_fail_the_fingerprint(tmp_path: Path) -> None:
    save_encoder(_model(), tmp_path, name="n", version="1", img_size=64)
    sd = load_file(str(tmp_path / WEIGHTS_FILE))
    sd["norm.bias"][0] += 1.0
    save_file(sd, str(tmp_path / WEIGHTS_FILE))
    with pytest.raises(CheckpointError, match=r"fingerprint .* does not match"):
        load_encoder(tmp_path)
    (tmp_path / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match=r"encoder\.safetensors is missing"):
        load_encoder(tmp_path)


def test_card_schema_direct() -> None:
    base = dict(
        format="orthonode-encoder/1", arch=ARCH, patch_size=16, img_size=224, in_chans=3, embed_dim=48,
        num_reg_tokens=4, mean=[0.485, 0.456, 0.406], std=0.25, fingerprint="0123456789abcdef", name="x",
        version="1", training={}, created="2025-01-01T00:00:00Z",
    )  # fmt: skip
    assert EncoderCard.model_validate(base).channel_stats()[0] == [0.485, 0.456, 0.406]
    for bad in ({"fingerprint": "xyz"}, {"created": "2025-01-01T00:00:00"}, {"format": "other"}):
        with pytest.raises(ValueError):
            EncoderCard.model_validate(base | bad)


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    model = _model()
    card = EncoderCard(
        format="orthonode-encoder/1", arch=ARCH, patch_size=16, img_size=64, in_chans=3, embed_dim=48,
        num_reg_tokens=4, mean=[0.4, 0.5, 0.6], std=[0.2, 0.25, 0.3],
        fingerprint=fingerprint(model.state_dict()), name="t", version="1", created="2025-01-01T00:00:00Z",
    )  # fmt: skip
    return Encoder(model, card)


def test_prepare_per_channel_and_shapes(encoder: Encoder) -> None:
    img = _images(2, 32, 16)
    x = encoder.prepare(img)
    assert x.shape == (2, 3, 32, 16)
    for c, (m, s) in enumerate(zip([0.4, 0.5, 0.6], [0.2, 0.25, 0.3], strict=True)):
        torch.testing.assert_close(x[:, c], (img[:, 0] - m) / s)
    torch.testing.assert_close(encoder.prepare(img[:, 0].numpy()), x)
    with pytest.raises(ValueError, match="patch size 16"):
        encoder.prepare(torch.rand(1, 1, 30, 32))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        encoder.prepare(torch.rand(1, 1, 32, 32) * 255)
    with pytest.raises(ValueError, match="expected images"):
        encoder.prepare(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="NaN"):
        encoder.prepare(torch.full((1, 1, 32, 32), float("nan")))


def test_saliency_is_cls_patch_cosine(encoder: Encoder) -> None:
    out = encoder.embed(_images(2, 64, 48))
    sal = encoder.saliency(out)
    assert sal.shape == (2, 4, 3) and sal.dtype == np.float32
    c, p = out.cls.numpy().astype(np.float64), out.patches.numpy().astype(np.float64)
    for b in range(2):
        cos = p[b] @ c[b] / (np.linalg.norm(p[b], axis=1) * np.linalg.norm(c[b]))
        expect = (cos - cos.min()) / (cos.max() - cos.min())
        np.testing.assert_allclose(sal[b].reshape(-1), expect, atol=1e-5)
        assert sal[b].min() == 0.0 and sal[b].max() == pytest.approx(1.0)
    flat = EncoderOutput(cls=torch.ones(1, 4), patches=torch.ones(1, 2, 4), grid=(1, 2))
    assert np.array_equal(Encoder.saliency(flat), np.zeros((1, 1, 2), np.float32))
    up = Encoder.upsample(sal, (64, 48))
    assert up.shape == (2, 64, 48) and up.min() >= 0 and up.max() <= 1
    assert Encoder.upsample(sal[0], (8, 6)).shape == (8, 6)


def test_properties(encoder: Encoder) -> None:
    assert encoder.embed_dim == 48 and encoder.patch_size == 16 and encoder.card.name == "t"
    assert encoder.fingerprint == encoder.card.fingerprint
    assert not encoder.model.training
    with pytest.raises(ValueError, match="autocast"):
        Encoder(encoder.model, encoder.card, autocast="fp8")  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["auto", "bf16"])
def test_bf16_autocast_close_to_fp32(encoder: Encoder, mode: str) -> None:
    img = _images(2, 64, 64)
    ref = encoder.embed(img)
    enc = Encoder(encoder.model, encoder.card, autocast=mode)  # type: ignore[arg-type]
    out = enc.embed(img)
    assert out.cls.dtype == torch.float32
    if mode == "bf16":
        assert enc.use_bf16
    if enc.use_bf16:
        cos = torch.nn.functional.cosine_similarity(out.cls, ref.cls, dim=-1)
        assert float(cos.min()) > 0.99
        pcos = torch.nn.functional.cosine_similarity(out.patches, ref.patches, dim=-1)
        assert float(pcos.min()) > 0.99
    else:
        assert torch.equal(out.cls, ref.cls)
