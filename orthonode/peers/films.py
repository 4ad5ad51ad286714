"""A REAL full-size radiograph (a JPEG without header) wrapped as a Digital X-Ray Image Storage - For
Presentation instance (PS3.3 A.26) whose header the code makes, and says so (issue 14).

The pixels are real: FracAtlas films (Abedeen et al. 2023, Scientific Data 10:521, CC BY 4.0) as kept
in ``../shared/data/knee_fullsize`` -- 8-bit grayscale JPEG at half their original size, no DICOM
header, no pixel spacing. Everything else is made here and labelled: Image Comments (0020,4000) reads
``SYNTHETIC HEADER: real pixels from FracAtlas <file>, CC BY 4.0``, Derivation Description (0008,2111)
says how the pixels were wrapped, PatientName is ``DEMO^FILM``. The header's content is the caller's
choice, so that tests and the demo can send what a PACS would: Image Laterality (``B`` for a film with
both knees), Patient Orientation (``L\\F``, the standard frontal orientation: the rows run towards the
patient's left, the columns towards the feet -- PS3.3 C.7.6.1.1.1), View Position with its CID 4010 View
Code (``AP``, ``LL``, ... or none at all: the header is then silent about the projection and the node's
image classifier decides), Body Part Examined with its Anatomic Region code (``KNEE``, or a wrong one).

Pixel spacing: none, as the films have none. The DX Detector Module (PS3.3 C.8.11.4) makes Imager Pixel
Spacing (0018,1164) Type 1, so without ``imager_pixel_spacing_mm`` dciodvfy reports exactly that one
attribute missing: the instance says honestly that nothing is known of its scale rather than invent one.

Pixel values: 8 bits stored as they are, or 12 bits in 16 (``bits=16``, the JPEG's values times
4095/255); in both a VOI window (PS3.3 C.11.2.1.2) whose linear function maps the stored range onto
``[0, 1]`` exactly, so the node reads the pixels the JPEG holds. The JPEG was lossy: Lossy Image
Compression (0028,2110) is ``01`` with method ISO_10918_1 and the file's own ratio (PS3.3 C.7.6.1.1.5).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import generate_uid

from orthonode.peers.synthetic import (
    ANATOMY_CODES,
    DX_FOR_PRESENTATION_STORAGE,
    base_dataset,
    code_sequence,
    set_pixels_u8,
    set_pixels_u16,
)

__all__ = ["FILM_PATIENT_ID", "FILM_PATIENT_NAME", "STANDARD_ORIENTATION", "film_dx", "read_jpeg"]

FILM_PATIENT_NAME = "DEMO^FILM"
FILM_PATIENT_ID = "FILM-DEMO-0001"
#: Patient Orientation of a frontal film read in the standard orientation (the patient's right on the
#: image's left): rows towards the patient's Left, columns towards the Feet.
STANDARD_ORIENTATION = ("L", "F")
LATERALITIES = ("R", "L", "B", "U")  # Image Laterality (0020,0062), PS3.3 C.8.11.2 (Type 1)
BITS = (8, 16)
#: View Position (0018,5101) -> its View Code (CID 4010 "DX View", SNOMED CT).
VIEW_CODES: dict[str, tuple[str, str]] = {
    "AP": ("399348003", "antero-posterior"),
    "PA": ("272479007", "postero-anterior"),
    "LL": ("399173006", "left lateral"),
    "RL": ("399198007", "right lateral"),
    "LAT": ("399067008", "lateral"),
}


def read_jpeg(path: Path) -> np.ndarray:
    """The film's pixels as ``uint8 [rows, columns]`` (grayscale; a colour file is converted)."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("L"), dtype=np.uint8)


def _set_pixels(ds: Dataset, pixels: np.ndarray, bits: int) -> None:
    """Image Pixel (PS3.3 C.7.6.3) and a window that maps the stored range onto [0, 1] exactly (its
    linear function: ``(x - (c - 0.5)) / (w - 1) + 0.5`` with ``c = w / 2`` and ``w = 2**bits_stored``)."""
    if bits == 16:
        set_pixels_u16(ds, np.rint(pixels.astype(np.float64) * (4095.0 / 255.0)), bits_stored=12)
        ds.WindowCenter, ds.WindowWidth = 2048, 4096
        return
    set_pixels_u8(ds, pixels)
    ds.WindowCenter, ds.WindowWidth = 128, 256


def _dx_modules(
    ds: Dataset,
    *,
    laterality: str,
    body_part: str,
    view: str | None,
    orientation: tuple[str, str] | None,
    spacing_mm: float | None,
) -> None:
    """DX Series, DX Anatomy Imaged, DX Image, DX Detector and DX Positioning (PS3.3 C.8.11.1-5)."""
    ds.Modality = "DX"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.BodyPartExamined = body_part.upper()
    ds.AnatomicRegionSequence = code_sequence(ANATOMY_CODES.get(body_part.upper()))
    ds.ImageLaterality = laterality
    ds.PatientOrientation = list(orientation) if orientation else ""
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.PixelIntensityRelationship = "LIN"
    ds.PixelIntensityRelationshipSign = 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    ds.PresentationLUTShape = "IDENTITY"
    ds.DetectorType = "SCINTILLATOR"
    ds.PositionerType = "NONE"
    ds.AcquisitionContextSequence = DicomSequence([])
    if view:
        ds.ViewPosition = view.upper()
        ds.ViewCodeSequence = code_sequence(VIEW_CODES.get(view.upper()))
    if spacing_mm is not None:
        ds.ImagerPixelSpacing = [spacing_mm, spacing_mm]


def film_dx(
    jpeg: Path,
    study_uid: str,
    *,
    laterality: str = "B",
    view: str | None = "AP",
    body_part: str = "KNEE",
    orientation: tuple[str, str] | None = STANDARD_ORIENTATION,
    bits: int = 8,
    imager_pixel_spacing_mm: float | None = None,
    series_number: int = 1,
    series_description: str | None = None,
    patient_id: str = FILM_PATIENT_ID,
    accession: str = "FILMACC1",
) -> Dataset:
    """The film ``jpeg`` as a DX For Presentation instance of ``study_uid`` (new Series and SOP
    Instance UIDs) with the header described in the module docstring.

    ``view=None`` leaves View Position and View Code Sequence out and the Series Description names no
    projection (``"<BODY PART> FILM"``): the header is silent about the view. Image Comments and the
    Series Description never carry the file's folder name (``knee_lateral/...`` would name the view).
    """
    if laterality not in LATERALITIES:
        raise ValueError(f"laterality must be one of {LATERALITIES}, not {laterality!r}")
    if bits not in BITS:
        raise ValueError(f"bits must be 8 or 16, not {bits!r}")
    jpeg = Path(jpeg)
    pixels = read_jpeg(jpeg)
    ds = base_dataset(
        DX_FOR_PRESENTATION_STORAGE,
        study_uid,
        str(generate_uid()),
        modality="DX",
        patient_id=patient_id,
        patient_name=FILM_PATIENT_NAME,
        comment=f"SYNTHETIC HEADER: real pixels from FracAtlas {jpeg.name}, CC BY 4.0",
        accession=accession,
    )
    ds.SeriesNumber, ds.InstanceNumber = series_number, 1
    ds.SeriesDescription = series_description or " ".join(
        part for part in (body_part.upper(), view.upper() if view else None, "FILM") if part
    )
    _dx_modules(
        ds,
        laterality=laterality,
        body_part=body_part,
        view=view,
        orientation=orientation,
        spacing_mm=imager_pixel_spacing_mm,
    )
    ds.DerivationDescription = (
        f"8-bit JPEG film {jpeg.name} (FracAtlas, half its original size) wrapped as DICOM; header made "
        "by orthonode.peers.films, no pixel spacing known"
    )
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.LossyImageCompressionRatio = round(pixels.size / max(jpeg.stat().st_size, 1), 2)
    _set_pixels(ds, pixels, bits)
    return ds
