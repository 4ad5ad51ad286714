"""The knee-joint localiser's runtime (orthonode.inference.localise): crop geometry, working scale, the
encoder taps, peak decoding, and the bundle (card, weights, the encoder it belongs to)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from orthonode.inference.backbones import create_backbone
from orthonode.inference.encoder import load_encoder, save_encoder
from orthonode.inference.localise import (
    CHEN_JOINT_ROW,
    CHEN_PLATEAU_FRACTION,
    MAP_STRIDE,
    WORK_LONG_SIDE,
    Localiser,
    LocaliserCard,
    LocaliserError,
    LocaliserHead,
    chen_box,
    cut_box,
    decode_peaks,
    encoder_taps,
    is_joint_crop,
    outside_fraction,
    working_image,
)


def test_chen_box_puts_the_plateau_and_joint_line_where_the_chen_crops_have_them() -> None:
    x0, y0, x1, y1 = chen_box((500.0, 800.0), 255.0)
    side = 255.0 / CHEN_PLATEAU_FRACTION
    assert x1 - x0 == pytest.approx(side) and y1 - y0 == pytest.approx(side)
    assert (x0 + x1) / 2 == pytest.approx(500.0)
    assert (800.0 - y0) / side == pytest.approx(CHEN_JOINT_ROW)


def test_cut_box_resamples_and_fills_outside_the_film_with_black() -> None:
    film = np.full((100, 80), 0.5, dtype=np.float32)
    film[:, 40:] = 1.0
    crop = cut_box(film, (-20.0, 0.0, 60.0, 80.0), 32)  # a quarter of it lies left of the film
    assert crop.shape == (32, 32) and crop.dtype == np.float32
    assert crop[:, :6].max() == 0.0  # outside
    assert crop[16, 10:14].mean() == pytest.approx(0.5, abs=0.02)
    assert crop[16, 26:].mean() == pytest.approx(1.0, abs=0.02)
    assert outside_fraction((-20.0, 0.0, 60.0, 80.0), film.shape) == pytest.approx(0.25)


def test_working_image_scales_by_the_long_side_or_by_the_spacing() -> None:
    film = np.random.default_rng(0).random((1440, 1152)).astype(np.float32)
    image, scale = working_image(film, None)
    assert scale == pytest.approx(WORK_LONG_SIDE / 1440, rel=1e-3)
    assert image.shape[0] % 32 == 0 and image.shape[1] % 32 == 0
    assert image.shape[0] == WORK_LONG_SIDE and image[:, round(1152 * scale) + 1 :].max() == 0.0
    _, by_spacing = working_image(film, (0.3, 0.3))
    assert by_spacing == pytest.approx(0.3 / 1.125, rel=1e-2)


def test_small_square_images_are_joint_crops_and_films_are_not() -> None:
    assert is_joint_crop((224, 224)) and is_joint_crop((300, 260)) and is_joint_crop((72, 96))
    assert not is_joint_crop((1440, 1152)) and not is_joint_crop((100, 400)) and not is_joint_crop((600, 600))


def test_encoder_taps_of_an_efficientnet_are_stride_16_and_its_final_map() -> None:
    model = create_backbone("tf_efficientnet_lite0").eval()
    x = torch.zeros(1, 3, 128, 96)
    with torch.no_grad():
        s16, s32 = encoder_taps(model, x)
        final = model.forward_features(x)
    assert s16.shape[-2:] == (128 // MAP_STRIDE, 96 // MAP_STRIDE) and s16.shape[1] == 112
    assert torch.equal(s32, final)


def _maps(h: int, w: int, peaks: list[tuple[int, int, float]]) -> torch.Tensor:
    maps = torch.full((4, h, w), -8.0)
    maps[1:3] = 0.0
    maps[3] = math.log(4.0)  # plateau 4 cells
    for r, c, logit in peaks:
        maps[0, r, c] = logit
    return maps


def test_decode_peaks_keeps_the_strongest_separated_maxima_above_the_threshold() -> None:
    maps = _maps(20, 30, [(10, 5, 3.0), (10, 7, 2.0), (10, 22, 1.0), (3, 15, -2.0)])
    maps[1, 10, 5] = 0.25  # offset a quarter of a cell right
    found = decode_peaks(maps, 0.5)
    assert len(found) == 2  # (10, 7) is within a plateau of (10, 5); (3, 15) is below threshold
    (x, y, width, conf), (x2, _, _, _) = found
    assert x == pytest.approx((5 + 0.75) * MAP_STRIDE) and y == pytest.approx(10.5 * MAP_STRIDE)
    assert width == pytest.approx(4 * MAP_STRIDE) and conf == pytest.approx(torch.sigmoid(torch.tensor(3.0)))
    assert x2 == pytest.approx(22.5 * MAP_STRIDE)
    assert decode_peaks(_maps(5, 5, []), 0.5) == []


def _encoder(tmp_path: Path):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = create_backbone("tf_efficientnet_lite0")
    save_encoder(
        model, tmp_path / "enc", name="lite0-test", version="0", img_size=64, arch="tf_efficientnet_lite0"
    )
    return load_encoder(tmp_path / "enc")


def test_a_saved_localiser_loads_and_gives_the_same_result(tmp_path: Path) -> None:
    encoder = _encoder(tmp_path)
    torch.manual_seed(1)
    head = LocaliserHead((112, 1280))
    with torch.no_grad():
        head.body[-1].bias[0] = 4.0  # a confident heat map: some joint is found
    card = LocaliserCard(encoder.fingerprint, (112, 1280), 64, 0.5)
    Localiser(head, card).save(tmp_path / "loc")
    loaded = Localiser.load(tmp_path / "loc", encoder.fingerprint)
    film = np.random.default_rng(0).random((400, 320)).astype(np.float32)
    a = Localiser(head, card).localise(encoder, film)
    b = loaded.localise(encoder, film)
    assert a == b and a.joints and a.view in card.views
    joint = a.joints[0]
    assert joint.scale_source == "estimated" and joint.plateau_mm == pytest.approx(76.0)
    with_spacing = loaded.localise(encoder, film, (0.2, 0.2), "ImagerPixelSpacing")
    assert (
        with_spacing.joints[0].mm_per_px == 0.2
        and with_spacing.joints[0].scale_source == "ImagerPixelSpacing"
    )


def test_a_localiser_of_another_encoder_or_a_bad_card_is_refused(tmp_path: Path) -> None:
    head = LocaliserHead((112, 1280))
    Localiser(head, LocaliserCard("0123456789abcdef", (112, 1280), 64, 0.5)).save(tmp_path / "loc")
    with pytest.raises(LocaliserError, match="trained on encoder 0123456789abcdef"):
        Localiser.load(tmp_path / "loc", "fedcba9876543210")
    card = json.loads((tmp_path / "loc" / "localiser.json").read_text())
    card["threshold"] = 2.0
    (tmp_path / "loc" / "localiser.json").write_text(json.dumps(card))
    with pytest.raises(LocaliserError, match="threshold"):
        Localiser.load(tmp_path / "loc", "0123456789abcdef")
    with pytest.raises(LocaliserError, match="format"):
        LocaliserCard.from_json({"format": "other"})


def test_no_joint_is_a_reason_not_an_empty_answer(tmp_path: Path) -> None:
    encoder = _encoder(tmp_path)
    head = LocaliserHead((112, 1280))
    with torch.no_grad():
        head.body[-1].bias[0] = -6.0
    result = Localiser(head, LocaliserCard(encoder.fingerprint, (112, 1280), 64, 0.5)).localise(
        encoder, np.zeros((300, 500), dtype=np.float32)
    )
    assert (
        result.joints == () and result.reason is not None and result.reason.startswith("no knee joint found")
    )
