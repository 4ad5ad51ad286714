"""One projection radiograph from a stored instance, as float32 ``[H, W]`` in ``[0, 1]``, bone bright,
with its pixel spacing (PS3.3 10.7.1.3: Pixel Spacing, else Imager Pixel Spacing), laterality, view and
source. Intensities go through :mod:`orthonode.inference.intensity` (PS3.3 C.11)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut

from orthonode.inference.decoding import DecodeError, read_dataset, stored_pixels
from orthonode.inference.dicom_fields import floats_of, frame_count, frame_header, source_image, text_of
from orthonode.inference.findings import SourceImage
from orthonode.inference.intensity import radiograph_to_unit, raster_to_unit
from orthonode.inference.views import ViewDecision, view_from_header

SpacingSource = Literal["PixelSpacing", "ImagerPixelSpacing"]


@dataclass(frozen=True, eq=False)
class Radiograph:
    """One projection radiograph ready for the model.

    Attributes:
        pixels: float32 ``[H, W]`` in ``[0, 1]``, bone bright (PS3.3 C.11 pipeline, MONOCHROME1 inverted).
        spacing_mm: ``(row spacing, column spacing)`` in mm -- the distance between the centres of
            adjacent rows, then adjacent columns (PS3.3 10.7.1.3) -- or ``None`` when the instance has none.
        spacing_source: which attribute gave ``spacing_mm``: ``PixelSpacing`` (0028,0030) (calibrated to the
            patient plane or equal to the detector spacing, PS3.3 C.8.11.4) or, when absent,
            ``ImagerPixelSpacing`` (0018,1164) (at the detector plane: includes the geometric magnification).
        laterality: Image Laterality (0020,0062), else the series' Laterality (0020,0060): ``L``, ``R``,
            ``B`` or ``U``; ``None`` when absent or empty.
        source: the instance (``frame_number=1`` when a multi-frame instance's first frame was used).
        view: View Position (0018,5101), e.g. ``AP``, ``PA``, ``LL``; ``None`` when absent or empty.
        photometric: the stored Photometric Interpretation (e.g. ``MONOCHROME1``, ``RGB``).
        modality: Modality (0008,0060).
        frames: the number of frames of the instance (only the first is used).
        notes: what was done that a reader should know (first frame of N, colour to luminance).
        patient_orientation: Patient Orientation (0020,0020), the patient directions of the rows and the
            columns joined with a backslash as stored (e.g. ``L\\F``); ``None`` when absent or empty.
        header_view: the projection the header names (:func:`orthonode.inference.views.view_from_header`:
            View Code Sequence, View Position, comments, descriptions); ``header_view.from_header`` is
            False when the header is silent, and the image decides. ``None`` only for a radiograph built
            by hand.
    """

    pixels: np.ndarray
    spacing_mm: tuple[float, float] | None
    spacing_source: SpacingSource | None
    laterality: str | None
    source: SourceImage
    view: str | None
    photometric: str
    modality: str = ""
    frames: int = 1
    notes: list[str] = field(default_factory=list)
    patient_orientation: str | None = None
    header_view: ViewDecision | None = None


def _pixel_spacing(ds: Dataset) -> tuple[tuple[float, float] | None, SpacingSource | None]:
    """Pixel Spacing, else Imager Pixel Spacing (PS3.3 10.7.1.3, C.8.11.4), as ``(row, column)`` mm."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        values = floats_of(ds.get(keyword), 2)
        if values is not None and values[0] > 0 and values[1] > 0:
            source: SpacingSource = "PixelSpacing" if keyword == "PixelSpacing" else "ImagerPixelSpacing"
            return (values[0], values[1]), source
    return None, None


def _colour_to_unit(pixels: np.ndarray, ds: Dataset, photometric: str) -> np.ndarray:
    """A colour frame to luminance in ``[0, 1]`` (ITU-R BT.601 weights, as :func:`raster_to_unit`).

    pydicom returns YBR_FULL / YBR_FULL_422 / YBR_ICT / YBR_RCT frames already converted to RGB; PALETTE
    COLOR frames are looked up through their palette (PS3.3 C.7.6.3.1.5) first. Samples of other widths
    than 8 bits are scaled onto the 16-bit range so that full scale maps to 1.
    """
    if photometric == "PALETTE COLOR":
        pixels = np.asarray(apply_color_lut(pixels, ds))
        descriptor = ds.get("RedPaletteColorLookupTableDescriptor")
        bits = int(descriptor[2]) if descriptor is not None else 8 * pixels.dtype.itemsize
    else:
        bits = int(ds.get("BitsStored", 8 * pixels.dtype.itemsize))
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"colour frame of shape {pixels.shape}, expected [rows, cols, 3]")
    if pixels.dtype == np.uint8 and bits == 8:
        return raster_to_unit(pixels)
    full_scale = float(2**bits - 1)
    scaled = np.clip(np.rint(pixels.astype(np.float64) * (65535.0 / full_scale)), 0, 65535)
    return raster_to_unit(scaled.astype(np.uint16))


def load_radiograph(path: Path) -> Radiograph:
    """One projection radiograph as float32 ``[H, W]`` in ``[0, 1]``, bone bright.

    Grayscale frames go through :func:`orthonode.inference.intensity.radiograph_to_unit` (Modality LUT,
    first VOI LUT item or first window with its VOI LUT Function, MONOCHROME1 inverted; a robust
    percentile window when the instance carries no VOI). A multi-frame instance gives its first frame
    (recorded in ``notes`` and in ``source.frame_number``); the functional groups of an enhanced instance
    supply that frame's rescale and window. Colour images (RGB, YBR, PALETTE COLOR) give their luminance.

    Raises:
        DecodeError: the file is not DICOM, has no pixels, cannot be decoded, or its frame is not 2-D.
    """
    path = Path(path)
    ds = read_dataset(path)
    frames = frame_count(ds)
    multi = frames > 1
    pixels = stored_pixels(ds, path, frame=0 if multi else None)
    photometric = text_of(ds, "PhotometricInterpretation") or "MONOCHROME2"
    notes: list[str] = []
    if multi:
        notes.append(f"multi-frame instance ({frames} frames): frame 1 used")
    try:
        if int(ds.get("SamplesPerPixel", 1) or 1) > 1 or photometric == "PALETTE COLOR":
            unit = _colour_to_unit(pixels, ds, photometric)
            notes.append(f"{photometric} converted to luminance")
        else:
            if pixels.ndim != 2:
                raise ValueError(f"frame of shape {pixels.shape}, expected [rows, cols]")
            unit = radiograph_to_unit(pixels, frame_header(ds, 0))
    except Exception as exc:
        raise DecodeError(
            f"{path.name}: cannot map pixels to intensities: {type(exc).__name__}: {exc}"
        ) from exc
    spacing, spacing_source = _pixel_spacing(ds)
    return Radiograph(
        pixels=np.ascontiguousarray(unit, dtype=np.float32),
        spacing_mm=spacing,
        spacing_source=spacing_source,
        laterality=text_of(ds, "ImageLaterality") or text_of(ds, "Laterality"),
        source=source_image(ds, 1 if multi else None),
        view=text_of(ds, "ViewPosition"),
        photometric=photometric,
        modality=text_of(ds, "Modality") or "",
        frames=frames,
        notes=notes,
        patient_orientation=_patient_orientation(ds),
        header_view=view_from_header(ds),
    )


def _patient_orientation(ds: Dataset) -> str | None:
    value = ds.get("PatientOrientation")
    if value is None:
        return None
    parts = [str(v).strip().upper() for v in (value if isinstance(value, MultiValue | list) else [value])]
    joined = "\\".join(parts)
    return joined if joined.strip("\\") else None
