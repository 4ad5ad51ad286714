"""SYNTHETIC DICOM builders only the tests need, on top of the demo's (``orthonode.peers.synthetic``).

``mr_series`` builds a single-frame MR series (MR Image IOD, PS3.3 A.4) labelled SYNTHETIC like every
object of the package's builders, which it reuses (common modules, seeded noise pixels); those builders
are re-exported here so that a test imports its study data from one place. ``dataset_bytes`` is a
DICOM Part 10 file (PS3.10 7) in memory.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydicom import Dataset, dcmwrite
from pydicom.uid import UID, generate_uid

from orthonode.peers.synthetic import (
    CR_IMAGE_STORAGE,
    DX_FOR_PRESENTATION_STORAGE,
    SYNTHETIC_COMMENT,
    SYNTHETIC_PATIENT_ID,
    SYNTHETIC_PATIENT_NAME,
    base_dataset,
    knee_radiograph_from_png,
    new_study_uid,
    radiograph,
    set_pixels_u16,
    smooth_noise,
    write_all,
)

__all__ = [
    "CR_IMAGE_STORAGE",
    "DX_FOR_PRESENTATION_STORAGE",
    "MR_IMAGE_STORAGE",
    "PLANE_ORIENTATION",
    "SYNTHETIC_COMMENT",
    "SYNTHETIC_PATIENT_ID",
    "SYNTHETIC_PATIENT_NAME",
    "Plane",
    "dataset_bytes",
    "knee_radiograph_from_png",
    "mr_series",
    "new_study_uid",
    "radiograph",
    "study_uids",
    "write_all",
]

MR_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.4")

Plane = Literal["sagittal", "coronal", "axial"]

# Row and column direction cosines (patient LPS) per acquisition plane.
PLANE_ORIENTATION: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
}


def mr_series(
    study_uid: str,
    *,
    n_slices: int = 5,
    plane: Plane = "sagittal",
    description: str = "PD FS SAG",
    body_part: str = "KNEE",
    laterality: str = "R",
    rows: int = 64,
    cols: int = 64,
    series_number: int = 1,
    seed: int = 0,
    patient_id: str = SYNTHETIC_PATIENT_ID,
    pixel_spacing_mm: float = 0.5,
    slice_thickness_mm: float = 3.0,
    accession: str = "SYNTHACC1",
) -> list[Dataset]:
    """A synthetic single-frame MR series (MR Image Storage) of ``n_slices`` parallel slices.

    ImageOrientationPatient follows ``plane``; ImagePositionPatient steps by ``slice_thickness_mm``
    along the slice normal, centred on the origin. 16-bit unsigned MONOCHROME2, 12 bits stored.
    """
    if plane not in PLANE_ORIENTATION:
        raise ValueError(f"plane must be one of {sorted(PLANE_ORIENTATION)}, not {plane!r}")
    if n_slices < 1:
        raise ValueError("n_slices must be at least 1")
    rng = np.random.default_rng(seed)
    row_dir, col_dir = (np.array(v) for v in PLANE_ORIENTATION[plane])
    series_uid = str(generate_uid())
    frame_of_reference = str(generate_uid())
    out: list[Dataset] = []
    for index in range(n_slices):
        ds = base_dataset(
            MR_IMAGE_STORAGE,
            study_uid,
            series_uid,
            modality="MR",
            patient_id=patient_id,
            patient_name=SYNTHETIC_PATIENT_NAME,
            comment=SYNTHETIC_COMMENT,
            accession=accession,
        )
        ds.SeriesNumber = series_number
        ds.SeriesDescription = description
        ds.BodyPartExamined = body_part.upper()
        ds.Laterality = laterality
        ds.PatientPosition = "FFS"
        ds.ProtocolName = description
        # Frame of Reference
        ds.FrameOfReferenceUID = frame_of_reference
        ds.PositionReferenceIndicator = ""
        # General Image
        ds.InstanceNumber = index + 1
        ds.AcquisitionNumber = 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        offset = (index - (n_slices - 1) / 2.0) * slice_thickness_mm
        _set_image_plane(ds, row_dir, col_dir, rows, cols, pixel_spacing_mm, slice_thickness_mm, offset)
        _set_mr_image(ds, description)
        set_pixels_u16(ds, smooth_noise(rows, cols, rng, 50.0, 3000.0), bits_stored=12)
        ds.WindowCenter = 1500
        ds.WindowWidth = 3000
        out.append(ds)
    return out


def _set_image_plane(
    ds: Dataset,
    row_dir: np.ndarray,
    col_dir: np.ndarray,
    rows: int,
    cols: int,
    pixel_spacing_mm: float,
    slice_thickness_mm: float,
    offset_mm: float,
) -> None:
    """Image Plane module (PS3.3 C.7.6.2): a slice centred on the origin, ``offset_mm`` along the
    normal."""
    normal = np.cross(row_dir, col_dir)
    origin = (
        -(cols * pixel_spacing_mm / 2.0) * row_dir
        - (rows * pixel_spacing_mm / 2.0) * col_dir
        + offset_mm * normal
    )
    ds.ImageOrientationPatient = [float(v) for v in (*row_dir, *col_dir)]
    ds.ImagePositionPatient = [round(float(v), 4) + 0.0 for v in origin]
    ds.PixelSpacing = [pixel_spacing_mm, pixel_spacing_mm]
    ds.SliceThickness = slice_thickness_mm
    ds.SpacingBetweenSlices = slice_thickness_mm
    ds.SliceLocation = round(float(np.dot(origin, normal)), 4) + 0.0


def _set_mr_image(ds: Dataset, description: str) -> None:
    """MR Image module (PS3.3 C.8.3.1): a 2D fat-suppressed (when the description says FS) spin echo."""
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = ["SK", "SP"]
    ds.ScanOptions = "FS" if "FS" in description.upper().split() else ""
    ds.MRAcquisitionType = "2D"
    ds.RepetitionTime = 3000.0
    ds.EchoTime = 30.0
    ds.EchoTrainLength = 8
    ds.MagneticFieldStrength = 3.0


def dataset_bytes(ds: Dataset) -> bytes:
    """The dataset as a DICOM Part 10 file in memory (e.g. for ``Orthanc.upload``)."""
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def study_uids(datasets: Sequence[Dataset]) -> set[str]:
    """The distinct StudyInstanceUIDs of ``datasets``."""
    return {str(ds.StudyInstanceUID) for ds in datasets}
