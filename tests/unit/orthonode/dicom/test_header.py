"""Tests of orthonode.dicom.header.read_header on real files (../shared/data/dicom_msk) and SYNTHETIC
datasets.

Synthetic datasets are built here with pydicom (UIDs from generate_uid, no patient data).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

from orthonode.dicom.contexts import StoreStatus
from orthonode.dicom.header import InstanceHeader, read_header
from orthonode.errors import RejectedInstance

MR = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
CR = "1.2.840.10008.5.1.4.1.1.1"
DX = "1.2.840.10008.5.1.4.1.1.1.1"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
SAGITTAL = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
CORONAL = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]

pytestmark = [
    pytest.mark.filterwarnings("ignore:Invalid value for VR UI"),
    pytest.mark.filterwarnings("ignore:The value length"),
]

DICOM_MSK = Path(__file__).resolve().parents[4].parent / "shared" / "data" / "dicom_msk"


def read(path: Path, sop_class: str | None = None, sop_instance: str | None = None) -> InstanceHeader:
    return read_header(path, affected_sop_class=sop_class, affected_sop_instance=sop_instance)


def rejected(path: Path, sop_class: str | None = None, sop_instance: str | None = None) -> RejectedInstance:
    with pytest.raises(RejectedInstance) as info:
        read(path, sop_class, sop_instance)
    return info.value


# --------------------------------------------------------------------------------------------- builders


def image_dataset(sop_class: str = MR, *, pixels: bool = True, rows: int = 16, cols: int = 16) -> Dataset:
    """A small SYNTHETIC image dataset with every identifier the node needs."""
    ds = Dataset()
    ds.SOPClassUID = UID(sop_class)
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "SYNTHETIC^KNEE"
    ds.PatientID = "SYNTH-0001"
    ds.Modality = "MR" if "4" in sop_class.split(".")[-2:] else "DX"
    ds.BodyPartExamined = "KNEE"
    ds.StudyDescription = "MRI KNEE RIGHT"
    ds.SeriesDescription = "SAG PD FS"
    ds.ProtocolName = "knee_pd_sag"
    ds.Laterality = "R"
    ds.ImageLaterality = "R"
    ds.InstanceNumber = 3
    ds.ScanningSequence = ["SE", "IR"]
    ds.SequenceName = "*tse2d1_5"
    ds.ImageOrientationPatient = SAGITTAL
    code = Dataset()
    code.CodeValue = "72696002"
    code.CodingSchemeDesignator = "SCT"
    code.CodeMeaning = "Knee"
    ds.AnatomicRegionSequence = Sequence([code])
    ds.ImageComments = "SYNTHETIC TEST DATA"
    ds.Rows = rows
    ds.Columns = cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    if pixels:
        ds.PixelData = (bytes(range(256)) * (rows * cols * 2 // 256 + 1))[: rows * cols * 2]
    return ds


def sr_dataset() -> Dataset:
    """A SYNTHETIC non-image object (Basic Text SR header, enough for the index)."""
    ds = Dataset()
    ds.SOPClassUID = UID(BASIC_TEXT_SR)
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "SR"
    ds.PatientName = "SYNTHETIC^KNEE"
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.ContentTemplateSequence = Sequence()
    ds.TextValue = "SYNTHETIC TEST DATA " * 4
    return ds


def save(ds: Dataset, path: Path, transfer_syntax: str = ExplicitVRLittleEndian) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.get("SOPClassUID") or UID(MR)
    meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID") or generate_uid()
    meta.TransferSyntaxUID = UID(transfer_syntax)
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)
    return path


def encapsulated(ds: Dataset, transfer_syntax: str, fragments: int = 3) -> Dataset:
    """Replace the pixels by encapsulated (never decoded here) fragments, as in a J2K or RLE file."""
    frame = bytes(range(251)) * 8
    ds.PixelData = encapsulate([frame[i::fragments] for i in range(fragments)])
    ds["PixelData"].VR = "OB"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
    return ds


def element_offsets(path: Path) -> dict[int, tuple[int, int]]:
    """Top-level (tag -> (header offset, value offset)) of a Little Endian file."""
    ds = dcmread(path)
    out: dict[int, tuple[int, int]] = {}
    for elem in ds._dict.values():
        value_tell = getattr(elem, "value_tell", None)  # raw (not yet converted) elements only
        if value_tell is None:
            continue
        header = (
            8
            if elem.is_implicit_VR
            else 12
            if elem.VR in ("OB", "OW", "OF", "SQ", "UT", "UN", "UC", "UR", "OD", "OL", "OV")
            else 8
        )
        out[int(elem.tag)] = (value_tell - header, value_tell)
    return out


def truncate(src: Path, dst: Path, length: int) -> Path:
    dst.write_bytes(src.read_bytes()[:length])
    return dst


# ------------------------------------------------------------------------------------------- synthetic, whole


def test_synthetic_mr_fields(tmp_path: Path) -> None:
    ds = image_dataset()
    path = save(ds, tmp_path / "mr.dcm")
    header = read(path, MR, str(ds.SOPInstanceUID))
    assert header == InstanceHeader(
        sop_class_uid=MR,
        sop_instance_uid=str(ds.SOPInstanceUID),
        study_uid=str(ds.StudyInstanceUID),
        series_uid=str(ds.SeriesInstanceUID),
        transfer_syntax_uid=ExplicitVRLittleEndian,
        modality="MR",
        body_part="KNEE",
        study_description="MRI KNEE RIGHT",
        series_description="SAG PD FS",
        protocol_name="knee_pd_sag",
        anatomic_region=(("72696002", "SCT", "Knee"),),
        laterality="R",
        image_laterality="R",
        image_orientation=tuple(SAGITTAL),
        scanning_sequence="SE\\IR",
        sequence_name="*tse2d1_5",
        instance_number=3,
    )


@pytest.mark.parametrize(
    "syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless, RLELossless]
)
def test_synthetic_transfer_syntaxes(tmp_path: Path, syntax: str) -> None:
    ds = image_dataset()
    if syntax in (JPEG2000Lossless, RLELossless):
        encapsulated(ds, syntax)
    header = read(save(ds, tmp_path / "x.dcm", syntax))
    assert header.transfer_syntax_uid == syntax
    assert header.sop_instance_uid == ds.SOPInstanceUID
    assert header.image_orientation == tuple(SAGITTAL)


def test_deflated_file_is_accepted(tmp_path: Path) -> None:
    ds = image_dataset(rows=64, cols=64)
    path = save(ds, tmp_path / "deflated.dcm", DeflatedExplicitVRLittleEndian)
    assert path.stat().st_size < 64 * 64 * 2  # the pixels compress well
    assert read(path).sop_instance_uid == ds.SOPInstanceUID


def test_optional_fields_absent(tmp_path: Path) -> None:
    ds = image_dataset()
    for keyword in (
        "BodyPartExamined",
        "StudyDescription",
        "SeriesDescription",
        "ProtocolName",
        "AnatomicRegionSequence",
        "Laterality",
        "ImageLaterality",
        "ImageOrientationPatient",
        "ScanningSequence",
        "SequenceName",
        "InstanceNumber",
        "Modality",
    ):
        delattr(ds, keyword)
    header = read(save(ds, tmp_path / "bare.dcm"))
    assert header.modality is None
    assert header.body_part is None
    assert header.study_description is None
    assert header.anatomic_region == ()
    assert header.laterality is None
    assert header.image_laterality is None
    assert header.image_orientation is None
    assert header.instance_number is None


def test_odd_values_are_normalised(tmp_path: Path) -> None:
    ds = image_dataset()
    ds.Laterality = "X"  # not L or R
    ds.ImageLaterality = "B"
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0]  # not 6 values
    ds.StudyDescription = "  " + "D" * 70
    header = read(save(ds, tmp_path / "odd.dcm"))
    assert header.laterality is None
    assert header.image_laterality == "B"
    assert header.image_orientation is None
    assert header.study_description == "D" * 64


def test_enhanced_mr_orientation_from_shared_functional_groups(tmp_path: Path) -> None:
    ds = image_dataset(ENHANCED_MR)
    del ds.ImageOrientationPatient
    plane = Dataset()
    plane.ImageOrientationPatient = CORONAL
    shared = Dataset()
    shared.PlaneOrientationSequence = Sequence([plane])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    ds.NumberOfFrames = 1
    header = read(save(ds, tmp_path / "emr.dcm"), ENHANCED_MR)
    assert header.sop_class_uid == ENHANCED_MR
    assert header.image_orientation == tuple(CORONAL)


def test_enhanced_mr_orientation_from_first_per_frame_group(tmp_path: Path) -> None:
    ds = image_dataset(ENHANCED_MR)
    del ds.ImageOrientationPatient
    ds.SharedFunctionalGroupsSequence = Sequence([Dataset()])  # no Plane Orientation there
    frames = []
    for iop in (SAGITTAL, CORONAL):
        plane = Dataset()
        plane.ImageOrientationPatient = iop
        frame = Dataset()
        frame.PlaneOrientationSequence = Sequence([plane])
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.NumberOfFrames = 2
    header = read(save(ds, tmp_path / "emr.dcm"))
    assert header.image_orientation == tuple(SAGITTAL)


def test_float_pixel_data_counts_as_pixels(tmp_path: Path) -> None:
    ds = image_dataset(pixels=False)
    ds.FloatPixelData = b"\x00" * (16 * 16 * 4)
    assert read(save(ds, tmp_path / "float.dcm")).sop_instance_uid == ds.SOPInstanceUID


def test_non_image_without_pixels_is_accepted(tmp_path: Path) -> None:
    ds = sr_dataset()
    header = read(save(ds, tmp_path / "sr.dcm"), BASIC_TEXT_SR, str(ds.SOPInstanceUID))
    assert header.sop_class_uid == BASIC_TEXT_SR
    assert header.modality == "SR"
    assert header.image_orientation is None


# --------------------------------------------------------------------------------------------- rejections


def test_image_without_pixel_data_cannot_be_understood(tmp_path: Path) -> None:
    exc = rejected(save(image_dataset(pixels=False), tmp_path / "nopix.dcm"))
    assert exc.status == StoreStatus.CANNOT_UNDERSTAND == 0xC210
    assert "MR Image Storage without Pixel Data" in exc.reason
    assert exc.quarantine is True


@pytest.mark.parametrize(
    ("keyword", "label"),
    [
        ("SOPClassUID", "SOP Class UID (0008,0016)"),
        ("SOPInstanceUID", "SOP Instance UID (0008,0018)"),
        ("StudyInstanceUID", "Study Instance UID (0020,000D)"),
        ("SeriesInstanceUID", "Series Instance UID (0020,000E)"),
    ],
)
@pytest.mark.parametrize("how", ["absent", "empty"])
def test_missing_identifier(tmp_path: Path, keyword: str, label: str, how: str) -> None:
    ds = image_dataset()
    if how == "absent":
        delattr(ds, keyword)
    else:
        setattr(ds, keyword, "")
    exc = rejected(save(ds, tmp_path / "missing.dcm"))
    assert exc.status == StoreStatus.MISSING_IDENTIFIER == 0xC212
    assert exc.reason == f"missing {label}"
    assert exc.quarantine is True


@pytest.mark.parametrize(
    "keyword", ["SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"]
)
@pytest.mark.parametrize("bad", ["1.2.03", "1..2", "../../etc", "1.2.x", "1." + "2" * 63])
def test_invalid_uid(tmp_path: Path, keyword: str, bad: str) -> None:
    ds = image_dataset()
    setattr(ds, keyword, bad)
    exc = rejected(save(ds, tmp_path / "bad.dcm"))
    assert exc.status == StoreStatus.INVALID_UID == 0xC213
    assert exc.reason.startswith("invalid ")
    assert repr(bad[:80]) in exc.reason


def test_sop_class_mismatch(tmp_path: Path) -> None:
    ds = image_dataset(MR)
    exc = rejected(save(ds, tmp_path / "mr.dcm"), CR, str(ds.SOPInstanceUID))
    assert exc.status == StoreStatus.SOP_CLASS_MISMATCH == 0xA900
    assert MR in exc.reason and CR in exc.reason


def test_instance_uid_mismatch(tmp_path: Path) -> None:
    ds = image_dataset(MR)
    exc = rejected(save(ds, tmp_path / "mr.dcm"), MR, str(generate_uid()))
    assert exc.status == StoreStatus.IDENTIFIER_MISMATCH == 0xC214
    assert exc.quarantine is True


def test_not_dicom_cannot_be_understood(tmp_path: Path) -> None:
    path = tmp_path / "junk.dcm"
    path.write_bytes(b"this is not a DICOM file at all" * 10)
    exc = rejected(path)
    assert exc.status == StoreStatus.CANNOT_UNDERSTAND
    assert exc.reason.startswith("cannot parse dataset: ")


def test_empty_file_cannot_be_understood(tmp_path: Path) -> None:
    path = tmp_path / "empty.dcm"
    path.write_bytes(b"")
    assert rejected(path).status == StoreStatus.CANNOT_UNDERSTAND


# --------------------------------------------------------------------------------------------- truncation


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless])
def test_synthetic_truncated_in_pixel_data(tmp_path: Path, syntax: str) -> None:
    ds = image_dataset(rows=32, cols=32)
    if syntax != ExplicitVRLittleEndian:
        encapsulated(ds, syntax)
    whole = save(ds, tmp_path / "whole.dcm", syntax)
    read(whole)  # the whole file is fine
    size = whole.stat().st_size
    pixel_value = element_offsets(whole)[0x7FE00010][1]
    cuts = sorted({pixel_value, pixel_value + 1, (pixel_value + size) // 2, size - 9, size - 8, size - 1})
    for cut in cuts:
        exc = rejected(truncate(whole, tmp_path / "cut.dcm", cut))
        assert exc.status == StoreStatus.CANNOT_UNDERSTAND, (cut, exc.reason)
        assert exc.reason.startswith("truncated dataset: "), (cut, exc.reason)
        assert exc.quarantine is True


def test_synthetic_truncated_inside_a_long_value(tmp_path: Path) -> None:
    ds = image_dataset()
    ds.ImageComments = "SYNTHETIC TEST DATA " * 100  # longer than the reader's defer size
    whole = save(ds, tmp_path / "whole.dcm")
    value = element_offsets(whole)[0x00204000][1]
    exc = rejected(truncate(whole, tmp_path / "cut.dcm", value + 100))
    assert exc.status == StoreStatus.CANNOT_UNDERSTAND
    assert "truncated dataset: element (0020,4000)" in exc.reason


def test_synthetic_cut_in_pixel_data_element_header(tmp_path: Path) -> None:
    """Cut between the Pixel Data tag and its value: an image class without Pixel Data."""
    whole = save(image_dataset(), tmp_path / "whole.dcm")
    header_at = element_offsets(whole)[0x7FE00010][0]
    exc = rejected(truncate(whole, tmp_path / "cut.dcm", header_at + 4))
    assert exc.status == StoreStatus.CANNOT_UNDERSTAND


@pytest.mark.parametrize("where", ["pixel length field", "meta group length", "meta version length"])
def test_cut_inside_length_field_is_cannot_understand(tmp_path: Path, where: str) -> None:
    """pydicom raises struct.error / BytesLengthException here: it must become 0xC210, not escape (which
    the handler would answer 0xA700 'retry later', without quarantine)."""
    whole = save(image_dataset(), tmp_path / "whole.dcm")
    cut = {
        "pixel length field": element_offsets(whole)[0x7FE00010][0] + 10,  # OW: 12-byte header
        "meta group length": 128 + 4 + 8 + 2,  # inside the UL value of (0002,0000)
        "meta version length": 128 + 4 + 12 + 10,  # inside the 4-byte length of (0002,0001) OB
    }[where]
    assert rejected(truncate(whole, tmp_path / "cut.dcm", cut)).status == StoreStatus.CANNOT_UNDERSTAND


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless])
def test_every_prefix_of_an_image_is_rejected(tmp_path: Path, syntax: str) -> None:
    """Whatever byte a transfer stops at, an image object is refused with a named status, never an
    unexpected exception and never success."""
    ds = image_dataset(rows=8, cols=8)
    if syntax == RLELossless:
        encapsulated(ds, syntax)
    whole = save(ds, tmp_path / "whole.dcm", syntax)
    data = whole.read_bytes()
    pixels = element_offsets(whole)[0x7FE00010][1]
    # Every byte of the header and the first and last bytes of the pixels; a sample in between.
    cuts = sorted({*range(pixels + 24), *range(pixels, len(data), 29), *range(len(data) - 24, len(data))})
    assert cuts[-1] == len(data) - 1
    path = tmp_path / "cut.dcm"
    statuses = set()
    for cut in cuts:
        path.write_bytes(data[:cut])
        statuses.add(rejected(path).status)
    assert statuses <= {StoreStatus.CANNOT_UNDERSTAND, StoreStatus.MISSING_IDENTIFIER}
    assert StoreStatus.CANNOT_UNDERSTAND in statuses


def test_truncated_deflated_file_cannot_be_understood(tmp_path: Path) -> None:
    ds = image_dataset(rows=64, cols=64)
    data = save(ds, tmp_path / "d.dcm", DeflatedExplicitVRLittleEndian).read_bytes()
    path = tmp_path / "cut.dcm"
    # (not len - 1: pydicom pads the deflated stream to an even length with a byte zlib never reads)
    for cut in (len(data) - 2, len(data) - 20, (len(data) + 400) // 2):
        path.write_bytes(data[:cut])
        assert rejected(path).status == StoreStatus.CANNOT_UNDERSTAND, cut


@pytest.mark.parametrize("case", ["sr cut in last header", "mr cut before study uid"])
def test_cut_inside_element_header_is_cannot_understand(tmp_path: Path, case: str) -> None:
    if case == "sr cut in last header":
        whole = save(sr_dataset(), tmp_path / "whole.dcm")
        last_header = max(offset for offset, _ in element_offsets(whole).values())
        cut = last_header + 5
    else:
        whole = save(image_dataset(), tmp_path / "whole.dcm")
        cut = element_offsets(whole)[0x0020000D][0] + 5
    assert rejected(truncate(whole, tmp_path / "cut.dcm", cut)).status == StoreStatus.CANNOT_UNDERSTAND


# --------------------------------------------------------------------------------------------- real files


def real_file(relative: str) -> Path:
    path = DICOM_MSK / relative
    if not path.is_file():
        pytest.skip(f"real DICOM sample {relative} not found under {DICOM_MSK}")
    return path


REAL_FILES = [
    "wg04/MR3_knee_UNC.dcm",
    "wg04/MR3_knee_J2KR.dcm",
    "wg04/MR3_knee_J2KI.dcm",
    "wg04/MR3_knee_RLE.dcm",
    "wg04/MR3_knee_JLSL.dcm",
    "wg04/MR3_knee_JPLY.dcm",
    "wg04/MR2_shoulder_UNC.dcm",
    "wg04/RG2_hip_J2KI.dcm",
    "wg04/RG3_tibia_RLE.dcm",
    "other/highdicom_dx_image.dcm",
    "other/pydicom_cspine_CR1_6154.dcm",
]


@pytest.mark.parametrize("relative", REAL_FILES)
def test_real_file_matches_pydicom(relative: str) -> None:
    path = real_file(relative)
    ds = dcmread(path, stop_before_pixels=True)
    header = read(path, str(ds.SOPClassUID), str(ds.SOPInstanceUID))
    assert header.sop_class_uid == ds.SOPClassUID
    assert header.sop_instance_uid == ds.SOPInstanceUID
    assert header.study_uid == ds.StudyInstanceUID
    assert header.series_uid == ds.SeriesInstanceUID
    assert header.transfer_syntax_uid == ds.file_meta.TransferSyntaxUID
    assert header.modality == ds.Modality
    assert header.body_part == (ds.get("BodyPartExamined") or None)
    assert header.instance_number == int(ds.InstanceNumber)
    iop = ds.get("ImageOrientationPatient")
    assert header.image_orientation == (tuple(float(v) for v in iop) if iop else None)


@pytest.mark.parametrize(
    ("relative", "modality", "body_part", "orientation", "laterality"),
    [
        ("wg04/MR3_knee_UNC.dcm", "MR", None, (1.0, 0.0, 0.0, 0.0, 0.0, -1.0), None),
        ("wg04/MR2_shoulder_UNC.dcm", "MR", None, (0.569486, 0.822001, 0.0, -0.0, 0.0, -1.0), None),
        ("wg04/RG2_hip_J2KI.dcm", "CR", "HIP", None, None),
        ("wg04/RG3_tibia_RLE.dcm", "CR", "EXTREMITY", None, "R"),
        ("other/highdicom_dx_image.dcm", "DX", "THORAX", None, None),
    ],
)
def test_real_file_known_values(
    relative: str,
    modality: str,
    body_part: str | None,
    orientation: tuple[float, ...] | None,
    laterality: str | None,
) -> None:
    header = read(real_file(relative))
    assert header.modality == modality
    assert header.body_part == body_part
    assert header.image_orientation == orientation
    assert header.laterality == laterality


@pytest.mark.parametrize(
    "relative", ["wg04/MR3_knee_UNC.dcm", "wg04/MR3_knee_J2KR.dcm", "wg04/MR3_knee_RLE.dcm"]
)
def test_real_file_truncated(tmp_path: Path, relative: str) -> None:
    data = real_file(relative).read_bytes()
    pixel_value = element_offsets(real_file(relative))[0x7FE00010][1]
    size = len(data)
    for cut in sorted({pixel_value + 2, (pixel_value + size) // 2, size - 1000, size - 200, size - 1}):
        path = tmp_path / "cut.dcm"
        path.write_bytes(data[:cut])
        exc = rejected(path)
        assert exc.status == StoreStatus.CANNOT_UNDERSTAND, (relative, cut, exc.reason)
        assert exc.reason.startswith("truncated dataset: "), (relative, cut, exc.reason)


def test_real_file_lengths_are_checked_against_the_pixel_data(tmp_path: Path) -> None:
    """A cut in the encapsulated fragments is named as such (not accepted because the header looks whole)."""
    data = real_file("wg04/MR3_knee_J2KR.dcm").read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[:-4])  # the Sequence Delimitation Item loses its length
    exc = rejected(path)
    assert exc.status == StoreStatus.CANNOT_UNDERSTAND
    assert "Sequence Delimitation Item" in exc.reason
