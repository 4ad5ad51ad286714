"""The knee-joint localiser shipped beside the default encoder (issue 14), on real full-size films.

These films are the localiser's DEVELOPMENT films (it was trained on them; its cross-validated figures
are in docs/results/localiser_cv.json and the films kept apart evaluate it): the test checks that the
shipped bundle loads on the shipped encoder and that the node's path (``films.read_film``) turns a film
into the expected joints and outcomes -- not how well the localiser generalises.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.runtime import isolated_settings

from orthonode.inference.films import read_film
from orthonode.inference.findings import SourceImage
from orthonode.inference.layout import PACKAGED_MODELS
from orthonode.inference.localise import LOCALISER_SUBDIR
from orthonode.inference.pipeline import Models
from orthonode.inference.radiograph import Radiograph

SIZE = 288


@pytest.fixture(scope="module")
def models() -> Models:
    if not (PACKAGED_MODELS / LOCALISER_SUBDIR).is_dir():
        pytest.fail("the default model ships a localiser (experiments/knee_fullsize/localiser.sh)")
    return Models.load(PACKAGED_MODELS, isolated_settings(inference_autocast="off"))


def _film(shared_data: Path, name: str) -> Radiograph:
    path = shared_data / "knee_fullsize" / name
    if not path.is_file():
        pytest.skip(f"{path} not present")
    with Image.open(path) as im:
        pixels = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    source = SourceImage("1.2.840.10008.5.1.4.1.1.1.1", "2.25.1", "2.25.2")
    return Radiograph(pixels, None, None, "B", source, None, "MONOCHROME2", "DX")


def test_the_shipped_localiser_belongs_to_the_shipped_encoder(models: Models) -> None:
    assert models.localiser is not None
    assert models.localiser.card.encoder_fingerprint == models.encoder.fingerprint
    size = sum(p.stat().st_size for p in (PACKAGED_MODELS / LOCALISER_SUBDIR).iterdir())
    assert size < 2 * 1024 * 1024
    summary = models.localiser.card.training["cross_validation"]["summary"]
    assert summary["knee_ap_single"]["knees"] == 15  # the card carries its cross-validated figures


def test_a_film_with_both_knees_gives_two_joints_right_on_the_image_left(
    models: Models, shared_data: Path
) -> None:
    film = _film(shared_data, "knee_ap_both/IMG0000242.jpg")
    reading = read_film(film, "B", models.localiser, models.encoder, SIZE)
    assert reading.skipped == () and len(reading.crops) == 2
    right, left = reading.crops  # left to right on the image: the patient's right first
    assert (right.side, left.side) == ("R", "L")
    for crop, annotated_x in ((right, 402.0), (left, 1010.0)):  # experiments/knee_fullsize/annotations.csv
        assert crop.region is not None and crop.pixels.shape == (SIZE, SIZE)
        x0, _, x1, _ = crop.region.box
        assert abs((x0 + x1) / 2 - annotated_x) < 40
        assert crop.region.scale_source == "estimated" and 40 < crop.region.mm_per_px * 250 < 120
    assert reading.overview is not None and max(reading.overview.shape) == 768


@pytest.mark.parametrize(
    ("name", "code"),
    [("hip/IMG0000041.jpg", "NOKNEEJOINT"), ("knee_lateral/IMG0000017.jpg", "NGLATERAL")],
)
def test_films_without_a_frontal_knee_are_not_graded(
    models: Models, shared_data: Path, name: str, code: str
) -> None:
    film = _film(shared_data, name)
    reading = read_film(film, None, models.localiser, models.encoder, SIZE)
    assert reading.crops == ()
    assert [s.code.value for s in reading.skipped] == [code]


def test_a_chen_crop_passes_through_whole(models: Models, shared_data: Path) -> None:
    crops = sorted((shared_data / "knee_kl224" / "val" / "2").glob("*.png"))
    if not crops:
        pytest.skip("knee_kl224 not present")
    with Image.open(crops[0]) as im:
        pixels = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    film = replace(_film(shared_data, "knee_ap_both/IMG0000242.jpg"), pixels=pixels, laterality="L")
    reading = read_film(film, "L", models.localiser, models.encoder, SIZE)
    (crop,) = reading.crops
    assert crop.region is None and crop.side == "L"
    np.testing.assert_array_equal(crop.pixels, pixels)
