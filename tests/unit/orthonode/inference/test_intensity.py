"""Intensity paths: Modality LUT + VOI window (PS3.3 C.11), VOI LUT Sequence, MONOCHROME1, percentile windows,
raster scaling; checked against hand-computed values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from support.corpus import Corpus, build_corpus, cr_pixels

from orthonode.inference.intensity import (
    apply_window,
    dicom_frame_to_unit,
    modality_family,
    normalise_range,
    percentile_range,
    radiograph_to_unit,
    raster_to_unit,
)


@pytest.fixture
def ssl_corpus(tmp_path: Path) -> Corpus:
    """A tiny mixed corpus in ``tmp_path / "corpus"`` (see ``support.corpus``)."""
    return build_corpus(tmp_path / "corpus")


def _header(**attributes: object) -> Dataset:
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsStored = 12
    ds.PixelRepresentation = 0
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def test_rescale_then_linear_window_matches_hand_computation() -> None:
    # Modality LUT: 2 * stored - 100 -> [-100, 100, 300, 500, 8090].
    # LINEAR window c=300, w=401: below 99.5 -> 0, above 499.5 -> 1, else (x - 299.5) / 400 + 0.5.
    ds = _header(RescaleSlope=2, RescaleIntercept=-100, WindowCenter=300, WindowWidth=401)
    stored = np.array([[0, 100, 200, 300, 4095]], dtype=np.uint16)
    out = radiograph_to_unit(stored, ds)
    np.testing.assert_allclose(out, [[0.0, 0.00125, 0.50125, 1.0, 1.0]], atol=1e-7)
    assert out.dtype == np.float32


def test_first_of_several_windows_is_used() -> None:
    ds = _header(WindowCenter=[300, 1000], WindowWidth=[401, 50])
    out = radiograph_to_unit(np.array([[300]], dtype=np.uint16), ds)
    np.testing.assert_allclose(out, [[0.50125]], atol=1e-7)


def test_voi_lut_functions() -> None:
    x = np.array([100.0, 300.0, 400.0, 600.0])
    np.testing.assert_allclose(apply_window(x, 300, 400, "LINEAR_EXACT"), [0.0, 0.5, 0.75, 1.0])
    sigmoid = apply_window(x, 300, 400, "SIGMOID")
    np.testing.assert_allclose(sigmoid[1], 0.5)
    np.testing.assert_allclose(sigmoid[2], 1 / (1 + np.exp(-1.0)), rtol=1e-6)
    np.testing.assert_array_equal(apply_window(np.array([1.0, 2.0]), 2, 1, "LINEAR"), [0.0, 1.0])
    for function, width in (("LINEAR", 0.5), ("LINEAR_EXACT", 0.0), ("SIGMOID", -1.0), ("GAMMA", 10.0)):
        with pytest.raises(ValueError):
            apply_window(x, 300, width, function)


def test_voi_lut_sequence_is_applied_and_scaled() -> None:
    item = Dataset()
    item.LUTDescriptor = [4, 0, 8]  # 4 entries, first input value 0, 8-bit output
    item.LUTData = [0, 85, 170, 255]
    ds = _header(VOILUTSequence=[item], WindowCenter=2, WindowWidth=2)
    stored = np.array([[0, 1, 2, 3, 9]], dtype=np.uint16)
    np.testing.assert_allclose(radiograph_to_unit(stored, ds), [[0, 1 / 3, 2 / 3, 1, 1]], atol=1e-6)
    # with prefer_voi_lut=False the window wins
    np.testing.assert_allclose(
        radiograph_to_unit(stored, ds, prefer_voi_lut=False), [[0.0, 0.0, 1.0, 1.0, 1.0]], atol=1e-6
    )


def test_monochrome1_inversion_makes_the_brightest_stored_value_darkest(ssl_corpus: Corpus) -> None:
    ds = dcmread(ssl_corpus.cr)
    stored = ds.pixel_array
    out = radiograph_to_unit(stored, ds)
    assert out[np.unravel_index(stored.argmax(), stored.shape)] == out.min() == 0.0
    assert out[np.unravel_index(stored.argmin(), stored.shape)] == out.max()
    assert out.max() > 0.99
    ds.PhotometricInterpretation = "MONOCHROME2"
    np.testing.assert_allclose(out, 1.0 - radiograph_to_unit(stored, ds), atol=1e-7)
    assert (stored == cr_pixels()).all()


def test_radiograph_without_voi_uses_robust_percentiles() -> None:
    stored = np.arange(1000, dtype=np.uint16).reshape(25, 40)
    out = radiograph_to_unit(stored, _header())
    assert out.min() == 0.0 and out.max() == 1.0
    assert (out == 0.0).sum() == 5 and (out == 1.0).sum() == 5  # 0.5 % clipped at each end


def test_mri_percentile_normalisation_clips_outliers() -> None:
    rng = np.random.default_rng(0)
    volume = rng.normal(500.0, 50.0, size=(8, 32, 32))
    volume[0, 0, :5] = 1e6  # hot spikes
    volume[1, 0, :5] = -1e6
    low, high = percentile_range(volume, (0.5, 99.5))
    assert 300 < low < 400 and 600 < high < 700
    out = normalise_range(volume, low, high)
    assert out.dtype == np.float32 and out.min() == 0.0 and out.max() == 1.0
    assert (out[0, 0, :5] == 1.0).all() and (out[1, 0, :5] == 0.0).all()
    assert abs((out == 1.0).mean() - 0.005) < 0.001
    # one volume window for all slices: a darker slice stays darker
    volume[7] -= 100
    out = normalise_range(volume, *percentile_range(volume))
    assert out[7].mean() < out[6].mean() - 0.1


def test_volume_frame_uses_the_given_window() -> None:
    ds = _header(RescaleSlope=1, RescaleIntercept=0)
    out = dicom_frame_to_unit(np.array([[0, 50, 100, 200]], dtype=np.uint16), ds, "mri", (0.0, 100.0))
    np.testing.assert_allclose(out, [[0.0, 0.5, 1.0, 1.0]])
    with pytest.raises(ValueError):
        percentile_range(np.zeros(4), (60.0, 40.0))
    assert normalise_range(np.ones(3), 1.0, 1.0).tolist() == [0.0, 0.0, 0.0]


def test_raster_scaling() -> None:
    u8 = np.array([[0, 51, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(raster_to_unit(u8), np.array([[0, 51, 255]], dtype=np.float32) / 255)
    u16 = np.array([[0, 65535]], dtype=np.uint16)
    np.testing.assert_array_equal(raster_to_unit(u16), [[0.0, 1.0]])
    rgb = np.zeros((1, 1, 3), dtype=np.uint8)
    rgb[..., 1] = 255
    np.testing.assert_allclose(raster_to_unit(rgb), [[0.587]], atol=1e-6)
    with pytest.raises(ValueError):
        raster_to_unit(np.zeros((2, 2, 2, 2), dtype=np.uint8))


@pytest.mark.parametrize(
    ("modality", "family"),
    [("CR", "radiograph"), ("DX", "radiograph"), ("MR", "mri"), ("CT", "ct"), ("OT", "other"), ("", "other")],
)
def test_modality_family(modality: str, family: str) -> None:
    assert modality_family(modality) == family
