"""Typed reads of the header attributes the pixel loaders use, and the functional groups of Enhanced
multi-frame instances (PS3.3 C.7.6.16): per-frame first, else shared."""

from __future__ import annotations

import math
from typing import Any

from pydicom.dataset import Dataset

from orthonode.inference.findings import SourceImage

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


def text_of(ds: Dataset, keyword: str) -> str | None:
    """A stripped, upper-case string attribute; ``None`` when absent or empty."""
    value = ds.get(keyword)
    if value is None:
        return None
    text = str(value).strip().upper()
    return text or None


def floats_of(value: Any, count: int) -> tuple[float, ...] | None:
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


def positive_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def source_image(ds: Dataset, frame_number: int | None) -> SourceImage:
    return SourceImage(
        sop_class_uid=str(ds.get("SOPClassUID", "")),
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        frame_number=frame_number,
    )


def frame_count(ds: Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def functional_item(ds: Dataset, frame: int, keyword: str) -> Dataset | None:
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


def frame_header(ds: Dataset, frame: int) -> Dataset:
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
        item = functional_item(ds, frame, macro)
        if item is not None:
            for element in item:
                header[element.tag] = element
    return header
