"""One MR (or other cross-sectional) series as a stack ``[S, H, W]`` in ``[0, 1]`` ordered along the slice
normal (PS3.3 C.7.6.2.1.1), from single-frame instances or Enhanced multi-frame instances (Per-frame and
Shared Functional Groups, PS3.3 C.7.6.16), keeping the largest geometrically consistent stack."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from orthonode.inference.decoding import DecodeError, read_dataset, stored_pixels
from orthonode.inference.dicom_fields import frame_count, frame_header, functional_item, text_of
from orthonode.inference.findings import SourceImage
from orthonode.inference.intensity import (
    DEFAULT_PERCENTILES,
    dicom_frame_to_unit,
    modality_family,
    modality_values,
    percentile_range,
)
from orthonode.inference.slices import (
    Plane,
    Slice,
    largest_stack,
    order_along_normal,
    plane_of_normal,
    slice_spacing,
    slices_of,
)

#: The most slices (frames) :func:`load_volume` accepts for one series.
MAX_SLICES = 2000


class SeriesTooLarge(DecodeError):
    """A series with more than :data:`MAX_SLICES` slices (refused before decoding)."""


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
    series = _read_headers(paths, notes)
    if not series.slices:
        detail = "; ".join(notes) if notes else "no slices"
        raise DecodeError(f"series of {len(paths)} file(s) has no slice with geometry: {detail}")
    stack, normal = order_along_normal(largest_stack(series.slices, notes))
    pixels, headers, kept = _decode_stack(stack, notes)
    if not kept:
        raise DecodeError(f"series of {len(paths)} file(s) has no decodable slice: {'; '.join(notes)}")
    modality = series.modality
    voxels, volume_range = _to_unit(pixels, headers, modality, percentiles, kept[0].label)
    positions = np.array([s.position for s in kept], dtype=np.float64)
    spacing = slice_spacing(kept, positions @ normal, notes)
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
        laterality=series.laterality,
        intensity_range=volume_range,
    )


@dataclass(frozen=True)
class _SeriesHeaders:
    """What the headers of a series say before any pixel is decoded."""

    slices: list[Slice]
    modalities: dict[str, int]  # Modality (0008,0060) -> number of instances
    laterality: str | None

    @property
    def modality(self) -> str:
        """The most frequent Modality of the series' instances."""
        return max(self.modalities, key=lambda m: self.modalities[m]) if self.modalities else ""


def _read_headers(paths: Sequence[Path], notes: list[str]) -> _SeriesHeaders:
    """Every readable header's slices, modality and laterality; unreadable files go to ``notes``.

    Raises:
        SeriesTooLarge: the frames counted so far exceed :data:`MAX_SLICES`.
    """
    slices: list[Slice] = []
    total_frames = 0
    modalities: dict[str, int] = {}
    laterality: str | None = None
    for path in paths:
        try:
            ds = read_dataset(path, pixels=False)
        except DecodeError as exc:
            notes.append(f"dropped {exc}")
            continue
        total_frames += frame_count(ds)
        if total_frames > MAX_SLICES:
            raise SeriesTooLarge(
                f"series of more than {MAX_SLICES} slices refused (reached {total_frames} at {path.name})"
            )
        modality = text_of(ds, "Modality") or ""
        modalities[modality] = modalities.get(modality, 0) + 1
        laterality = laterality or _volume_laterality(ds)
        slices.extend(slices_of(path, ds, notes))
    return _SeriesHeaders(slices, modalities, laterality)


def _to_unit(
    pixels: list[np.ndarray],
    headers: list[Dataset],
    modality: str,
    percentiles: tuple[float, float],
    first_label: str,
) -> tuple[np.ndarray, tuple[float, float]]:
    """The stack in ``[0, 1]`` with one robust percentile window over all its Modality-LUT values, and
    that window (:func:`orthonode.inference.intensity.dicom_frame_to_unit`)."""
    family = "ct" if modality_family(modality) == "ct" else "mri"
    try:
        values = [modality_values(p, h) for p, h in zip(pixels, headers, strict=True)]
        volume_range = percentile_range(values, percentiles)
        voxels = np.stack(
            [dicom_frame_to_unit(p, h, family, volume_range) for p, h in zip(pixels, headers, strict=True)]
        )
    except Exception as exc:
        raise DecodeError(
            f"series starting {first_label}: cannot map intensities: {type(exc).__name__}: {exc}"
        ) from exc
    return voxels, volume_range


def _volume_laterality(ds: Dataset) -> str | None:
    found = text_of(ds, "Laterality") or text_of(ds, "ImageLaterality")
    if found is None:
        anatomy = functional_item(ds, 0, "FrameAnatomySequence")
        if anatomy is not None:
            found = text_of(anatomy, "FrameLaterality")
    return found


def _decode_stack(
    stack: list[Slice], notes: list[str]
) -> tuple[list[np.ndarray], list[Dataset], list[Slice]]:
    """Stored pixels and intensity headers of the sorted slices; each file is read and decoded once."""
    cache: dict[Path, tuple[Dataset, np.ndarray] | None] = {}
    pixels: list[np.ndarray] = []
    headers: list[Dataset] = []
    kept: list[Slice] = []
    for item in stack:
        if item.path not in cache:
            try:
                ds = read_dataset(item.path)
                cache[item.path] = (ds, stored_pixels(ds, item.path))
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
        headers.append(frame_header(ds, item.frame or 0))
        kept.append(item)
    return pixels, headers, kept
