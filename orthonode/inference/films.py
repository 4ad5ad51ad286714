"""One stored radiograph -> the knee joints the KL head grades, or the recorded reason it grades none
(issue 14). Real PACS send whole films; the head learned from one-joint Chen crops.

The decisions for one radiograph, in order:

1. **Already a joint crop** (small and square, the Chen layout: :func:`localise.is_joint_crop`): graded
   whole, its side from the header, exactly as before localisation existed.
2. **The header names the view** (:attr:`Radiograph.header_view`, :mod:`orthonode.inference.views`): a
   view that is not frontal (lateral, axial patellar, oblique, two-view plate, other) is not graded; the
   outcome carries the view's reason code.
3. **No localiser** installed for the running encoder: a film is not graded ("no joint localiser"), never
   split blindly.
4. **The localiser** (:class:`localise.Localiser`): where the header is silent, its view classifier
   decides; a film that does not look frontal is not graded, and says it was judged from the image.
5. **Joints**: none -> "no knee joint found" with the localiser's reason; a joint cut by the film's edge
   is not graded ("knee joint cut by the image edge"); every other joint is cut with the Chen geometry
   and graded, its side from the header and its position (:func:`laterality.joint_sides`), a
   disagreement noted rather than guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.sr.coding import Code

from orthonode.completion.selection import ViewKind
from orthonode.encode import codes as oc
from orthonode.inference.findings import ImageRegion
from orthonode.inference.laterality import joint_sides
from orthonode.inference.localise import ADULT_PLATEAU_MM, Localiser, cut_box, is_joint_crop, working_image
from orthonode.inference.radiograph import Radiograph

__all__ = ["FilmReading", "JointCrop", "Skip", "read_film"]

#: The long side of the film shown whole on a key image.
OVERVIEW_LONG_SIDE = 768
#: The image classifier's views as the header's kinds.
_IMAGE_VIEWS = {
    "frontal": ViewKind.FRONTAL,
    "lateral": ViewKind.LATERAL,
    "plate": ViewKind.TWO_VIEW,
    "other": ViewKind.OTHER,
}


@dataclass(frozen=True)
class JointCrop:
    """One knee as the model sees it: the crop (the key image), its side, its box on the film (``None``
    for an image that was already a crop) and what a reader should know."""

    side: str | None
    pixels: np.ndarray
    region: ImageRegion | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Skip:
    """A recorded outcome without a grade: the side it concerns (if known), the reason, its code."""

    side: str | None
    reason: str
    code: Code


@dataclass(frozen=True)
class FilmReading:
    """What one radiograph gives: the crops to grade, the outcomes not graded, and the film downscaled
    for the key image (``None`` for an image that was already a crop)."""

    crops: tuple[JointCrop, ...] = ()
    skipped: tuple[Skip, ...] = ()
    overview: np.ndarray | None = None


def overview_of(pixels: np.ndarray) -> np.ndarray:
    """The film with its long side :data:`OVERVIEW_LONG_SIDE` (never enlarged), for the key image."""
    h, w = pixels.shape
    if max(h, w) <= OVERVIEW_LONG_SIDE:
        return np.ascontiguousarray(pixels, dtype=np.float32)
    small, scale = working_image(pixels, None, stride=1, long_side=OVERVIEW_LONG_SIDE)
    return small[: round(h * scale), : round(w * scale)]


def read_film(
    image: Radiograph, side: str | None, localiser: Localiser | None, encoder: Any, size: int
) -> FilmReading:
    """The joints of ``image`` to grade at ``size`` px (the head's input), or why none is graded.
    ``side`` is the header's side of the image (Image Laterality, the series', the route's)."""
    if is_joint_crop(image.pixels.shape):
        return FilmReading(crops=(JointCrop(side if side in ("L", "R") else None, image.pixels),))
    header = image.header_view
    if header is not None and header.from_header and not header.gradeable:
        code = oc.NOT_GRADED_FOR_VIEW[header.kind.value]
        return FilmReading(skipped=(Skip(_single(side), f"not graded: {header.reason}", code),))
    if localiser is None:
        reason = "not graded: no knee-joint localiser installed for this encoder, the film is not cut"
        return FilmReading(skipped=(Skip(_single(side), reason, oc.NO_KNEE_JOINT),))
    found = localiser.localise(encoder, image.pixels, image.spacing_mm, image.spacing_source)
    if header is None or not header.from_header:
        kind = _IMAGE_VIEWS[found.view]
        if kind is not ViewKind.FRONTAL:
            p = found.view_probabilities[found.view]
            if kind is ViewKind.OTHER:
                reason = f"no knee joint found: the image does not look like a knee film (p {p:.2f})"
                return FilmReading(skipped=(Skip(_single(side), reason, oc.NO_KNEE_JOINT),))
            reason = f"not graded: {kind.value} view, judged from the image (p {p:.2f}; the header is silent)"
            return FilmReading(skipped=(Skip(_single(side), reason, oc.NOT_GRADED_FOR_VIEW[kind.value]),))
    if not found.joints:
        return FilmReading(
            skipped=(Skip(_single(side), found.reason or "no knee joint found", oc.NO_KNEE_JOINT),)
        )
    return _crops(image, side, found, size)


def _crops(image: Radiograph, side: str | None, found: Any, size: int) -> FilmReading:
    boxes = [j.box for j in found.joints]
    decisions = joint_sides(side, boxes, image.pixels.shape[1], image.patient_orientation)
    crops, skipped = [], []
    for joint, decision in zip(found.joints, decisions, strict=True):
        if joint.partial:
            reason = "not graded: knee joint cut by the image edge"
            skipped.append(Skip(decision.side, reason, oc.NOT_GRADED_PARTIAL))
            continue
        region = ImageRegion(
            image.source,
            _inside(joint.box, image.pixels.shape),
            joint.confidence,
            joint.mm_per_px,
            joint.scale_source,
        )
        mm = joint.mm_per_px
        if joint.scale_source == "estimated":
            scale = f"scale estimated from the plateau taken as {ADULT_PLATEAU_MM:.0f} mm: {mm:.2f} mm/px"
        else:
            scale = f"tibial plateau {joint.plateau_mm:.0f} mm ({joint.scale_source}, {mm:.3f} mm/px)"
        notes = (*decision.notes, f"joint located with confidence {joint.confidence:.2f}; {scale}")
        crops.append(JointCrop(decision.side, cut_box(image.pixels, joint.box, size), region, notes))
    return FilmReading(tuple(crops), tuple(skipped), overview_of(image.pixels))


def _inside(
    box: tuple[float, float, float, float], shape: tuple[int, ...]
) -> tuple[float, float, float, float]:
    """The box clipped to the film (the report's region lies on the image; the crop may reach past it)."""
    x0, y0, x1, y1 = box
    h, w = shape
    return (max(x0, 0.0), max(y0, 0.0), min(x1, float(w)), min(y1, float(h)))


def _single(side: str | None) -> str | None:
    return side if side in ("L", "R") else None
