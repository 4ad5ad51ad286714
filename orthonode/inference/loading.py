"""Pixels from stored DICOM files: single radiographs and MR volumes as float32 in ``[0, 1]``.

Decoding goes through pydicom's pixel handlers (GDCM, pylibjpeg-openjpeg, pyjpegls, pylibjpeg-rle,
Pillow). One gap remains with permissively licensed decoders: *JPEG Extended* (1.2.840.10008.1.2.4.51)
with 12-bit samples, which pydicom only decodes through the GPL-licensed pylibjpeg-libjpeg. GDCM itself
decodes it (its 12-bit IJG build), so for that syntax we call GDCM's reader directly.

Intensities are *not* handled here: the grayscale pipeline of PS3.3 C.11 (Modality LUT, VOI LUT / window
with VOI LUT Function, MONOCHROME1 inversion) and the per-volume robust percentile window live in
:mod:`orthonode.inference.intensity`, so that the node sees exactly the pixels the encoder was pretrained on.
This module adds what the node needs around it:

* :func:`load_radiograph` -- one projection image (first frame of a multi-frame instance), with its pixel
  spacing (PS3.3 10.7.1.3: Pixel Spacing, else Imager Pixel Spacing), laterality, view and source.
* :func:`load_volume` -- one MR (or other cross-sectional) series as a stack ``[S, H, W]`` ordered along the
  slice normal (PS3.3 C.7.6.2.1.1), from single-frame instances or Enhanced multi-frame instances (Per-frame
  and Shared Functional Groups, PS3.3 C.7.6.16), keeping the largest geometrically consistent stack.

Every failure to read or decode raises :class:`DecodeError` with the file name and the reason. Notes and
errors name files, never patients.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut
from pydicom.pixels import pixel_array as pydicom_pixel_array
from pydicom.uid import JPEGExtended12Bit

from orthonode.errors import OrthonodeError
from orthonode.inference.findings import SourceImage
from orthonode.inference.intensity import (
    DEFAULT_PERCENTILES,
    dicom_frame_to_unit,
    modality_family,
    modality_values,
    percentile_range,
    radiograph_to_unit,
    raster_to_unit,
)

__all__ = [
    "MAX_SLICES",
    "DecodeError",
    "Plane",
    "Radiograph",
    "SeriesTooLarge",
    "Volume",
    "decode_pixels",
    "load_radiograph",
    "load_volume",
    "plane_of_normal",
]

#: The most slices (frames) :func:`load_volume` accepts for one series.
MAX_SLICES = 2000

Plane = Literal["sagittal", "coronal", "axial"]
SpacingSource = Literal["PixelSpacing", "ImagerPixelSpacing"]

# Two slices belong to one stack when their direction cosines differ by less than this (about 0.06 degree)
# and their pixel spacings by less than this relative amount.
_ORIENTATION_TOLERANCE = 1e-3
_SPACING_RTOL = 1e-3
# Slice gaps further than this fraction from the median gap are reported as irregular spacing.
_GAP_RTOL = 0.1

# Functional group macros (PS3.3 C.7.6.16.2) whose attributes enter the per-frame header used by the
# intensity pipeline: Pixel Value Transformation (Rescale Slope / Intercept / Type) and Frame VOI LUT.
_INTENSITY_MACROS = ("PixelValueTransformationSequence", "FrameVOILUTSequence")
# Top-level attributes the intensity pipeline reads (PS3.3 C.7.6.3, C.11.1, C.11.2).
_INTENSITY_KEYWORDS = (
    "Modality",
    "PhotometricInterpretation",
    "SamplesPerPixel",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "ModalityLUTSequence",
    "VOILUTSequence",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
)


class DecodeError(OrthonodeError):
    """A stored instance whose pixels cannot be decoded (names the file and the reason)."""


class SeriesTooLarge(DecodeError):
    """A series with more than :data:`MAX_SLICES` slices (refused before decoding)."""


# --------------------------------------------------------------------------------------------- decoding


def _gdcm_pixels(path: Path) -> np.ndarray:
    import gdcm

    gdcm.Trace.WarningOff()
    gdcm.Trace.ErrorOff()
    reader = gdcm.ImageReader()
    reader.SetFileName(str(path))
    if not reader.Read():
        raise DecodeError(f"{path.name}: GDCM could not read the image")
    image = reader.GetImage()
    fmt = image.GetPixelFormat()
    dtypes = {
        gdcm.PixelFormat.UINT8: np.uint8,
        gdcm.PixelFormat.INT8: np.int8,
        gdcm.PixelFormat.UINT16: np.uint16,
        gdcm.PixelFormat.INT16: np.int16,
        gdcm.PixelFormat.UINT32: np.uint32,
        gdcm.PixelFormat.INT32: np.int32,
    }
    dtype = dtypes.get(fmt.GetScalarType())
    if dtype is None:
        raise DecodeError(f"{path.name}: unsupported GDCM scalar type {fmt.GetScalarTypeAsString()}")
    dims = [image.GetDimension(i) for i in range(image.GetNumberOfDimensions())]
    columns, rows = dims[0], dims[1]
    frames = dims[2] if len(dims) > 2 else 1
    samples = fmt.GetSamplesPerPixel()
    buffer = image.GetBuffer().encode("utf-8", "surrogateescape")
    pixels = np.frombuffer(buffer, dtype=dtype)
    shape = (frames, rows, columns, samples) if samples > 1 else (frames, rows, columns)
    if pixels.size != int(np.prod(shape)):
        raise DecodeError(f"{path.name}: GDCM returned {pixels.size} samples for shape {shape}")
    pixels = pixels.reshape(shape)
    return pixels[0] if frames == 1 else pixels


def _needs_gdcm(ds: Dataset) -> bool:
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    return bool(syntax == JPEGExtended12Bit and int(ds.get("BitsStored", 8)) > 8)


def _stored_pixels(ds: Dataset, path: Path, frame: int | None = None) -> np.ndarray:
    """Stored values of ``ds`` (read from ``path``): all frames (frames first), or only frame ``frame``.

    Raises:
        DecodeError: naming the file and the decoder's reason.
    """
    try:
        if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
            raise DecodeError(f"{path.name}: no Pixel Data in the instance")
        if _needs_gdcm(ds):
            pixels = _gdcm_pixels(path)
            multi = int(ds.get("NumberOfFrames", 1) or 1) > 1
            return pixels[frame] if (frame is not None and multi) else pixels
        if frame is not None and int(ds.get("NumberOfFrames", 1) or 1) > 1:
            return np.asarray(pydicom_pixel_array(ds, index=frame))
        return np.asarray(ds.pixel_array)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(f"{path.name}: cannot decode pixels: {type(exc).__name__}: {exc}") from exc


def _read(path: Path, *, pixels: bool = True) -> Dataset:
    try:
        return dcmread(path, stop_before_pixels=not pixels)
    except Exception as exc:
        raise DecodeError(f"{path.name}: not a readable DICOM file: {type(exc).__name__}: {exc}") from exc


def decode_pixels(path: Path) -> np.ndarray:
    """The stored pixel values of ``path`` (before Modality LUT), frames first for multi-frame images."""
    path = Path(path)
    return _stored_pixels(_read(path), path)


# --------------------------------------------------------------------------------------------- headers


def _text(ds: Dataset, keyword: str) -> str | None:
    """A stripped, upper-case string attribute; ``None`` when absent or empty."""
    value = ds.get(keyword)
    if value is None:
        return None
    text = str(value).strip().upper()
    return text or None


def _floats(value: Any, count: int) -> tuple[float, ...] | None:
    """``count`` finite numbers from a multi-valued element, or ``None`` when absent or malformed."""
    if value is None:
        return None
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if len(numbers) != count or not all(math.isfinite(v) for v in numbers):
        return None
    return numbers


def _positive_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _source(ds: Dataset, frame_number: int | None) -> SourceImage:
    return SourceImage(
        sop_class_uid=str(ds.get("SOPClassUID", "")),
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        frame_number=frame_number,
    )


def _frame_count(ds: Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def _functional_item(ds: Dataset, frame: int, keyword: str) -> Dataset | None:
    """The first item of functional group macro ``keyword`` for frame ``frame`` (0-based), per-frame first.

    PS3.3 C.7.6.16: a macro sits either in the Shared Functional Groups Sequence (all frames) or in the
    frame's item of the Per-frame Functional Groups Sequence.
    """
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and frame < len(per_frame):
        sequence = per_frame[frame].get(keyword)
        if sequence:
            item: Dataset = sequence[0]
            return item
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        sequence = shared[0].get(keyword)
        if sequence:
            item = sequence[0]
            return item
    return None


def _frame_header(ds: Dataset, frame: int) -> Dataset:
    """The header the intensity pipeline reads for one frame of an Enhanced multi-frame instance.

    The top-level intensity attributes overlaid by the frame's Pixel Value Transformation and Frame VOI LUT
    functional groups (PS3.3 C.7.6.16.2.9, C.7.6.16.2.10). Instances without functional groups use their
    own dataset.
    """
    if "PerFrameFunctionalGroupsSequence" not in ds and "SharedFunctionalGroupsSequence" not in ds:
        return ds
    header = Dataset()
    if hasattr(ds, "file_meta"):
        header.file_meta = ds.file_meta  # the endianness of OW LUT Data comes from the transfer syntax
    for keyword in _INTENSITY_KEYWORDS:
        if keyword in ds:
            header[keyword] = ds[keyword]
    for macro in _INTENSITY_MACROS:
        item = _functional_item(ds, frame, macro)
        if item is not None:
            for element in item:
                header[element.tag] = element
    return header


# --------------------------------------------------------------------------------------------- radiographs


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


def _pixel_spacing(ds: Dataset) -> tuple[tuple[float, float] | None, SpacingSource | None]:
    """Pixel Spacing, else Imager Pixel Spacing (PS3.3 10.7.1.3, C.8.11.4), as ``(row, column)`` mm."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        values = _floats(ds.get(keyword), 2)
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
    ds = _read(path)
    frames = _frame_count(ds)
    multi = frames > 1
    pixels = _stored_pixels(ds, path, frame=0 if multi else None)
    photometric = _text(ds, "PhotometricInterpretation") or "MONOCHROME2"
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
            unit = radiograph_to_unit(pixels, _frame_header(ds, 0))
    except Exception as exc:
        raise DecodeError(
            f"{path.name}: cannot map pixels to intensities: {type(exc).__name__}: {exc}"
        ) from exc
    spacing, spacing_source = _pixel_spacing(ds)
    return Radiograph(
        pixels=np.ascontiguousarray(unit, dtype=np.float32),
        spacing_mm=spacing,
        spacing_source=spacing_source,
        laterality=_text(ds, "ImageLaterality") or _text(ds, "Laterality"),
        source=_source(ds, 1 if multi else None),
        view=_text(ds, "ViewPosition"),
        photometric=photometric,
        modality=_text(ds, "Modality") or "",
        frames=frames,
        notes=notes,
        patient_orientation=_patient_orientation(ds),
    )


def _patient_orientation(ds: Dataset) -> str | None:
    value = ds.get("PatientOrientation")
    if value is None:
        return None
    parts = [str(v).strip().upper() for v in (value if isinstance(value, MultiValue | list) else [value])]
    joined = "\\".join(parts)
    return joined if joined.strip("\\") else None


# --------------------------------------------------------------------------------------------- volumes


@dataclass(frozen=True, eq=False)
class Volume:
    """One cross-sectional series as a stack of parallel slices, ordered along the slice normal.

    Attributes:
        voxels: float32 ``[S, H, W]`` in ``[0, 1]``: Modality LUT, then one robust percentile window over the
            whole stack (:func:`orthonode.inference.intensity.percentile_range`), MONOCHROME1 inverted.
        positions: float64 ``[S, 3]`` Image Position (Patient) of each slice (mm, patient LPS).
        normal: float64 ``[3]`` unit slice normal, row cosines x column cosines (PS3.3 C.7.6.2.1.1).
        orientation: the six Image Orientation (Patient) cosines of the stack (row, then column direction).
        spacing: ``(row spacing, column spacing, slice spacing)`` in mm; the slice spacing is the median
            gap between sorted positions, or for one slice Spacing Between Slices, else Slice Thickness, else
            ``0.0``.
        sources: one :class:`SourceImage` per slice, in slice order (``frame_number`` 1-based for frames of
            a multi-frame instance).
        plane: ``sagittal`` / ``coronal`` / ``axial`` from the normal's dominant patient axis.
        notes: dropped instances and frames (with the reason), duplicate positions, irregular spacing.
        modality: Modality (0008,0060) of the stack.
        laterality: Laterality (0020,0060) / Image Laterality / Frame Laterality, ``None`` when absent.
        intensity_range: the Modality-LUT values mapped to 0 and 1.
    """

    voxels: np.ndarray
    positions: np.ndarray
    normal: np.ndarray
    orientation: tuple[float, float, float, float, float, float]
    spacing: tuple[float, float, float]
    sources: tuple[SourceImage, ...]
    plane: Plane
    notes: list[str] = field(default_factory=list)
    modality: str = ""
    laterality: str | None = None
    intensity_range: tuple[float, float] = (0.0, 1.0)


@dataclass(frozen=True)
class _Slice:
    """Header facts of one slice (one single-frame instance, or one frame of a multi-frame instance)."""

    path: Path
    frame: int | None  # 0-based frame index for multi-frame instances, None for single-frame
    rows: int
    cols: int
    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float, float, float]
    pixel_spacing: tuple[float, float]
    thickness: float | None
    between: float | None
    instance_number: int
    source: SourceImage

    @property
    def label(self) -> str:
        return self.path.name if self.frame is None else f"{self.path.name} frame {self.frame + 1}"


def plane_of_normal(normal: Sequence[float] | np.ndarray) -> Plane:
    """The acquisition plane of a slice normal in patient LPS: x (left) dominant is sagittal, y (posterior)
    coronal, z (superior) axial (PS3.3 C.7.6.2.1.1 defines the patient axes)."""
    axis = int(np.argmax(np.abs(np.asarray(normal, dtype=np.float64))))
    planes: tuple[Plane, Plane, Plane] = ("sagittal", "coronal", "axial")
    return planes[axis]


def _normal(orientation: Sequence[float]) -> np.ndarray:
    row = np.asarray(orientation[:3], dtype=np.float64)
    col = np.asarray(orientation[3:], dtype=np.float64)
    normal = np.cross(row, col)
    length = float(np.linalg.norm(normal))
    if not math.isfinite(length) or length < 1e-6:
        raise ValueError(f"Image Orientation (Patient) {tuple(orientation)} has parallel row and column")
    return normal / length


def _instance_number(ds: Dataset) -> int:
    try:
        return int(ds.get("InstanceNumber", 0) or 0)
    except (TypeError, ValueError):
        return 0


def _slices_of(path: Path, ds: Dataset, notes: list[str]) -> list[_Slice]:
    """The slices of one instance with their geometry; slices without usable geometry go to ``notes``."""
    frames = _frame_count(ds)
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows < 1 or cols < 1:
        notes.append(f"dropped {path.name}: no Rows / Columns")
        return []
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        notes.append(f"dropped {path.name}: colour image in a volume series")
        return []
    enhanced = "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds
    out: list[_Slice] = []
    top_orientation = _floats(ds.get("ImageOrientationPatient"), 6)
    top_position = _floats(ds.get("ImagePositionPatient"), 3)
    top_spacing = _floats(ds.get("PixelSpacing"), 2)
    for frame in range(frames):
        if enhanced:
            plane_position = _functional_item(ds, frame, "PlanePositionSequence")
            plane_orientation = _functional_item(ds, frame, "PlaneOrientationSequence")
            measures = _functional_item(ds, frame, "PixelMeasuresSequence")
            position = _floats(plane_position.get("ImagePositionPatient"), 3) if plane_position else None
            orientation = (
                _floats(plane_orientation.get("ImageOrientationPatient"), 6) if plane_orientation else None
            )
            spacing = _floats(measures.get("PixelSpacing"), 2) if measures else None
            thickness = _positive_float(measures.get("SliceThickness")) if measures else None
            between = _positive_float(measures.get("SpacingBetweenSlices")) if measures else None
            position = (position or top_position) if frames == 1 else position
            orientation = orientation or top_orientation
            spacing = spacing or top_spacing
        else:
            orientation, spacing = top_orientation, top_spacing
            thickness = _positive_float(ds.get("SliceThickness"))
            between = _positive_float(ds.get("SpacingBetweenSlices"))
            position = top_position
            if frames > 1 and top_position is not None and orientation is not None:
                # A multi-frame instance without functional groups: frames are taken as stacked along the
                # normal from Image Position (Patient), one Spacing Between Slices (or Slice Thickness) apart.
                step = between or thickness
                if step is None:
                    position = None
                else:
                    if frame == 0:
                        notes.append(
                            f"{path.name}: frame positions inferred from the first frame and {step} mm"
                        )
                    offset = np.asarray(top_position) + frame * step * _normal(orientation)
                    position = (float(offset[0]), float(offset[1]), float(offset[2]))
        label = path.name if frames == 1 else f"{path.name} frame {frame + 1}"
        if position is None or orientation is None or spacing is None or min(spacing) <= 0:
            notes.append(
                f"dropped {label}: no Image Position / Orientation (Patient) or Pixel Spacing (PS3.3 C.7.6.2)"
            )
            continue
        try:
            _normal(orientation)
        except ValueError as exc:
            notes.append(f"dropped {label}: {exc}")
            continue
        out.append(
            _Slice(
                path=path,
                frame=frame if frames > 1 else None,
                rows=rows,
                cols=cols,
                position=(position[0], position[1], position[2]),
                orientation=(
                    orientation[0],
                    orientation[1],
                    orientation[2],
                    orientation[3],
                    orientation[4],
                    orientation[5],
                ),
                pixel_spacing=(spacing[0], spacing[1]),
                thickness=thickness,
                between=between,
                instance_number=_instance_number(ds),
                source=_source(ds, frame + 1 if frames > 1 else None),
            )
        )
    return out


def _compatible(a: _Slice, b: _Slice) -> bool:
    return (
        a.rows == b.rows
        and a.cols == b.cols
        and max(abs(x - y) for x, y in zip(a.orientation, b.orientation, strict=True))
        < _ORIENTATION_TOLERANCE
        and all(
            math.isclose(x, y, rel_tol=_SPACING_RTOL)
            for x, y in zip(a.pixel_spacing, b.pixel_spacing, strict=True)
        )
    )


def _largest_stack(slices: list[_Slice], notes: list[str]) -> list[_Slice]:
    """The largest group of slices with the same size, orientation and pixel spacing; the rest to ``notes``.

    Groups are formed in input order; between groups of equal size the first formed wins.
    """
    groups: list[list[_Slice]] = []
    for item in slices:
        for group in groups:
            if _compatible(group[0], item):
                group.append(item)
                break
        else:
            groups.append([item])
    kept = max(groups, key=len)  # max returns the first of equal maxima
    for group in groups:
        if group is kept:
            continue
        ref = group[0]
        names = ", ".join(s.label for s in group)
        notes.append(
            f"dropped {len(group)} slice(s) of {ref.rows}x{ref.cols}, orientation "
            f"{tuple(round(v, 4) for v in ref.orientation)}, spacing {ref.pixel_spacing} (kept stack: "
            f"{kept[0].rows}x{kept[0].cols}, {tuple(round(v, 4) for v in kept[0].orientation)}, "
            f"{len(kept)} slices): {names}"
        )
    return kept


def load_volume(paths: Sequence[Path], *, percentiles: tuple[float, float] = DEFAULT_PERCENTILES) -> Volume:
    """One series (single-frame instances and / or Enhanced multi-frame instances) as a sorted stack.

    Steps: read every header; take each slice's Image Position / Orientation (Patient) and Pixel Spacing
    from the top level or, for Enhanced instances, from the Plane Position, Plane Orientation and Pixel
    Measures functional groups (per-frame, else shared; PS3.3 C.7.6.16.2.1-3); keep the largest stack of
    slices with one size, orientation and pixel spacing (the others are reported in ``notes``); order it by
    the projection of Image Position (Patient) on the slice normal (PS3.3 C.7.6.2.1.1; Instance Number only
    breaks ties); decode; map intensities with one robust percentile window over the whole stack
    (:func:`orthonode.inference.intensity.dicom_frame_to_unit` with the volume range). Slices that fail to
    decode are dropped and noted.

    Args:
        paths: the files of one series, in any order.
        percentiles: the robust window's ``(low, high)`` percentiles.

    Raises:
        SeriesTooLarge: more than :data:`MAX_SLICES` files or slices.
        DecodeError: no file, or no slice that has geometry and decodes.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise DecodeError("empty series: no file to load")
    if len(paths) > MAX_SLICES:
        raise SeriesTooLarge(f"series of {len(paths)} files refused: at most {MAX_SLICES} slices are loaded")
    notes: list[str] = []
    slices: list[_Slice] = []
    total_frames = 0
    modalities: dict[str, int] = {}
    laterality: str | None = None
    for path in paths:
        try:
            ds = _read(path, pixels=False)
        except DecodeError as exc:
            notes.append(f"dropped {exc}")
            continue
        total_frames += _frame_count(ds)
        if total_frames > MAX_SLICES:
            raise SeriesTooLarge(
                f"series of more than {MAX_SLICES} slices refused (reached {total_frames} at {path.name})"
            )
        modality = _text(ds, "Modality") or ""
        modalities[modality] = modalities.get(modality, 0) + 1
        laterality = laterality or _volume_laterality(ds)
        slices.extend(_slices_of(path, ds, notes))
    if not slices:
        detail = "; ".join(notes) if notes else "no slices"
        raise DecodeError(f"series of {len(paths)} file(s) has no slice with geometry: {detail}")
    stack = _largest_stack(slices, notes)
    normal = _normal(stack[0].orientation)
    depth = [float(np.dot(s.position, normal)) for s in stack]
    order = sorted(range(len(stack)), key=lambda i: (depth[i], stack[i].instance_number, stack[i].frame or 0))
    stack = [stack[i] for i in order]
    pixels, headers, kept = _decode_stack(stack, notes)
    if not kept:
        raise DecodeError(f"series of {len(paths)} file(s) has no decodable slice: {'; '.join(notes)}")
    modality = max(modalities, key=lambda m: modalities[m]) if modalities else ""
    family = "ct" if modality_family(modality) == "ct" else "mri"
    try:
        values = [modality_values(p, h) for p, h in zip(pixels, headers, strict=True)]
        volume_range = percentile_range(values, percentiles)
        voxels = np.stack(
            [dicom_frame_to_unit(p, h, family, volume_range) for p, h in zip(pixels, headers, strict=True)]
        )
    except Exception as exc:
        raise DecodeError(
            f"series starting {kept[0].label}: cannot map intensities: {type(exc).__name__}: {exc}"
        ) from exc
    positions = np.array([s.position for s in kept], dtype=np.float64)
    spacing = _slice_spacing(kept, positions @ normal, notes)
    return Volume(
        voxels=np.ascontiguousarray(voxels, dtype=np.float32),
        positions=positions,
        normal=normal,
        orientation=kept[0].orientation,
        spacing=(kept[0].pixel_spacing[0], kept[0].pixel_spacing[1], spacing),
        sources=tuple(s.source for s in kept),
        plane=plane_of_normal(normal),
        notes=notes,
        modality=modality,
        laterality=laterality,
        intensity_range=volume_range,
    )


def _volume_laterality(ds: Dataset) -> str | None:
    found = _text(ds, "Laterality") or _text(ds, "ImageLaterality")
    if found is None:
        anatomy = _functional_item(ds, 0, "FrameAnatomySequence")
        if anatomy is not None:
            found = _text(anatomy, "FrameLaterality")
    return found


def _decode_stack(
    stack: list[_Slice], notes: list[str]
) -> tuple[list[np.ndarray], list[Dataset], list[_Slice]]:
    """Stored pixels and intensity headers of the sorted slices; each file is read and decoded once."""
    cache: dict[Path, tuple[Dataset, np.ndarray] | None] = {}
    pixels: list[np.ndarray] = []
    headers: list[Dataset] = []
    kept: list[_Slice] = []
    for item in stack:
        if item.path not in cache:
            try:
                ds = _read(item.path)
                cache[item.path] = (ds, _stored_pixels(ds, item.path))
            except DecodeError as exc:
                notes.append(f"dropped {exc}")
                cache[item.path] = None
        entry = cache[item.path]
        if entry is None:
            continue
        ds, stored = entry
        frame = stored[item.frame] if item.frame is not None and stored.ndim == 3 else stored
        if frame.shape != (item.rows, item.cols):
            notes.append(f"dropped {item.label}: decoded shape {frame.shape} != {item.rows}x{item.cols}")
            continue
        pixels.append(frame)
        headers.append(_frame_header(ds, item.frame or 0))
        kept.append(item)
    return pixels, headers, kept


def _slice_spacing(stack: list[_Slice], depth: np.ndarray, notes: list[str]) -> float:
    """The slice spacing in mm: median gap of the sorted depths; for one slice the header's value."""
    if len(stack) > 1:
        gaps = np.diff(depth)
        duplicates = int(np.sum(gaps < 1e-3))
        if duplicates:
            notes.append(f"{duplicates} slice(s) share a position with their neighbour")
        distinct = gaps[gaps >= 1e-3]
        if distinct.size:
            median = float(np.median(distinct))
            if np.any(np.abs(distinct - median) > _GAP_RTOL * median):
                notes.append(
                    f"irregular slice spacing: gaps from {float(distinct.min()):.3g} to "
                    f"{float(distinct.max()):.3g} mm (median {median:.3g})"
                )
            return median
    first = stack[0]
    return first.between or first.thickness or 0.0
