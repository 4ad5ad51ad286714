"""The slices of a cross-sectional series: each slice's geometry from Image Position / Orientation
(Patient) and Pixel Spacing (PS3.3 C.7.6.2) or, in Enhanced multi-frame instances, the Plane Position,
Plane Orientation and Pixel Measures functional groups (PS3.3 C.7.6.16.2.1-3); the largest geometrically
consistent stack; the order along the slice normal (PS3.3 C.7.6.2.1.1) and the slice spacing."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydicom.dataset import Dataset

from orthonode.inference.dicom_fields import (
    floats_of,
    frame_count,
    functional_item,
    positive_float,
    source_image,
)
from orthonode.inference.findings import SourceImage

Plane = Literal["sagittal", "coronal", "axial"]

# Two slices belong to one stack when their direction cosines differ by less than this (about 0.06 degree)
# and their pixel spacings by less than this relative amount.
_ORIENTATION_TOLERANCE = 1e-3
_SPACING_RTOL = 1e-3
# Slice gaps further than this fraction from the median gap are reported as irregular spacing.
_GAP_RTOL = 0.1


@dataclass(frozen=True)
class Slice:
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


def slice_normal(orientation: Sequence[float]) -> np.ndarray:
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


Vector3 = tuple[float, float, float]
Cosines = tuple[float, float, float, float, float, float]


@dataclass(frozen=True)
class _Geometry:
    """What the header says of one frame's place: any of position, orientation, spacing may be missing."""

    position: tuple[float, ...] | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, ...] | None
    thickness: float | None
    between: float | None


def _enhanced_geometry(ds: Dataset, frame: int, frames: int, top: _Geometry) -> _Geometry:
    """One frame's geometry from the Plane Position, Plane Orientation and Pixel Measures functional groups
    (per-frame, else shared; PS3.3 C.7.6.16.2.1-3), the top level filling what they lack (the position
    only for a single frame)."""
    plane_position = functional_item(ds, frame, "PlanePositionSequence")
    plane_orientation = functional_item(ds, frame, "PlaneOrientationSequence")
    measures = functional_item(ds, frame, "PixelMeasuresSequence")
    position = floats_of(plane_position.get("ImagePositionPatient"), 3) if plane_position else None
    orientation = (
        floats_of(plane_orientation.get("ImageOrientationPatient"), 6) if plane_orientation else None
    )
    spacing = floats_of(measures.get("PixelSpacing"), 2) if measures else None
    return _Geometry(
        position=(position or top.position) if frames == 1 else position,
        orientation=orientation or top.orientation,
        pixel_spacing=spacing or top.pixel_spacing,
        thickness=positive_float(measures.get("SliceThickness")) if measures else None,
        between=positive_float(measures.get("SpacingBetweenSlices")) if measures else None,
    )


def _classic_geometry(path: Path, frame: int, frames: int, top: _Geometry, notes: list[str]) -> _Geometry:
    """One frame's geometry from the top-level Image Plane attributes (PS3.3 C.7.6.2).

    A multi-frame instance without functional groups: frames are taken as stacked along the normal from
    Image Position (Patient), one Spacing Between Slices (or Slice Thickness) apart.
    """
    position = top.position
    if frames > 1 and top.position is not None and top.orientation is not None:
        step = top.between or top.thickness
        if step is None:
            position = None
        else:
            if frame == 0:
                notes.append(f"{path.name}: frame positions inferred from the first frame and {step} mm")
            offset = np.asarray(top.position) + frame * step * slice_normal(top.orientation)
            position = (float(offset[0]), float(offset[1]), float(offset[2]))
    return _Geometry(position, top.orientation, top.pixel_spacing, top.thickness, top.between)


def _checked(
    geometry: _Geometry, label: str, notes: list[str]
) -> tuple[Vector3, Cosines, tuple[float, float]] | None:
    """A frame's position, orientation and pixel spacing when it has all a stack needs; else ``None``, and
    what it lacks goes to ``notes``."""
    position, cosines, spacing = geometry.position, geometry.orientation, geometry.pixel_spacing
    if position is None or cosines is None or spacing is None or min(spacing) <= 0:
        notes.append(
            f"dropped {label}: no Image Position / Orientation (Patient) or Pixel Spacing (PS3.3 C.7.6.2)"
        )
        return None
    try:
        slice_normal(cosines)
    except ValueError as exc:
        notes.append(f"dropped {label}: {exc}")
        return None
    return (
        (position[0], position[1], position[2]),
        (cosines[0], cosines[1], cosines[2], cosines[3], cosines[4], cosines[5]),
        (spacing[0], spacing[1]),
    )


def slices_of(path: Path, ds: Dataset, notes: list[str]) -> list[Slice]:
    """The slices of one instance with their geometry; slices without usable geometry go to ``notes``."""
    frames = frame_count(ds)
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows < 1 or cols < 1:
        notes.append(f"dropped {path.name}: no Rows / Columns")
        return []
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        notes.append(f"dropped {path.name}: colour image in a volume series")
        return []
    enhanced = "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds
    top = _Geometry(
        position=floats_of(ds.get("ImagePositionPatient"), 3),
        orientation=floats_of(ds.get("ImageOrientationPatient"), 6),
        pixel_spacing=floats_of(ds.get("PixelSpacing"), 2),
        thickness=None if enhanced else positive_float(ds.get("SliceThickness")),
        between=None if enhanced else positive_float(ds.get("SpacingBetweenSlices")),
    )
    out: list[Slice] = []
    for frame in range(frames):
        if enhanced:
            geometry = _enhanced_geometry(ds, frame, frames, top)
        else:
            geometry = _classic_geometry(path, frame, frames, top, notes)
        label = path.name if frames == 1 else f"{path.name} frame {frame + 1}"
        checked = _checked(geometry, label, notes)
        if checked is None:
            continue
        position, orientation, spacing = checked
        out.append(
            Slice(
                path=path,
                frame=frame if frames > 1 else None,
                rows=rows,
                cols=cols,
                position=position,
                orientation=orientation,
                pixel_spacing=spacing,
                thickness=geometry.thickness,
                between=geometry.between,
                instance_number=_instance_number(ds),
                source=source_image(ds, frame + 1 if frames > 1 else None),
            )
        )
    return out


def _compatible(a: Slice, b: Slice) -> bool:
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


def largest_stack(slices: list[Slice], notes: list[str]) -> list[Slice]:
    """The largest group of slices with the same size, orientation and pixel spacing; the rest to ``notes``.

    Groups are formed in input order; between groups of equal size the first formed wins.
    """
    groups: list[list[Slice]] = []
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


def order_along_normal(stack: list[Slice]) -> tuple[list[Slice], np.ndarray]:
    """The stack sorted by the projection of Image Position (Patient) on the slice normal (PS3.3
    C.7.6.2.1.1; Instance Number, then frame, only break ties), and that unit normal."""
    normal = slice_normal(stack[0].orientation)
    depth = [float(np.dot(s.position, normal)) for s in stack]
    order = sorted(range(len(stack)), key=lambda i: (depth[i], stack[i].instance_number, stack[i].frame or 0))
    return [stack[i] for i in order], normal


def slice_spacing(stack: list[Slice], depth: np.ndarray, notes: list[str]) -> float:
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
