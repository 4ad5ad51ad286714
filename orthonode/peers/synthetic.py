"""Builders of the SYNTHETIC radiographs the demo sends (pydicom 3), clearly labelled as such.

Every synthetic object has PatientName ``SYNTHETIC^KNEE``, a ``SYNTH-...`` PatientID and ImageComments
``SYNTHETIC TEST DATA``; pixels are seeded noise, no real patient data. The builders aim at objects that
dciodvfy (dicom3tools) reports without errors for their IOD: Digital X-Ray For Presentation (PS3.3
A.26) and Computed Radiography (PS3.3 A.2).

``knee_radiograph_from_png`` is the exception: it wraps a REAL de-identified knee radiograph crop (Chen
2018, from the OAI, CC BY 4.0, ``../shared/data/knee_kl224``) as a DX image for demos.

Written files use Explicit VR Little Endian and names from a counter (never from UIDs). The builders the
tests alone need (MR series, in-memory Part 10 bytes) live in ``tests/support/peers/synthetic.py`` and
build on :func:`base_dataset`, :func:`smooth_noise` and :func:`set_pixels_u16` here;
``orthonode.peers.films`` wraps real full-size films with :func:`set_pixels_u8` and :func:`code_sequence`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import numpy as np
from pydicom import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRLittleEndian,
    generate_uid,
)

DX_FOR_PRESENTATION_STORAGE = UID("1.2.840.10008.5.1.4.1.1.1.1")
CR_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.1")

SYNTHETIC_PATIENT_NAME = "SYNTHETIC^KNEE"
SYNTHETIC_PATIENT_ID = "SYNTH-0001"
SYNTHETIC_COMMENT = "SYNTHETIC TEST DATA"
FIXED_DATE = "20240102"
FIXED_TIME = "101500"
MANUFACTURER = "orthonode test factory"

# SNOMED CT codes for the anatomic region of the few body parts the tests use (DICOM CID 4031).
ANATOMY_CODES: dict[str, tuple[str, str]] = {
    "KNEE": ("72696002", "Knee"),
    "HIP": ("24136001", "Hip joint"),
    "SHOULDER": ("16982005", "Shoulder"),
    "ANKLE": ("70258002", "Ankle joint"),
    "HAND": ("85562004", "Hand"),
}

# SNOMED CT codes of projection views (DICOM CID 4010) for ViewCodeSequence.
VIEW_CODES: dict[str, tuple[str, str]] = {
    "PA": ("272479007", "postero-anterior"),
    "AP": ("399348003", "antero-posterior"),
    "LAT": ("49370004", "Lateral"),
    "LL": ("49370004", "Lateral"),
    "RL": ("49370004", "Lateral"),
}


def new_study_uid() -> str:
    """A fresh Study Instance UID."""
    return str(generate_uid())


# --------------------------------------------------------------------------------------------- common


def _file_meta(sop_class: UID, sop_instance: UID) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def base_dataset(
    sop_class: UID,
    study_uid: str,
    series_uid: str,
    *,
    modality: str,
    patient_id: str,
    patient_name: str,
    comment: str,
    accession: str,
) -> Dataset:
    """A new instance with its file meta and the Patient, General Study, General Series, General
    Equipment and General Image attributes every builder shares (PS3.3 C.7.1.1, C.7.2.1, C.7.3.1,
    C.7.5.1, C.7.6.1)."""
    sop_instance = generate_uid()
    ds = Dataset()
    ds.file_meta = _file_meta(sop_class, sop_instance)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    # Patient
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    # General Study
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = FIXED_DATE
    ds.StudyTime = FIXED_TIME
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = accession
    ds.StudyDescription = "SYNTHETIC MSK TEST STUDY" if comment == SYNTHETIC_COMMENT else "MSK DEMO STUDY"
    # General Series
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesDate = FIXED_DATE
    ds.SeriesTime = FIXED_TIME
    # General Equipment
    ds.Manufacturer = MANUFACTURER
    ds.InstitutionName = "SYNTHETIC"
    # General Image
    ds.ContentDate = FIXED_DATE
    ds.ContentTime = FIXED_TIME
    ds.ImageComments = comment
    ds.BurnedInAnnotation = "NO"
    return ds


def smooth_noise(rows: int, cols: int, rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    """Seeded smooth-ish noise in [low, high]: coarse noise upsampled, a blob, fine noise on top."""
    coarse = rng.random((max(2, rows // 8 + 1), max(2, cols // 8 + 1)))
    up = np.kron(coarse, np.ones((8, 8)))[:rows, :cols]
    kernel = np.ones(5) / 5.0
    up = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="same"), 1, up)
    up = np.apply_along_axis(lambda c: np.convolve(c, kernel, mode="same"), 0, up)
    yy, xx = np.mgrid[0:rows, 0:cols]
    blob = np.exp(-(((yy - rows / 2) / (rows / 3)) ** 2 + ((xx - cols / 2) / (cols / 3)) ** 2))
    img = 0.5 * up + 0.4 * blob + 0.1 * rng.random((rows, cols))
    img = (img - img.min()) / max(float(img.max() - img.min()), 1e-9)
    return low + img * (high - low)


def set_pixels_u16(ds: Dataset, pixels: np.ndarray, bits_stored: int) -> None:
    """``pixels`` as 16-bit unsigned MONOCHROME2 Pixel Data (Image Pixel module, PS3.3 C.7.6.3)."""
    arr = np.ascontiguousarray(pixels.astype("<u2"))
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(arr.shape[0]), int(arr.shape[1])
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = arr.tobytes()
    ds["PixelData"].VR = "OW"


def set_pixels_u8(ds: Dataset, pixels: np.ndarray) -> None:
    """``pixels`` (uint8) as 8-bit MONOCHROME2 Pixel Data, padded to an even length (PS3.3 C.7.6.3,
    PS3.5 7.1.1)."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    data = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    ds.PixelData = data + b"\x00" if len(data) % 2 else data
    ds["PixelData"].VR = "OB"


def _anatomic_region(body_part: str) -> DicomSequence:
    return code_sequence(ANATOMY_CODES.get(body_part.upper()))


def code_sequence(code: tuple[str, str] | None) -> DicomSequence:
    """A one-item SNOMED CT (``SCT``) code sequence of ``(value, meaning)``; empty for ``None``."""
    if code is None:
        return DicomSequence([])
    item = Dataset()
    item.CodeValue, item.CodeMeaning = code
    item.CodingSchemeDesignator = "SCT"
    return DicomSequence([item])


# --------------------------------------------------------------------------------------------- DX / CR


def _projection_common(
    ds: Dataset,
    *,
    modality: str,
    laterality: str,
    body_part: str,
    view: str,
    series_number: int,
    description: str,
) -> None:
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description
    ds.BodyPartExamined = body_part.upper()
    ds.ViewPosition = view
    ds.InstanceNumber = 1
    ds.PatientOrientation = ["L", "F"] if laterality == "R" else ["R", "F"]
    if modality == "DX":
        # DX Series, DX Anatomy Imaged, DX Image, DX Detector
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.ImageLaterality = laterality
        ds.AnatomicRegionSequence = _anatomic_region(body_part)
        ds.PixelIntensityRelationship = "LIN"
        ds.PixelIntensityRelationshipSign = 1
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 1
        ds.RescaleType = "US"
        ds.PresentationLUTShape = "IDENTITY"
        ds.LossyImageCompression = "00"
        ds.DetectorType = "DIRECT"
        ds.PositionerType = "NONE"
        ds.ViewCodeSequence = code_sequence(VIEW_CODES.get(view.upper()))
        ds.AcquisitionContextSequence = DicomSequence([])
    else:
        ds.Laterality = laterality


def radiograph(
    study_uid: str,
    *,
    laterality: Literal["L", "R"] = "L",
    body_part: str = "KNEE",
    rows: int = 256,
    cols: int = 200,
    view: str = "PA",
    modality: Literal["DX", "CR"] = "DX",
    seed: int = 0,
    series_number: int = 1,
    patient_id: str = SYNTHETIC_PATIENT_ID,
    description: str | None = None,
    pixel_spacing_mm: float = 0.15,
    accession: str = "SYNTHACC1",
) -> Dataset:
    """A synthetic projection radiograph: DX For Presentation (ImageLaterality) or CR (Laterality)."""
    if modality not in {"DX", "CR"}:
        raise ValueError(f"modality must be 'DX' or 'CR', not {modality!r}")
    if laterality not in {"L", "R"}:
        raise ValueError(f"laterality must be 'L' or 'R', not {laterality!r}")
    sop_class = DX_FOR_PRESENTATION_STORAGE if modality == "DX" else CR_IMAGE_STORAGE
    ds = base_dataset(
        sop_class,
        study_uid,
        str(generate_uid()),
        modality=modality,
        patient_id=patient_id,
        patient_name=SYNTHETIC_PATIENT_NAME,
        comment=SYNTHETIC_COMMENT,
        accession=accession,
    )
    _projection_common(
        ds,
        modality=modality,
        laterality=laterality,
        body_part=body_part,
        view=view,
        series_number=series_number,
        description=description or f"{body_part.upper()} {view} {laterality}",
    )
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    if modality == "DX":
        ds.ImagerPixelSpacing = [pixel_spacing_mm, pixel_spacing_mm]
    else:
        ds.PixelSpacing = [pixel_spacing_mm, pixel_spacing_mm]
    pixels = smooth_noise(rows, cols, np.random.default_rng(seed), 100.0, 4000.0)
    set_pixels_u16(ds, pixels, bits_stored=12)
    ds.WindowCenter = 2048
    ds.WindowWidth = 4096
    return ds


def knee_radiograph_from_png(
    png_path: Path,
    study_uid: str,
    laterality: Literal["L", "R"],
    *,
    patient_id: str = "PNG-DEMO-0001",
    patient_name: str = "DEMO^KNEE",
    series_number: int = 1,
    accession: str = "PNGACC1",
    nominal_pixel_spacing_mm: float = 0.5,
) -> Dataset:
    """Wrap a real 8-bit grayscale knee PNG (Chen 2018 / OAI crop) as a DX For Presentation image.

    The PNG carries no pixel spacing; ``nominal_pixel_spacing_mm`` is written as ImagerPixelSpacing and
    must not be used for measurements. ImageType is DERIVED and DerivationDescription names the source.
    """
    from PIL import Image

    png_path = Path(png_path)
    with Image.open(png_path) as img:
        if img.mode not in {"L", "LA", "P", "RGB", "RGBA"}:
            raise ValueError(f"{png_path}: expected an 8-bit PNG, got mode {img.mode}")
        pixels = np.asarray(img.convert("L"), dtype=np.uint8)
    ds = base_dataset(
        DX_FOR_PRESENTATION_STORAGE,
        study_uid,
        str(generate_uid()),
        modality="DX",
        patient_id=patient_id,
        patient_name=patient_name,
        comment=f"Converted from PNG {png_path.name}: Chen 2018 knee KL dataset (OAI), CC BY 4.0",
        accession=accession,
    )
    _projection_common(
        ds,
        modality="DX",
        laterality=laterality,
        body_part="KNEE",
        view="PA",
        series_number=series_number,
        description="KNEE PA (from PNG)",
    )
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.DerivationDescription = "8-bit grayscale PNG crop wrapped as DICOM; nominal pixel spacing"
    ds.ImagerPixelSpacing = [nominal_pixel_spacing_mm, nominal_pixel_spacing_mm]
    set_pixels_u8(ds, pixels)
    ds.WindowCenter = 128
    ds.WindowWidth = 256
    return ds


# --------------------------------------------------------------------------------------------- output


def write_all(datasets: Iterable[Dataset], directory: Path, prefix: str = "img") -> list[Path]:
    """Write each dataset as ``{prefix}{counter:05d}.dcm`` in ``directory``; return the paths in order."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for counter, ds in enumerate(datasets, start=1):
        path = directory / f"{prefix}{counter:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
