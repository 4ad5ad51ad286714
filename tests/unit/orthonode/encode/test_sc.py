"""The key image writer: RGB Secondary Capture with heatmap overlay and burned-in text."""

from __future__ import annotations

import datetime
import io
import math
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from support.peers.dcmtk import dciodvfy

from orthonode.encode import codes as oc
from orthonode.encode import sc as scm
from orthonode.encode import uids
from orthonode.inference.findings import Finding, ModelIdentity, SourceImage

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
CREATED = datetime.datetime(2024, 5, 6, 7, 8, 9)
TRAINED = ModelIdentity(name="OrthoFoundation KL grade", version="enc 3f2a9c1d / head 1.0.0")
UNTRAINED = ModelIdentity(name="OrthoFoundation KL grade", version="random / head 0.0.0", trained=False)
SIZE = 224
BLOB = (150, 150)  # heatmap peak (row, col) in key-image pixels
BLOB_VARIANCE = 800.0


def _key_image(h: int = SIZE, w: int = SIZE) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return ((xx + yy) / (h + w - 2)).astype(np.float32)


def _heatmap(h: int = SIZE, w: int = SIZE) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.exp(-((yy - BLOB[0]) ** 2 + (xx - BLOB[1]) ** 2) / BLOB_VARIANCE).astype(np.float32)


def _finding(
    source: Dataset,
    *,
    laterality: str | None = "L",
    model: ModelIdentity = TRAINED,
    key_image: np.ndarray | None = None,
    heatmap: np.ndarray | None = None,
    task: str = "kl_grade",
    label: int = 2,
) -> Finding:
    codes = oc.TASK_CONCEPTS[task]
    src = SourceImage(str(source.SOPClassUID), str(source.SOPInstanceUID), str(source.SeriesInstanceUID))
    image = _key_image() if key_image is None else key_image
    return Finding(
        task=task,
        title=codes.concept.meaning,
        finding_site=codes.finding_site,
        laterality=laterality,
        concept=codes.concept,
        value=codes.values[label],
        probability=0.61,
        probabilities={},
        sources=(src,),
        model=model,
        key_source=src,
        key_image=image,
        heatmap=_heatmap(*image.shape[:2]) if heatmap is None else heatmap,
    )


@pytest.fixture
def radiograph(shared_data: Path) -> Dataset:
    return pydicom.dcmread(shared_data / "dicom_msk" / "other" / "pydicom_cspine_CR1_6154.dcm")


def _synthetic_mr() -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = MR_IMAGE_STORAGE, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = (
        "Synthetic^Knee",
        "SYN0001",
        "19700101",
        "F",
    )
    ds.AccessionNumber, ds.StudyID, ds.StudyDate, ds.StudyTime = "ACC42", "S1", "20240101", "101010"
    ds.ReferringPhysicianName = ""
    ds.Modality, ds.Laterality = "MR", "R"
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    return ds


def _build(finding: Finding, source: Dataset, **kwargs: object) -> pydicom.Dataset:
    study = str(source.StudyInstanceUID)
    return scm.build_key_image(
        finding,
        source,
        series_uid=uids.key_image_series_uid(study, 1),
        sop_uid=uids.key_image_sop_uid(study, 1, finding.task, finding.laterality),
        created=CREATED,
        **kwargs,  # type: ignore[arg-type]
    )


def _reread(ds: Dataset, tmp_path: Path, name: str = "sc.dcm") -> Dataset:
    path = tmp_path / name
    ds.save_as(path, enforce_file_format=True)
    return pydicom.dcmread(path)


def _expected_shape(h: int, w: int) -> tuple[int, int, int]:
    k = max(1, math.ceil(512 / min(h, w)))
    return (h * k, w * k, 3)


# ------------------------------------------------------------------------------------------------ pixels


@pytest.mark.parametrize(("h", "w"), [(224, 224), (300, 200), (600, 800)])
def test_pixels_are_rgb_uint8_of_display_size(h: int, w: int, radiograph: Dataset, tmp_path: Path) -> None:
    finding = _finding(radiograph, key_image=_key_image(h, w), heatmap=np.zeros((h, w), np.float32))
    ds = _reread(_build(finding, radiograph), tmp_path)
    pixels = ds.pixel_array
    assert pixels.dtype == np.uint8
    assert pixels.shape == _expected_shape(h, w)
    assert (ds.PhotometricInterpretation, ds.SamplesPerPixel, ds.BitsAllocated) == ("RGB", 3, 8)
    assert (ds.Rows, ds.Columns) == pixels.shape[:2]


def test_overlay_changes_pixels_where_heatmap_is_high(radiograph: Dataset) -> None:
    finding = _finding(radiograph)
    with_overlay = _build(finding, radiograph).pixel_array.astype(int)
    without = _build(finding, radiograph, overlay=False).pixel_array.astype(int)
    k = _expected_shape(SIZE, SIZE)[0] // SIZE
    r, c = BLOB[0] * k + k // 2, BLOB[1] * k + k // 2
    box = (slice(r - 10, r + 10), slice(c - 10, c + 10))
    assert np.abs(with_overlay[box] - without[box]).mean() > 40
    # Independent blend at the peak: heat 1 -> alpha 0.6 of white over the gray value.
    gray = (BLOB[0] + BLOB[1]) / (2 * SIZE - 2)
    expected = round(255 * (0.4 * gray + 0.6))
    assert np.all(np.abs(with_overlay[r, c] - expected) <= 3), (with_overlay[r, c], expected)
    assert np.all(np.abs(without[r, c] - round(255 * gray)) <= 3)
    # Far from the blob (and from the text box) nothing changes.
    far = (slice(-60, None), slice(0, 60))
    assert np.array_equal(with_overlay[far], without[far])
    # The overlay is coloured: red exceeds blue on the blob's flank.
    flank = with_overlay[r + 12 * k // 3 + 10, c]
    assert flank[0] > flank[2] + 20


def test_text_is_burned_in(radiograph: Dataset) -> None:
    finding = _finding(radiograph, heatmap=np.zeros((SIZE, SIZE), np.float32))
    burned = _build(finding, radiograph).pixel_array.astype(int)
    plain = scm.compose(finding.key_image, None).astype(int)
    top_left = (slice(0, 60), slice(0, 300))
    assert np.abs(burned[top_left] - plain[top_left]).mean() > 10
    bottom_right = (slice(-100, None), slice(-100, None))
    assert np.array_equal(burned[bottom_right], plain[bottom_right])


def test_text_lines_trained_and_untrained(radiograph: Dataset) -> None:
    trained = scm.text_lines(_finding(radiograph))
    assert any("Kellgren-Lawrence grade 2" in line and "0.61" in line for line in trained)
    assert any(TRAINED.name in line and TRAINED.version in line for line in trained)
    assert "NOT FOR DIAGNOSTIC USE" in trained
    untrained = scm.text_lines(_finding(radiograph, model=UNTRAINED))
    assert "UNTRAINED MODEL - NOT A FINDING" in untrained
    assert not any("Kellgren-Lawrence grade 2" in line for line in untrained), "no finding without UNTRAINED"
    assert any("UNTRAINED" in line and UNTRAINED.version in line for line in untrained)
    assert "NOT FOR DIAGNOSTIC USE" in untrained


def test_untrained_key_image(radiograph: Dataset) -> None:
    trained = _build(_finding(radiograph), radiograph)
    untrained = _build(_finding(radiograph, model=UNTRAINED), radiograph)
    assert "UNTRAINED" in untrained.SeriesDescription and "UNTRAINED" not in trained.SeriesDescription
    assert not np.array_equal(trained.pixel_array[:60], untrained.pixel_array[:60])
    models = [str(e.get("ManufacturerModelName", "")) for e in untrained.ContributingEquipmentSequence]
    assert any("UNTRAINED" in m for m in models)


# ------------------------------------------------------------------------------------------------ header


def test_header_same_study_new_series(radiograph: Dataset, tmp_path: Path) -> None:
    ds = _reread(_build(_finding(radiograph), radiograph), tmp_path)
    assert ds.SOPClassUID == SECONDARY_CAPTURE
    assert ds.StudyInstanceUID == radiograph.StudyInstanceUID
    assert ds.PatientID == radiograph.PatientID and ds.PatientName == radiograph.PatientName
    assert ds.SeriesInstanceUID != radiograph.SeriesInstanceUID
    assert ds.SeriesInstanceUID == uids.key_image_series_uid(str(radiograph.StudyInstanceUID), 1)
    assert ds.SeriesNumber == 9902
    assert ds.BurnedInAnnotation == "YES"
    assert ds.ConversionType == "WSD"
    assert ds.Laterality == "L"
    assert "PixelSpacing" not in ds
    assert "NOT FOR DIAGNOSTIC USE" in ds.SeriesDescription
    assert list(ds.PatientOrientation) == list(radiograph.PatientOrientation)
    (ref,) = ds.SourceImageSequence
    assert ref.ReferencedSOPInstanceUID == radiograph.SOPInstanceUID
    ours = [e for e in ds.ContributingEquipmentSequence if e.get("ManufacturerModelName") == TRAINED.name]
    assert len(ours) == 1 and ours[0].SoftwareVersions == TRAINED.version
    assert ours[0].PurposeOfReferenceCodeSequence[0].CodeValue == "109102"


def test_laterality_from_source_when_finding_has_none(tmp_path: Path) -> None:
    mr = _synthetic_mr()
    ds = _reread(_build(_finding(mr, laterality=None, task="acl_injury", label=1), mr), tmp_path)
    assert ds.Laterality == "R"
    assert ds.PatientOrientation == ""  # the source has none: empty (Type 2), not a guess
    assert ds.StudyInstanceUID == mr.StudyInstanceUID and ds.PatientName == "Synthetic^Knee"


def test_no_laterality_when_neither_has_one(radiograph: Dataset) -> None:
    ds = _build(_finding(radiograph, laterality=None), radiograph)
    assert "Laterality" not in ds


@pytest.mark.parametrize("model", [TRAINED, UNTRAINED], ids=["trained", "untrained"])
def test_dciodvfy_clean(model: ModelIdentity, radiograph: Dataset, tmp_path: Path) -> None:
    path = tmp_path / "sc.dcm"
    _build(_finding(radiograph, model=model), radiograph).save_as(path, enforce_file_format=True)
    errors, warnings = dciodvfy(path)
    assert errors == []
    assert warnings == []  # no warning is accepted for the key image


def test_dciodvfy_clean_for_mr_source(tmp_path: Path) -> None:
    mr = _synthetic_mr()
    path = tmp_path / "sc_mr.dcm"
    _build(_finding(mr, laterality="R", task="acl_injury", label=1), mr).save_as(
        path, enforce_file_format=True
    )
    errors, warnings = dciodvfy(path)
    assert errors == [] and warnings == []


# ---------------------------------------------------------------------------- png, determinism, errors


def test_png_matches_pixels(radiograph: Dataset, tmp_path: Path) -> None:
    ds = _reread(_build(_finding(radiograph), radiograph), tmp_path)
    path = scm.key_image_png(ds, tmp_path / "png" / "key.png")
    assert path.exists()
    with Image.open(path) as png:
        assert png.mode == "RGB"
        assert np.array_equal(np.asarray(png), ds.pixel_array)
    array_path = scm.key_image_png(ds.pixel_array, tmp_path / "key2.png")
    assert array_path.read_bytes() == path.read_bytes()
    with pytest.raises(scm.KeyImageError):
        scm.key_image_png(np.zeros((4, 4), np.uint8), tmp_path / "bad.png")


def test_deterministic(radiograph: Dataset) -> None:
    first, second = _build(_finding(radiograph), radiograph), _build(_finding(radiograph), radiograph)
    assert first.SOPInstanceUID == second.SOPInstanceUID
    a, b = io.BytesIO(), io.BytesIO()
    first.save_as(a, enforce_file_format=True)
    second.save_as(b, enforce_file_format=True)
    assert a.getvalue() == b.getvalue()


def test_bad_input(radiograph: Dataset) -> None:
    with pytest.raises(scm.KeyImageError, match="heatmap shape"):
        _build(_finding(radiograph, heatmap=np.zeros((10, 10), np.float32)), radiograph)
    with pytest.raises(scm.KeyImageError, match="2-D"):
        _build(_finding(radiograph, key_image=np.zeros((4, 4, 3), np.float32)), radiograph)
    with pytest.raises(scm.KeyImageError, match="NaN"):
        _build(_finding(radiograph, key_image=np.full((8, 8), np.nan, np.float32)), radiograph)
    with pytest.raises(scm.KeyImageError, match="key source"):
        _build(_finding(radiograph), _synthetic_mr())


def test_colormap_is_a_ramp() -> None:
    rgb = scm.colormap(np.array([0.0, 0.35, 0.7, 1.0]))
    assert np.allclose(rgb[0], 0) and np.allclose(rgb[-1], 1)
    brightness = scm.colormap(np.linspace(0, 1, 50)).sum(axis=-1)
    assert np.all(np.diff(brightness) >= 0)
