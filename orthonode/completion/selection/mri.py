"""Rule 5 of routing: an MRI series' role, its plane from Image Orientation (Patient) (0020,0037),
PS3.3 C.7.6.2.1.1, its weighting and fat suppression from its names, and whether it is a localizer."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from orthonode.completion.selection.facts import SeriesFacts
from orthonode.completion.selection.kinds import MR_MULTI_FRAME_SOP_CLASSES
from orthonode.completion.selection.text import normalize, words
from orthonode.tasks.pipelines import Plane

OBLIQUE_THRESHOLD = 0.8


def plane_from_orientation(iop: Sequence[float] | None) -> Plane | None:
    """The acquisition plane from Image Orientation (Patient) (0020,0037), PS3.3 C.7.6.2.1.1.

    The slice normal is the cross product of the row and column direction cosines (patient axes x: right
    to left, y: anterior to posterior, z: feet to head). Its dominant axis gives sagittal (x), coronal (y)
    or axial (z); a normal whose dominant component is below 0.8 in absolute value (more than about 37
    degrees off every axis) is oblique. None for a missing or malformed value.
    """
    if iop is None or len(iop) != 6:
        return None
    try:
        rx, ry, rz, cx, cy, cz = (float(v) for v in iop)
    except (TypeError, ValueError):
        return None
    normal = (ry * cz - rz * cy, rz * cx - rx * cz, rx * cy - ry * cx)
    if not all(math.isfinite(c) for c in normal):
        return None
    length = math.sqrt(sum(c * c for c in normal))
    if length < 1e-6:
        return None
    magnitudes = [abs(c) / length for c in normal]
    dominant = max(range(3), key=lambda i: magnitudes[i])
    if magnitudes[dominant] < OBLIQUE_THRESHOLD:
        return Plane.OBLIQUE
    return (Plane.SAGITTAL, Plane.CORONAL, Plane.AXIAL)[dominant]


# A token such as PD, PDW, T1, T1W, T2*, PDFS, T2FSE, T1WFS: base weighting, optional W/WI, optional suffix.
_WEIGHTING_TOKEN = re.compile(r"(PD|T1|T2\*?|T2STAR)(?:WI|W)?(FS|FSE|TSE|SE|SPAIR|SPIR)?")
_STIR_TOKENS = frozenset({"STIR", "TIRM"})  # TIRM: turbo inversion recovery magnitude, a STIR
_FAT_SAT_TOKENS = frozenset({"FS", "FSAT", "SPAIR", "SPIR", "DIXON", "MDIXON"})
_FAT_SAT_PHRASE = re.compile(
    r"(?<![A-Z])FAT ?(?:SAT|SATURATED|SATURATION|SUP|SUPP|SUPPRESSED|SUPPRESSION)(?![A-Z])"
)


def _weighting_in(text: str | None) -> tuple[str | None, bool]:
    normalized = normalize(text)
    weightings: set[str] = set()
    stir = False
    fat_sat = bool(_FAT_SAT_PHRASE.search(normalized))
    for token in normalized.split():
        if token in _STIR_TOKENS:
            stir = True
        elif token in _FAT_SAT_TOKENS:
            fat_sat = True
        else:
            match = _WEIGHTING_TOKEN.fullmatch(token)
            if match is not None:
                base = match.group(1)
                weightings.add("T2*" if base in ("T2*", "T2STAR") else base)
                if match.group(2) in ("FS", "SPAIR", "SPIR"):
                    fat_sat = True
    if stir:
        return "STIR", True
    return (next(iter(weightings)) if len(weightings) == 1 else None), fat_sat


def mri_weighting(series: SeriesFacts) -> tuple[str | None, bool]:
    """Contrast weighting and fat suppression of an MRI series from its names.

    Looks at Series Description (0008,103E), Protocol Name (0018,1030) and Sequence Name (0018,0024), in
    that order, for whole-word keywords (underscores, hyphens and slashes separate words): PD, T1, T2, T2*
    (with an optional W/WI and an attached FS/FSE/TSE suffix, e.g. ``PDFS``, ``T2FSE``, ``T1W``) and
    STIR/TIRM. The first source naming exactly one weighting decides it (``PD/T2`` names two and decides
    nothing); STIR wins over a weighting named beside it. Fat suppression is true when any source says
    FS, FSAT, FAT SAT, FATSAT, FAT SUPPRESSED, SPAIR, SPIR, (m)DIXON, a ``..FS`` token, or STIR. FSE (fast
    spin echo) is not fat suppression.
    """
    weighting: str | None = None
    fat_suppressed = False
    for text in (series.series_description, series.protocol_name, series.sequence_name):
        found, fat_sat = _weighting_in(text)
        if weighting is None and found is not None:
            weighting = found
        fat_suppressed = fat_suppressed or fat_sat
    return weighting, fat_suppressed or weighting == "STIR"


_LOCALIZER_WORDS = words(r"LOC", r"LOCALI[SZ]ERS?", r"SCOUTS?", r"SURVEY", r"3 ?PLANE", r"TRI ?PLANE")
_MIN_MR_SINGLE_FRAME_IMAGES = 3


def is_localizer(series: SeriesFacts) -> bool:
    """A localizer/scout MRI series: its description or protocol says LOC, LOCALIZER, SCOUT, SURVEY,
    3-PLANE, or it has fewer than 3 instances of a single-frame SOP Class (MR Image Storage)."""
    for text in (series.series_description, series.protocol_name):
        if _LOCALIZER_WORDS.search(normalize(text)):
            return True
    multi_frame = series.sop_class_uid.strip() in MR_MULTI_FRAME_SOP_CLASSES
    return not multi_frame and series.instance_count < _MIN_MR_SINGLE_FRAME_IMAGES
