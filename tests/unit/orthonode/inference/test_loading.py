"""Tests of orthonode.inference.loading on the real files of ../shared/data/dicom_msk and SYNTHETIC DICOM.

Expected intensities are computed here from the formulas of PS3.3 C.11 (Modality LUT, VOI LUT, windows with
their VOI LUT Function, MONOCHROME1) and from the per-volume percentile window, not by calling the
intensity module.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.encaps import generate_frames
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import generate_uid
from support.peers.synthetic import mr_series, new_study_uid, radiograph

from orthonode.inference.loading import (
    MAX_SLICES,
    DecodeError,
    SeriesTooLarge,
    decode_pixels,
    load_radiograph,
    load_volume,
)

DICOM_MSK = Path(__file__).resolve().parents[4].parent / "shared" / "data" / "dicom_msk"
WG04 = DICOM_MSK / "wg04"
ENHANCED_MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"

needs_data = pytest.mark.skipif(not WG04.is_dir(), reason=f"shared DICOM data not found at {DICOM_MSK}")


def _save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _set_u16(ds: Dataset, pixels: np.ndarray) -> None:
    """Replace the pixels of a SYNTHETIC dataset (16 bits allocated, 12 stored, unsigned)."""
    arr = np.ascontiguousarray(pixels.astype("<u2"))
    ds.Rows, ds.Columns = int(arr.shape[-2]), int(arr.shape[-1])
    ds.PixelData = arr.tobytes()


# --------------------------------------------------------------------------------------------- MONOCHROME1


@needs_data
@pytest.mark.parametrize("name", ["RG2_hip_RLE.dcm", "RG3_tibia_RLE.dcm"])
def test_photometric_inverted_copy_loads_to_the_same_pixels(name: str, tmp_path: Path) -> None:
    """A copy with inverted stored values and the other MONOCHROME interpretation looks the same.

    The copy stores ``M - x`` (``M = 2**BitsStored - 1``). For the displayed image to be the same, the
    window is mirrored too: ``1 - win_c'(M - x) == win_c(x)`` for LINEAR (C.11.2.1.2.1) when
    ``c' = M + 1 - c`` (same width).
    """
    original = dcmread(WG04 / name)
    stored = original.pixel_array.astype(np.int64)
    top = 2 ** int(original.BitsStored) - 1
    copy = dcmread(WG04 / name)
    copy.decompress()
    other = "MONOCHROME1" if original.PhotometricInterpretation == "MONOCHROME2" else "MONOCHROME2"
    copy.PhotometricInterpretation = other
    copy.PixelData = (top - stored).astype("<u2").tobytes()
    copy.WindowCenter = top + 1 - float(original.WindowCenter)
    copy.WindowWidth = float(original.WindowWidth)
    path = _save(copy, tmp_path / "inverted.dcm")

    want = load_radiograph(WG04 / name)
    got = load_radiograph(path)
    assert got.photometric == other
    np.testing.assert_allclose(got.pixels, want.pixels, atol=1e-5)

    # Bone bright in both: independent LINEAR window on the MONOCHROME2 version of the stored values.
    mono2 = stored if original.PhotometricInterpretation == "MONOCHROME2" else top - stored
    center = float(original.WindowCenter)
    if original.PhotometricInterpretation == "MONOCHROME1":
        center = top + 1 - center
    width = float(original.WindowWidth)
    expected = np.clip((mono2 - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)
    np.testing.assert_allclose(want.pixels, expected, atol=1e-5)


# --------------------------------------------------------------------------------------------- VOI LUT


def _voi_radiograph(rows: int = 40, cols: int = 30) -> Dataset:
    ds = radiograph(new_study_uid(), rows=rows, cols=cols, modality="CR", seed=3)
    ds.RescaleSlope = 2
    ds.RescaleIntercept = -100
    ds.RescaleType = "US"
    return ds


def test_voi_lut_sequence_applied_after_rescale(tmp_path: Path) -> None:
    """PS3.3 C.11.1 then C.11.2.1.1: LUT index = Modality-LUT output - first mapped, clamped to the table."""
    ds = _voi_radiograph()
    first_mapped, entries, bits = 1000, 4096, 12
    table = np.rint(4095 * (np.linspace(0.0, 1.0, entries) ** 0.5)).astype(np.uint16)
    item = Dataset()
    item.LUTDescriptor = [entries, first_mapped, bits]
    item.LUTExplanation = "SYNTHETIC square root"
    item.LUTData = [int(v) for v in table]
    item["LUTData"].VR = "US"
    ds.VOILUTSequence = DicomSequence([item])
    path = _save(ds, tmp_path / "voilut.dcm")

    stored = ds.pixel_array.astype(np.float64)
    modality = stored * 2 - 100
    index = np.clip(modality.astype(np.int64) - first_mapped, 0, entries - 1)
    expected = table[index] / (2**bits - 1)
    got = load_radiograph(path)
    assert got.pixels.dtype == np.float32
    np.testing.assert_allclose(got.pixels, expected, atol=1e-6)
    assert 0.0 < float(got.pixels.mean()) < 1.0


def _window_expected(x: np.ndarray, c: float, w: float, function: str) -> np.ndarray:
    """PS3.3 C.11.2.1.2 with y_min = 0 and y_max = 1, written from the standard's text."""
    if function == "SIGMOID":  # C.11.2.1.3.1
        return 1.0 / (1.0 + np.exp(-4.0 * (x - c) / w))
    if function == "LINEAR_EXACT":  # C.11.2.1.3.2
        out = (x - c) / w + 0.5
        out[x <= c - w / 2] = 0.0
        out[x > c + w / 2] = 1.0
        return out
    out = ((x - (c - 0.5)) / (w - 1) + 0.5) * 1.0  # C.11.2.1.2.1 LINEAR
    out[x <= c - 0.5 - (w - 1) / 2] = 0.0
    out[x > c - 0.5 + (w - 1) / 2] = 1.0
    return out


@pytest.mark.parametrize("function", ["SIGMOID", "LINEAR", "LINEAR_EXACT", None])
def test_window_with_voi_lut_function(function: str | None, tmp_path: Path) -> None:
    ds = _voi_radiograph()
    ds.WindowCenter = [3500.0, 100.0]  # the first pair is used
    ds.WindowWidth = [2500.0, 10.0]
    if function is not None:
        ds.VOILUTFunction = function
    path = _save(ds, tmp_path / "window.dcm")
    modality = ds.pixel_array.astype(np.float64) * 2 - 100
    expected = _window_expected(modality, 3500.0, 2500.0, function or "LINEAR")
    got = load_radiograph(path)
    np.testing.assert_allclose(got.pixels, expected, atol=1e-5)
    assert float(got.pixels.min()) > 0.0 or function != "SIGMOID"


# ---------------------------------------------------------------------------------------- transfer syntaxes

# The same image in several transfer syntaxes (README of dicom_msk): (reference, lossless, lossy).
SYNTAX_GROUPS = {
    "MR3_knee": ("UNC", ("RLE", "JPLL", "JLSL", "J2KR"), ("J2KI", "JLSN", "JPLY")),
    "MR2_shoulder": ("UNC", ("RLE", "JLSL", "J2KR"), ("JPLY",)),
    "RG2_hip": ("RLE", ("JPLL",), ("J2KI", "JPLY")),
    "RG3_tibia": ("RLE", ("J2KR",), ("J2KI", "JPLY")),
}
# Lossy tolerance: mean absolute error of the stored values, in percent of the reference's value range.
# Measured: at most 1.49 % (MR3_knee J2KI), JPEG baseline/extended 0.17-0.94 %, JPEG-LS near-lossless 0.10 %.
LOSSY_MAE_PERCENT = 2.0
# ... and of the loaded [0, 1] images (after the VOI / volume window, which is narrower than the value range
# and so magnifies errors: measured at most 0.029, MR3_knee J2KI).
LOSSY_UNIT_MAE = 0.04


def _load_unit(path: Path) -> np.ndarray:
    if path.name.startswith("MR"):
        return load_volume([path]).voxels[0]
    return load_radiograph(path).pixels


@needs_data
@pytest.mark.parametrize(
    ("image", "syntax"), [(g, s) for g, (_, lossless, _) in SYNTAX_GROUPS.items() for s in lossless]
)
def test_lossless_syntaxes_decode_exactly(image: str, syntax: str) -> None:
    reference = WG04 / f"{image}_{SYNTAX_GROUPS[image][0]}.dcm"
    other = WG04 / f"{image}_{syntax}.dcm"
    want = decode_pixels(reference).astype(np.int64)
    got = decode_pixels(other).astype(np.int64)
    assert got.shape == want.shape
    assert np.array_equal(got, want), f"{other.name} differs from {reference.name}"
    assert np.array_equal(_load_unit(other), _load_unit(reference))


@needs_data
@pytest.mark.parametrize(
    ("image", "syntax"), [(g, s) for g, (_, _, lossy) in SYNTAX_GROUPS.items() for s in lossy]
)
def test_lossy_syntaxes_decode_within_tolerance(image: str, syntax: str) -> None:
    reference = WG04 / f"{image}_{SYNTAX_GROUPS[image][0]}.dcm"
    other = WG04 / f"{image}_{syntax}.dcm"
    want = decode_pixels(reference).astype(np.float64)
    got = decode_pixels(other).astype(np.float64)
    assert got.shape == want.shape
    value_range = float(want.max() - want.min())
    mae_percent = 100.0 * float(np.abs(got - want).mean()) / value_range
    assert mae_percent < LOSSY_MAE_PERCENT, f"{other.name}: MAE {mae_percent:.2f} % of range"
    assert mae_percent > 0.0  # really lossy: the comparison can see a difference
    unit_mae = float(np.abs(_load_unit(other) - _load_unit(reference)).mean())
    assert unit_mae < LOSSY_UNIT_MAE, f"{other.name}: MAE {unit_mae:.4f} after intensity mapping"


@needs_data
def test_jpeg_ls_near_lossless_error_within_its_near_parameter() -> None:
    """JPEG-LS near-lossless bounds every sample's error by NEAR (ISO 14495-1), read from the SOS segment."""
    path = WG04 / "MR3_knee_JLSN.dcm"
    frame = next(generate_frames(dcmread(path).PixelData, number_of_frames=1))
    sos = frame.find(b"\xff\xda")
    components = frame[sos + 4]
    near = frame[sos + 5 + 2 * components]
    assert near > 0
    got = decode_pixels(path).astype(np.int64)
    want = decode_pixels(WG04 / "MR3_knee_UNC.dcm").astype(np.int64)
    assert int(np.abs(got - want).max()) <= near


def _msk_files() -> list[Path]:
    return sorted(DICOM_MSK.rglob("*.dcm")) if DICOM_MSK.is_dir() else []


@needs_data
@pytest.mark.parametrize("path", _msk_files(), ids=lambda p: str(p.relative_to(DICOM_MSK)))
def test_every_shared_file_loads(path: Path) -> None:
    header = dcmread(path, stop_before_pixels=True)
    try:
        if header.Modality == "MR":
            volume = load_volume([path])
            image = volume.voxels[0]
            assert volume.voxels.shape == (1, header.Rows, header.Columns)
            assert volume.sources[0].sop_instance_uid == header.SOPInstanceUID
        else:
            loaded = load_radiograph(path)
            image = loaded.pixels
            assert image.shape == (header.Rows, header.Columns)
            assert loaded.source.sop_instance_uid == header.SOPInstanceUID
    except DecodeError as exc:
        pytest.fail(f"{path.relative_to(DICOM_MSK)}: {exc}")
    assert image.dtype == np.float32
    assert np.all(np.isfinite(image))
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert float(image.max()) > float(image.min()), f"{path.name} loads as a flat image"


# --------------------------------------------------------------------------------------------- radiographs


def test_spacing_prefers_pixel_spacing_then_imager_pixel_spacing(tmp_path: Path) -> None:
    both = radiograph(new_study_uid(), rows=16, cols=12, modality="DX", laterality="R")
    both.ImagerPixelSpacing = [0.15, 0.16]
    both.PixelSpacing = [0.12, 0.13]
    got = load_radiograph(_save(both, tmp_path / "both.dcm"))
    assert got.spacing_mm == (0.12, 0.13)
    assert got.spacing_source == "PixelSpacing"

    del both.PixelSpacing
    got = load_radiograph(_save(both, tmp_path / "imager.dcm"))
    assert got.spacing_mm == (0.15, 0.16)
    assert got.spacing_source == "ImagerPixelSpacing"

    del both.ImagerPixelSpacing
    got = load_radiograph(_save(both, tmp_path / "none.dcm"))
    assert got.spacing_mm is None
    assert got.spacing_source is None


def test_radiograph_metadata(tmp_path: Path) -> None:
    dx = radiograph(new_study_uid(), rows=16, cols=12, modality="DX", laterality="R", view="AP")
    dx.Laterality = "L"  # Image Laterality wins over the series' Laterality
    got = load_radiograph(_save(dx, tmp_path / "dx.dcm"))
    assert (got.laterality, got.view, got.photometric, got.modality) == ("R", "AP", "MONOCHROME2", "DX")
    assert got.source.sop_instance_uid == dx.SOPInstanceUID
    assert got.source.series_uid == dx.SeriesInstanceUID
    assert got.source.frame_number is None
    assert got.patient_orientation == "L\\F"  # the builder writes ["L", "F"] for a right knee
    cr = radiograph(new_study_uid(), rows=16, cols=12, modality="CR", laterality="L")
    assert load_radiograph(_save(cr, tmp_path / "cr.dcm")).laterality == "L"


def test_multiframe_radiograph_uses_first_frame(tmp_path: Path) -> None:
    ds = radiograph(new_study_uid(), rows=20, cols=10, modality="CR")
    frames = np.stack([np.full((20, 10), 1000 + 500 * k) for k in range(3)])
    frames[0, :10] = 3000
    _set_u16(ds, frames)
    ds.NumberOfFrames = 3
    got = load_radiograph(_save(ds, tmp_path / "multi.dcm"))
    expected = _window_expected(frames[0].astype(np.float64), 2048.0, 4096.0, "LINEAR")
    np.testing.assert_allclose(got.pixels, expected, atol=1e-6)
    assert got.frames == 3
    assert got.source.frame_number == 1
    assert any("frame 1" in note for note in got.notes)


@pytest.mark.parametrize("photometric", ["RGB", "YBR_FULL"])
def test_colour_radiograph_gives_luminance(photometric: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, size=(12, 9, 3), dtype=np.uint8)
    ds = radiograph(new_study_uid(), rows=12, cols=9, modality="CR")
    for keyword in ("WindowCenter", "WindowWidth"):
        del ds[keyword]
    ds.SamplesPerPixel = 3
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PhotometricInterpretation = photometric
    luminance = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    if photometric == "RGB":
        ds.PixelData = rgb.tobytes()
    else:  # YBR_FULL (PS3.3 C.7.6.3.1.2): Y = 0.299 R + 0.587 G + 0.114 B, Cb/Cr offset by 128
        r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
        cb = -0.1687 * r - 0.3313 * g + 0.5 * b + 128
        cr = 0.5 * r - 0.4187 * g - 0.0813 * b + 128
        ybr = np.stack([luminance, cb, cr], axis=-1)
        ds.PixelData = np.clip(np.rint(ybr), 0, 255).astype(np.uint8).tobytes()
    got = load_radiograph(_save(ds, tmp_path / f"{photometric}.dcm"))
    assert got.pixels.shape == (12, 9)
    tolerance = 1e-6 if photometric == "RGB" else 2.5 / 255  # YBR: rounding of the stored samples
    np.testing.assert_allclose(got.pixels, luminance / 255.0, atol=tolerance)
    assert got.photometric == photometric


def test_undecodable_files_raise_decode_error_naming_the_file(tmp_path: Path) -> None:
    text = tmp_path / "notes.dcm"
    text.write_text("not a DICOM file")
    with pytest.raises(DecodeError, match=r"notes\.dcm"):
        load_radiograph(text)

    ds = radiograph(new_study_uid(), rows=16, cols=12)
    ds.PixelData = ds.PixelData[:100]  # truncated pixel data
    broken = _save(ds, tmp_path / "truncated.dcm")
    with pytest.raises(DecodeError, match=r"truncated\.dcm"):
        load_radiograph(broken)
    with pytest.raises(DecodeError, match=r"truncated\.dcm"):
        decode_pixels(broken)

    del ds.PixelData
    with pytest.raises(DecodeError, match=r"nopixels\.dcm.*no Pixel Data"):
        load_radiograph(_save(ds, tmp_path / "nopixels.dcm"))


# --------------------------------------------------------------------------------------------- volumes

# An oblique slice plane: row and column cosines orthonormal, normal mostly along x (sagittal).
ROW = np.array([0.1, 0.95, -0.2]) / np.linalg.norm([0.1, 0.95, -0.2])
_col = np.array([0.05, -0.2, -0.97])
COL = _col - np.dot(_col, ROW) * ROW
COL /= np.linalg.norm(COL)
NORMAL = np.cross(ROW, COL)


def _oblique_series(
    n: int, *, rows: int = 16, cols: int = 12, seed: int = 0
) -> tuple[list[Dataset], list[int]]:
    """SYNTHETIC MR slices along an oblique normal, in shuffled file order with shuffled Instance Numbers.

    Returns the datasets in file order and, for each, its true slice index along the normal. Slice ``k``
    holds values around ``100 * (k + 1)`` so that the order can be read off the pixels.
    """
    rng = np.random.default_rng(seed)
    datasets = mr_series(new_study_uid(), n_slices=n, rows=rows, cols=cols)
    origin = np.array([-20.0, 35.0, 10.0])
    for k, ds in enumerate(datasets):
        # In-plane jitter must not affect the order: only the projection on the normal does.
        shift = rng.normal(size=2) * 5.0
        position = origin + 3.3 * k * NORMAL + shift[0] * ROW + shift[1] * COL
        ds.ImageOrientationPatient = [float(v) for v in (*ROW, *COL)]
        ds.ImagePositionPatient = [float(v) for v in position]
        ds.RescaleSlope = 1.5
        ds.RescaleIntercept = -20
        _set_u16(ds, 100 * (k + 1) + rng.integers(0, 50, size=(rows, cols)))
    order = [int(i) for i in rng.permutation(n)]
    numbers = rng.permutation(n) + 1
    shuffled = [datasets[i] for i in order]
    for ds, number in zip(shuffled, numbers, strict=True):
        ds.InstanceNumber = int(number)
    return shuffled, order


def _expected_voxels(stacked_stored: np.ndarray, slope: float = 1.5, intercept: float = -20.0) -> np.ndarray:
    values = stacked_stored.astype(np.float64) * slope + intercept
    low, high = np.percentile(values, [0.5, 99.5])
    return np.clip((values - low) / (high - low), 0.0, 1.0)


def test_volume_sorted_by_position_along_oblique_normal(tmp_path: Path) -> None:
    datasets, truth = _oblique_series(7)
    paths = [_save(ds, tmp_path / f"s{i:02d}.dcm") for i, ds in enumerate(datasets)]
    volume = load_volume(paths)

    by_truth = sorted(range(len(datasets)), key=lambda i: truth[i])
    assert [s.sop_instance_uid for s in volume.sources] == [datasets[i].SOPInstanceUID for i in by_truth]
    assert all(s.frame_number is None for s in volume.sources)
    np.testing.assert_allclose(volume.normal, NORMAL, atol=1e-6)
    assert volume.plane == "sagittal"
    depth = volume.positions @ NORMAL
    assert np.all(np.diff(depth) > 0)
    assert volume.spacing[2] == pytest.approx(3.3, abs=1e-3)
    assert volume.spacing[:2] == (0.5, 0.5)
    np.testing.assert_allclose(volume.orientation, [*ROW, *COL], atol=1e-9)
    stored = np.stack([datasets[i].pixel_array for i in by_truth])
    assert volume.voxels.shape == (7, 16, 12)
    assert volume.voxels.dtype == np.float32
    np.testing.assert_allclose(volume.voxels, _expected_voxels(stored), atol=1e-5)
    assert volume.notes == []


def _enhanced(datasets: list[Dataset], *, shared_orientation: bool) -> Dataset:
    """A SYNTHETIC Enhanced MR multi-frame instance with the slices of ``datasets`` as frames (same order)."""
    first = datasets[0]
    ds = Dataset()
    ds.file_meta = first.file_meta.copy()
    uid = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ENHANCED_MR_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "Modality"):
        setattr(ds, keyword, getattr(first, keyword))
    ds.SOPClassUID = ENHANCED_MR_STORAGE
    ds.SOPInstanceUID = uid
    ds.Laterality = "R"
    ds.NumberOfFrames = len(datasets)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = first.Rows, first.Columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = b"".join(d.PixelData for d in datasets)

    def item(**values: object) -> DicomSequence:
        element = Dataset()
        for key, value in values.items():
            setattr(element, key, value)
        return DicomSequence([element])

    shared = Dataset()
    shared.PixelMeasuresSequence = item(PixelSpacing=[0.5, 0.5], SliceThickness=3.0)
    shared.PixelValueTransformationSequence = item(RescaleSlope=1.5, RescaleIntercept=-20, RescaleType="US")
    if shared_orientation:
        shared.PlaneOrientationSequence = item(ImageOrientationPatient=list(first.ImageOrientationPatient))
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    frames = []
    for number, source in enumerate(datasets, start=1):
        frame = Dataset()
        frame.PlanePositionSequence = item(ImagePositionPatient=list(source.ImagePositionPatient))
        frame.FrameContentSequence = item(InStackPositionNumber=number)
        if not shared_orientation:
            frame.PlaneOrientationSequence = item(
                ImageOrientationPatient=list(source.ImageOrientationPatient)
            )
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    return ds


@pytest.mark.parametrize("shared_orientation", [True, False])
def test_enhanced_mr_multiframe_loads_in_the_same_order(shared_orientation: bool, tmp_path: Path) -> None:
    datasets, truth = _oblique_series(6, seed=4)
    single = load_volume([_save(ds, tmp_path / f"s{i}.dcm") for i, ds in enumerate(datasets)])
    enhanced = _enhanced(datasets, shared_orientation=shared_orientation)
    multi = load_volume([_save(enhanced, tmp_path / "enhanced.dcm")])

    by_truth = sorted(range(len(datasets)), key=lambda i: truth[i])
    assert [s.frame_number for s in multi.sources] == [i + 1 for i in by_truth]
    assert {s.sop_instance_uid for s in multi.sources} == {enhanced.SOPInstanceUID}
    np.testing.assert_allclose(multi.voxels, single.voxels, atol=1e-6)
    np.testing.assert_allclose(multi.positions, single.positions, atol=1e-6)
    assert multi.plane == single.plane == "sagittal"
    assert multi.laterality == "R"
    assert multi.spacing == pytest.approx(single.spacing)


def test_mixed_sizes_keep_the_majority_stack(tmp_path: Path) -> None:
    big, _ = _oblique_series(5, rows=16, cols=12, seed=1)
    small, _ = _oblique_series(2, rows=8, cols=8, seed=2)
    paths = [_save(ds, tmp_path / f"big{i}.dcm") for i, ds in enumerate(big)]
    paths += [_save(ds, tmp_path / f"small{i}.dcm") for i, ds in enumerate(small)]
    volume = load_volume(sorted(paths, key=lambda p: p.name, reverse=True))  # small files first
    assert volume.voxels.shape == (5, 16, 12)
    assert {s.sop_instance_uid for s in volume.sources} == {ds.SOPInstanceUID for ds in big}
    assert len(volume.notes) == 1
    assert "small0.dcm" in volume.notes[0] and "small1.dcm" in volume.notes[0]
    assert "8x8" in volume.notes[0]


def test_mixed_orientations_keep_the_majority_stack(tmp_path: Path) -> None:
    sagittal = mr_series(new_study_uid(), n_slices=4, plane="sagittal", rows=8, cols=8)
    axial = mr_series(new_study_uid(), n_slices=2, plane="axial", rows=8, cols=8)
    paths = [_save(ds, tmp_path / f"a{i}.dcm") for i, ds in enumerate(axial)]
    paths += [_save(ds, tmp_path / f"s{i}.dcm") for i, ds in enumerate(sagittal)]
    volume = load_volume(paths)
    assert volume.plane == "sagittal"
    assert len(volume.sources) == 4
    assert any("a0.dcm" in note and "a1.dcm" in note for note in volume.notes)


def test_volume_drops_undecodable_slices_and_fails_without_any(tmp_path: Path) -> None:
    datasets, _ = _oblique_series(3, seed=6)
    datasets[1].PixelData = datasets[1].PixelData[:10]
    paths = [_save(ds, tmp_path / f"v{i}.dcm") for i, ds in enumerate(datasets)]
    volume = load_volume(paths)
    assert len(volume.sources) == 2
    assert any("v1.dcm" in note for note in volume.notes)
    with pytest.raises(DecodeError, match=r"v1\.dcm"):
        load_volume([paths[1]])
    with pytest.raises(DecodeError, match="empty series"):
        load_volume([])


def test_volume_refuses_too_many_slices(tmp_path: Path) -> None:
    paths = [tmp_path / f"x{i}.dcm" for i in range(MAX_SLICES + 1)]  # refused before any file is read
    with pytest.raises(SeriesTooLarge, match=str(MAX_SLICES)):
        load_volume(paths)
    datasets, _ = _oblique_series(1, seed=7)
    datasets[0].NumberOfFrames = MAX_SLICES + 1  # header says too many frames
    with pytest.raises(SeriesTooLarge):
        load_volume([_save(datasets[0], tmp_path / "many.dcm")])
