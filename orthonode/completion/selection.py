"""Decide which task pipelines a complete study feeds.

A pure module: :class:`StudyFacts` (what the index knows about a study's series, read from the header
elements of PS3.3) goes in, a :class:`RoutingDecision` (zero or more :class:`Route` and a human-readable
reason) comes out. No I/O, no database, no pydicom.

Rules, in the order :func:`route_study` applies them:

1. **Series kind** (PS3.3 C.7.3.1 Modality (0008,0060), PS3.4 Annex B / PS3.6 Annex A SOP Class UIDs).
   A series whose SOP Class (under the storage root ``1.2.840.10008.5.1.4.1.1``) is a Structured Report
   or Key Object Selection (``.88.x``), Secondary Capture (``.7[.x]``), Presentation State (``.11.x``),
   Raw Data / Spatial Registration / Segmentation (``.66[.x]``) or Encapsulated Document (``.104.x``), or
   whose Modality is SR, KO, PR, SEG, OT, DOC or REG, is a *result or derived object* and never an input:
   the node's own results come back to it as SR and SC. Otherwise the SOP Class decides (CR and both DX
   Image Storage classes: radiograph; MR, Enhanced MR and Legacy Converted Enhanced MR Image Storage:
   MRI; CT classes: CT) and, for a SOP Class outside those, the Modality does (CR, DX: radiograph; MR:
   MRI; CT: CT). CT is accepted by the node but no pipeline uses it yet; any other modality is not used.
   A series with no instance is skipped.
2. **Anatomy per series** (:func:`detect_anatomy`): the first source that decides wins.

   a. Body Part Examined (0018,0015), PS3.3 C.7.3.1, with the defined terms of PS3.16 Annex L
      ("Correspondence of Anatomic Region Codes and Body Part Examined Defined Terms", CID 4031 "Common
      Anatomic Regions"): KNEE and PATELLA are the knee, HIP the hip, SHOULDER the shoulder, ANKLE the
      ankle (spaces, underscores and a ``JOINT`` suffix are tolerated, as are vendor values that name the
      joint as a word, e.g. ``L KNEE``). A term for a clearly different region (FOOT, HAND, WRIST, ELBOW,
      FEMUR, HUMERUS, CHEST, the spine, ... see ``_OTHER_BODY_PARTS``) decides "not a supported joint".
      Generic terms that may contain a joint (LEG, LOWERLIMB, EXTREMITY, LOWEREXTREMITY, PELVIS - an AP
      pelvis is a hip view - and unknown vendor values) do not decide.
   b. Series Description (0008,103E), then Study Description (0008,1030), then Protocol Name (0018,1030):
      case- and accent-insensitive keywords with word boundaries (so SHIP, WHIPLASH and ANKLET match
      nothing): knee(s), genou, patella, patellofemoral, menisc..., ACL, PCL; hip(s), hanche,
      acetabul..., femoral head; shoulder(s), epaule, rotator cuff, glenohumeral, supraspinatus; ankle(s),
      cheville, talus, talocrural, ATFL. A text naming two joints (``HIP TO ANKLE``) does not decide.
   c. Anatomic Region Sequence (0008,2218), PS3.3 Section 10.5 (General Anatomy Macros) with the Code
      Sequence Macro (PS3.3 Table 8.8-1): SNOMED CT (scheme SCT) 72696002 knee, 24136001 hip joint,
      16982005 shoulder, 70258002 ankle joint (the CID 4031 codes) and the legacy SNOMED-RT codes (scheme
      SRT or SNM3) T-15720 knee joint, T-15710 hip joint, T-15420 shoulder joint, T-15750 ankle joint;
      failing a known code, the Code Meanings are matched like the descriptions. Codes naming two joints
      do not decide.
3. **Adoption**: a radiograph or MRI series whose anatomy nothing decided adopts the anatomy of the other
   series of the same kind when all those that were decided agree on one supported joint (a knee MRI
   whose one series lacks Body Part Examined); otherwise it is ignored and the reason names it. A series
   whose anatomy differs from the study's majority is routed by its own anatomy.
4. **Pipelines** (:data:`PIPELINES`, one line per pipeline): all series of one (anatomy, kind) feed one
   route per pipeline for that pair. An (anatomy, kind) without a pipeline (hip, shoulder or ankle
   radiographs today) is not routed and the reason says so.
5. **MRI series roles**: plane from Image Orientation (Patient) (0020,0037), PS3.3 C.7.6.2.1.1
   (:func:`plane_from_orientation`), weighting and fat suppression from Series Description, Protocol
   Name and Sequence Name (0018,0024) keywords (:func:`mri_weighting`). Localizers (description or
   protocol says LOC, LOCALIZER, SCOUT, SURVEY, 3-PLANE, or fewer than 3 instances of a single-frame MR
   SOP Class; Enhanced MR is multi-frame, so its instance count says nothing) are excluded. A series with
   no orientation is kept with plane None; a series whose plane the pipeline does not use (an oblique
   knee series) is excluded and the reason says so.
6. **Laterality**: a series' side is its Laterality (0020,0060) (PS3.3 C.7.3.1), else the distinct Image
   Laterality (0020,0062) values of its instances (e.g. PS3.3 C.8.11.5 DX Anatomy Imaged): one L or R
   gives that side, a B value or both L and R give B (bilateral); U and absent mean unknown. A route's
   laterality is L or R when all its sided series agree, B when both sides occur, None when no series
   has a side.
7. Nothing routable gives ``RoutingDecision(routes=(), reason=...)`` where the reason names what was
   seen (kinds, modalities, anatomies found, where anatomy was looked for).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from orthonode.sop_classes import SopKind, uids_of
from orthonode.tasks.pipelines import PIPELINES, Anatomy, ModalityKind, PipelineSpec, Plane

__all__ = [
    "OBLIQUE_THRESHOLD",
    "PIPELINES",
    "SOURCE_ANATOMIC_REGION",
    "SOURCE_BODY_PART",
    "SOURCE_PROTOCOL_NAME",
    "SOURCE_SERIES_DESCRIPTION",
    "SOURCE_STUDY_DESCRIPTION",
    "Anatomy",
    "ModalityKind",
    "PipelineSpec",
    "Plane",
    "Route",
    "RoutingDecision",
    "SeriesFacts",
    "SeriesRole",
    "StudyFacts",
    "detect_anatomy",
    "is_localizer",
    "mri_weighting",
    "plane_from_orientation",
    "route_study",
    "series_laterality",
]


@dataclass(frozen=True)
class SeriesFacts:
    """What the index knows about one series (PS3.3 General Series and Image modules)."""

    series_uid: str
    modality: str  # (0008,0060) e.g. "CR", "DX", "MR", "CT", "SR", "OT"
    sop_class_uid: str
    body_part: str | None  # (0018,0015) Body Part Examined
    series_description: str | None  # (0008,103E)
    protocol_name: str | None  # (0018,1030)
    anatomic_region_codes: tuple[tuple[str, str, str], ...]  # (0008,2218): (value, scheme, meaning)
    laterality: str | None  # (0020,0060) "L"/"R" or None
    image_lateralities: tuple[str, ...]  # distinct (0020,0062) values: "L", "R", "B", "U"
    image_orientation: tuple[float, ...] | None  # (0020,0037) of the first instance
    scanning_sequence: str | None  # (0018,0020) e.g. "SE", "GR", "SE\\IR"
    sequence_name: str | None  # (0018,0024)
    instance_count: int


@dataclass(frozen=True)
class StudyFacts:
    study_uid: str
    study_description: str | None  # (0008,1030)
    series: tuple[SeriesFacts, ...]


@dataclass(frozen=True)
class SeriesRole:
    """One input series of a route."""

    series_uid: str
    plane: Plane | None  # MRI only
    weighting: str | None  # MRI only: "PD", "T1", "T2", "T2*", "STIR" or None if unknown
    fat_suppressed: bool  # MRI only
    laterality: str | None  # "L", "R", "B" or None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SeriesRole:
        """The role as :meth:`Route.as_json` wrote it; a missing key or a bad value is a ValueError."""
        _require(data, ("series_uid", "plane", "weighting", "fat_suppressed", "laterality"), "series role")
        plane = data["plane"]
        return cls(
            series_uid=str(data["series_uid"]),
            plane=Plane(plane) if plane is not None else None,
            weighting=None if data["weighting"] is None else str(data["weighting"]),
            fat_suppressed=bool(data["fat_suppressed"]),
            laterality=_laterality(data["laterality"]),
        )


@dataclass(frozen=True)
class Route:
    """One pipeline's share of a complete study: the hand-off from routing to the worker's inference.

    Stored on the job as JSON (:meth:`as_json`) and read back typed (:meth:`from_json`), so both ends of
    the hand-off see the same object.
    """

    pipeline: str
    anatomy: Anatomy
    modality: ModalityKind
    laterality: str | None  # "L", "R", "B" (both sides present in the route) or None (unknown)
    series: tuple[SeriesRole, ...]

    def as_json(self) -> dict[str, Any]:
        """Plain JSON types only (the enums are strings)."""
        data = asdict(self)
        data["anatomy"], data["modality"] = str(self.anatomy), str(self.modality)
        data["series"] = [
            {**role, "plane": None if role["plane"] is None else str(role["plane"])}
            for role in data["series"]
        ]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Route:
        """The route :meth:`as_json` wrote; a missing key or a bad value is a ValueError naming it."""
        _require(data, ("pipeline", "anatomy", "modality", "laterality", "series"), "route")
        return cls(
            pipeline=str(data["pipeline"]),
            anatomy=Anatomy(data["anatomy"]),
            modality=ModalityKind(data["modality"]),
            laterality=_laterality(data["laterality"]),
            series=tuple(SeriesRole.from_json(role) for role in data["series"]),
        )


def _require(data: Mapping[str, Any], keys: Sequence[str], what: str) -> None:
    if not isinstance(data, Mapping):
        raise ValueError(f"a {what} must be a JSON object, got {type(data).__name__}")
    missing = [k for k in keys if k not in data]
    if missing:
        raise ValueError(f"{what} lacks {', '.join(missing)}")


def _laterality(value: Any) -> str | None:
    if value is None:
        return None
    if value not in ("L", "R", "B", "U"):
        raise ValueError(f"laterality must be L, R, B, U or null, not {value!r}")
    return str(value)


@dataclass(frozen=True)
class RoutingDecision:
    routes: tuple[Route, ...]
    reason: str  # why these routes, or why nothing was routed (names what was missing)

    @property
    def routed(self) -> bool:
        return bool(self.routes)


# Names of the attributes that decided a series' anatomy (the second item of detect_anatomy's answer).
SOURCE_BODY_PART = "Body Part Examined (0018,0015)"
SOURCE_SERIES_DESCRIPTION = "Series Description (0008,103E)"
SOURCE_STUDY_DESCRIPTION = "Study Description (0008,1030)"
SOURCE_PROTOCOL_NAME = "Protocol Name (0018,1030)"
SOURCE_ANATOMIC_REGION = "Anatomic Region Sequence (0008,2218)"

# --- Series kind (PS3.6 Annex A SOP Class UIDs) ------------------------------------------------------

_STORAGE_ROOT = "1.2.840.10008.5.1.4.1.1"
# Image classes by kind: the receiver's own table (orthonode.sop_classes), so routing knows exactly what
# the node accepts. Spectroscopy is MR without images.
_RADIOGRAPH_SOP_CLASSES = uids_of(SopKind.RADIOGRAPH)
_MR_SOP_CLASSES = uids_of(SopKind.MR, SopKind.MR_MULTIFRAME)
_MR_MULTI_FRAME_SOP_CLASSES = uids_of(SopKind.MR_MULTIFRAME)
_MR_SPECTROSCOPY = f"{_STORAGE_ROOT}.4.2"
_CT_SOP_CLASSES = uids_of(SopKind.CT)
# SOP Class families that are results or derived objects, never pipeline inputs.
_RESULT_SOP_FAMILIES = (
    f"{_STORAGE_ROOT}.88",  # Structured Reports, Key Object Selection
    f"{_STORAGE_ROOT}.7",  # Secondary Capture (single and multi-frame)
    f"{_STORAGE_ROOT}.11",  # Presentation States
    f"{_STORAGE_ROOT}.66",  # Raw Data, Spatial Registration, Fiducials, Segmentation, Surface Segmentation
    f"{_STORAGE_ROOT}.104",  # Encapsulated Documents
)
_RESULT_MODALITIES = frozenset({"SR", "KO", "PR", "SEG", "OT", "DOC", "REG"})


class _Kind(StrEnum):
    RADIOGRAPH = "radiograph"
    MRI = "MRI"
    CT = "CT"
    RESULT = "result"
    OTHER = "other"


_INPUT_KINDS: dict[_Kind, ModalityKind] = {
    _Kind.RADIOGRAPH: ModalityKind.RADIOGRAPH,
    _Kind.MRI: ModalityKind.MRI,
}
_KIND_LABEL: dict[ModalityKind, str] = {ModalityKind.RADIOGRAPH: "radiograph", ModalityKind.MRI: "MRI"}


def _in_family(uid: str, root: str) -> bool:
    return uid == root or uid.startswith(root + ".")


def _series_kind(series: SeriesFacts) -> _Kind:
    sop = series.sop_class_uid.strip()
    modality = series.modality.strip().upper()
    if modality in _RESULT_MODALITIES or any(_in_family(sop, root) for root in _RESULT_SOP_FAMILIES):
        return _Kind.RESULT
    if sop == _MR_SPECTROSCOPY:  # MR, but no images
        return _Kind.OTHER
    if sop in _RADIOGRAPH_SOP_CLASSES:
        return _Kind.RADIOGRAPH
    if sop in _MR_SOP_CLASSES:
        return _Kind.MRI
    if sop in _CT_SOP_CLASSES:
        return _Kind.CT
    if modality in ("CR", "DX"):
        return _Kind.RADIOGRAPH
    if modality == "MR":
        return _Kind.MRI
    if modality == "CT":
        return _Kind.CT
    return _Kind.OTHER


# --- Text normalisation and keyword matching ----------------------------------------------------------


def _normalize(text: str | None) -> str:
    """Upper case, accents stripped, every run of characters other than A-Z, 0-9 and ``*`` one space."""
    if not text:
        return ""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).upper()
    return " ".join(re.sub(r"[^A-Z0-9*]+", " ", plain).split())


def _words(*alternatives: str) -> re.Pattern[str]:
    """A pattern matching any alternative as whole words: no letter may touch either end."""
    return re.compile(r"(?<![A-Z])(?:" + "|".join(alternatives) + r")(?![A-Z])")


_ANATOMY_KEYWORDS: dict[Anatomy, re.Pattern[str]] = {
    Anatomy.KNEE: _words(
        r"KNEES?", r"GENOUX?", r"PATELL(?:A|AE|AR)", r"PATELLOFEMORAL", r"MENISC[A-Z]*", r"ACL", r"PCL"
    ),
    Anatomy.HIP: _words(r"HIPS?", r"HANCHES?", r"ACETABUL[A-Z]*", r"FEMORAL HEADS?"),
    Anatomy.SHOULDER: _words(
        r"SHOULDERS?", r"EPAULES?", r"ROTATOR CUFFS?", r"GLENOHUMERAL", r"SUPRASPINATUS"
    ),
    Anatomy.ANKLE: _words(r"ANKLES?", r"CHEVILLES?", r"TALUS", r"TALOCRURAL", r"ATFL"),
}


def _anatomies_in_text(text: str | None) -> set[Anatomy]:
    normalized = _normalize(text)
    if not normalized:
        return set()
    return {anatomy for anatomy, pattern in _ANATOMY_KEYWORDS.items() if pattern.search(normalized)}


# --- Anatomy ------------------------------------------------------------------------------------------

# PS3.16 Annex L defined terms for Body Part Examined (keys without spaces or underscores).
_BODY_PART_TERMS: dict[str, Anatomy] = {
    "KNEE": Anatomy.KNEE,
    "KNEEJOINT": Anatomy.KNEE,
    "PATELLA": Anatomy.KNEE,
    "HIP": Anatomy.HIP,
    "HIPJOINT": Anatomy.HIP,
    "SHOULDER": Anatomy.SHOULDER,
    "SHOULDERJOINT": Anatomy.SHOULDER,
    "ANKLE": Anatomy.ANKLE,
    "ANKLEJOINT": Anatomy.ANKLE,
}
# PS3.16 Annex L terms for regions that are clearly not one of the supported joints: a series so labelled
# is not fed to a joint pipeline even when a description names the joint (a foot series in an ankle study).
_OTHER_BODY_PARTS = frozenset(
    {
        "FOOT",
        "TOE",
        "CALCANEUS",
        "LOWERLEG",
        "TIBIA",
        "FIBULA",
        "FEMUR",
        "HAND",
        "FINGER",
        "THUMB",
        "WRIST",
        "FOREARM",
        "ELBOW",
        "HUMERUS",
        "CLAVICLE",
        "SCAPULA",
        "ACJOINT",
        "HEAD",
        "BRAIN",
        "SKULL",
        "NECK",
        "CHEST",
        "BREAST",
        "ABDOMEN",
        "SPINE",
        "CSPINE",
        "TSPINE",
        "LSPINE",
    }
)
# (coding scheme designator, code value) of Anatomic Region Sequence items.
_REGION_CODES: dict[tuple[str, str], Anatomy] = {
    ("SCT", "72696002"): Anatomy.KNEE,  # Knee (CID 4031)
    ("SCT", "24136001"): Anatomy.HIP,  # Hip joint
    ("SCT", "16982005"): Anatomy.SHOULDER,  # Shoulder
    ("SCT", "70258002"): Anatomy.ANKLE,  # Ankle joint
    ("SRT", "T-15720"): Anatomy.KNEE,  # legacy SNOMED-RT: knee joint
    ("SRT", "T-15710"): Anatomy.HIP,  # hip joint
    ("SRT", "T-15420"): Anatomy.SHOULDER,  # shoulder joint
    ("SRT", "T-15750"): Anatomy.ANKLE,  # ankle joint
}
_SCHEME_ALIASES = {"SNM3": "SRT", "SNOMED-CT": "SCT", "SNOMEDCT": "SCT"}


@dataclass(frozen=True)
class _Finding:
    anatomy: Anatomy | None
    source: str  # the attribute that decided; "" when none did
    value: str  # what it held (for the reason)


def _single(anatomies: set[Anatomy]) -> Anatomy | None:
    return next(iter(anatomies)) if len(anatomies) == 1 else None


def _find_anatomy(series: SeriesFacts, study_description: str | None) -> _Finding:
    body_part = (series.body_part or "").strip()
    if body_part:
        key = re.sub(r"[^A-Z0-9]", "", body_part.upper())
        if key in _BODY_PART_TERMS:
            return _Finding(_BODY_PART_TERMS[key], SOURCE_BODY_PART, body_part)
        if key in _OTHER_BODY_PARTS:
            return _Finding(None, SOURCE_BODY_PART, body_part)
        from_words = _single(_anatomies_in_text(body_part))
        if from_words is not None:
            return _Finding(from_words, SOURCE_BODY_PART, body_part)

    for source, text in (
        (SOURCE_SERIES_DESCRIPTION, series.series_description),
        (SOURCE_STUDY_DESCRIPTION, study_description),
        (SOURCE_PROTOCOL_NAME, series.protocol_name),
    ):
        anatomy = _single(_anatomies_in_text(text))
        if anatomy is not None:
            return _Finding(anatomy, source, (text or "").strip())

    coded: set[Anatomy] = set()
    for value, scheme, _meaning in series.anatomic_region_codes:
        designator = scheme.strip().upper()
        designator = _SCHEME_ALIASES.get(designator, designator)
        found = _REGION_CODES.get((designator, value.strip().upper()))
        if found is not None:
            coded.add(found)
    if not coded:
        for _value, _scheme, meaning in series.anatomic_region_codes:
            coded |= _anatomies_in_text(meaning)
    anatomy = _single(coded)
    if anatomy is not None:
        codes = ", ".join(f"({v}, {s}, {m})" for v, s, m in series.anatomic_region_codes)
        return _Finding(anatomy, SOURCE_ANATOMIC_REGION, codes)
    return _Finding(None, "", "")


def detect_anatomy(series: SeriesFacts, study_description: str | None) -> tuple[Anatomy | None, str]:
    """The supported joint a series shows, and the attribute that decided it (rule 2 of the module).

    The second item is one of the ``SOURCE_*`` names. ``(None, SOURCE_BODY_PART)`` means Body Part
    Examined names a region that is not a supported joint; ``(None, "")`` means no source decided.
    """
    finding = _find_anatomy(series, study_description)
    return finding.anatomy, finding.source


# --- MRI plane, weighting, localizers -----------------------------------------------------------------

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
    normalized = _normalize(text)
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


_LOCALIZER_WORDS = _words(r"LOC", r"LOCALI[SZ]ERS?", r"SCOUTS?", r"SURVEY", r"3 ?PLANE", r"TRI ?PLANE")
_MIN_MR_SINGLE_FRAME_IMAGES = 3


def is_localizer(series: SeriesFacts) -> bool:
    """A localizer/scout MRI series: its description or protocol says LOC, LOCALIZER, SCOUT, SURVEY,
    3-PLANE, or it has fewer than 3 instances of a single-frame SOP Class (MR Image Storage)."""
    for text in (series.series_description, series.protocol_name):
        if _LOCALIZER_WORDS.search(_normalize(text)):
            return True
    multi_frame = series.sop_class_uid.strip() in _MR_MULTI_FRAME_SOP_CLASSES
    return not multi_frame and series.instance_count < _MIN_MR_SINGLE_FRAME_IMAGES


# --- Laterality ---------------------------------------------------------------------------------------


def _side(value: str | None) -> str | None:
    side = (value or "").strip().upper()
    return side if side in ("L", "R", "B") else None


def _combine_sides(sides: Iterable[str | None]) -> str | None:
    known = {s for s in sides if s is not None}
    if not known:
        return None
    if "B" in known or {"L", "R"} <= known:
        return "B"
    return next(iter(known))


def series_laterality(series: SeriesFacts) -> str | None:
    """Laterality (0020,0060) if L or R, else from the Image Laterality (0020,0062) values: one side gives
    it, B or both L and R give B, U or nothing gives None."""
    side = _side(series.laterality)
    if side is not None:
        return side
    return _combine_sides(_side(v) for v in series.image_lateralities)


# --- Routing ------------------------------------------------------------------------------------------


def _anatomy_list() -> str:
    names = [a.value for a in Anatomy]
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]


_WHERE_LOOKED = "Body Part Examined, series/study descriptions, protocol name or Anatomic Region Sequence"


def _distinct(values: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for v in values:
        seen.setdefault(v, None)
    return list(seen)


def _uids(series: Sequence[SeriesFacts]) -> str:
    return ", ".join(s.series_uid for s in series)


def _modality(series: SeriesFacts) -> str:
    return series.modality.strip().upper() or "?"


def _unused_modality_notes(
    series: Sequence[SeriesFacts], kinds: dict[str, _Kind], study_description: str | None
) -> list[str]:
    """Notes for the CT series (accepted, no pipeline yet) and the series of any other modality."""
    notes: list[str] = []
    for kind in (_Kind.CT, _Kind.OTHER):
        by_modality: dict[str, list[SeriesFacts]] = {}
        for s in series:
            if kinds[s.series_uid] is kind:
                by_modality.setdefault(_modality(s), []).append(s)
        for modality, group in by_modality.items():
            found = {_find_anatomy(s, study_description).anatomy for s in group}
            label = " ".join([*sorted(a.value for a in found if a is not None), modality])
            if kind is _Kind.CT:
                notes.append(
                    f"{label}: accepted by the node, but no task pipeline uses CT yet ({len(group)} series)"
                )
            else:
                notes.append(f"{label}: no task pipeline uses this modality ({len(group)} series)")
    return notes


def _assign_anatomies(
    inputs: Sequence[SeriesFacts], kinds: dict[str, _Kind], facts: StudyFacts, modalities: Sequence[str]
) -> tuple[dict[str, Anatomy], list[str]]:
    """Each input series' supported joint (rule 2), with adoption inside each modality kind (rule 3)."""
    findings = {s.series_uid: _find_anatomy(s, facts.study_description) for s in inputs}
    anatomy_of: dict[str, Anatomy] = {}
    notes: list[str] = []
    nowhere: list[SeriesFacts] = []  # undetermined, in a kind where no series was decided
    for kind, modality_kind in _INPUT_KINDS.items():
        label = _KIND_LABEL[modality_kind]
        members = [s for s in inputs if kinds[s.series_uid] is kind]
        decided = [findings[s.series_uid] for s in members if findings[s.series_uid].source]
        undetermined = [s for s in members if not findings[s.series_uid].source]
        for s in members:
            anatomy = findings[s.series_uid].anatomy
            if anatomy is not None:
                anatomy_of[s.series_uid] = anatomy
        others = [f.value for f in decided if f.anatomy is None]
        for value in _distinct(others):
            notes.append(
                f"{value} {label}: Body Part Examined names no supported joint ({others.count(value)} series)"
            )
        if not undetermined:
            continue
        decided_anatomies = {f.anatomy for f in decided}
        adopted = None if None in decided_anatomies else _single({a for a in decided_anatomies if a})
        if adopted is not None:
            for s in undetermined:
                anatomy_of[s.series_uid] = adopted
            notes.append(
                f"{len(undetermined)} {label} series without a determinable anatomy adopted {adopted.value} "
                f"from the other {label} series ({_uids(undetermined)})"
            )
        elif decided:
            notes.append(
                f"ignored {len(undetermined)} {label} series without a determinable anatomy "
                f"({_uids(undetermined)}): the other {label} series do not share one supported joint"
            )
        else:
            nowhere.extend(undetermined)
    if nowhere:
        notes.append(
            f"no {_anatomy_list()} anatomy found in {_WHERE_LOOKED} for {len(nowhere)} radiograph/MRI "
            f"series (modalities: {', '.join(modalities)})"
        )
    return anatomy_of, notes


def route_study(facts: StudyFacts) -> RoutingDecision:
    """Which pipelines the complete study feeds, by the rules of the module docstring."""
    if not facts.series:
        return RoutingDecision((), "not routed: the study has no series")

    modalities = _distinct(_modality(s) for s in facts.series)
    notes: list[str] = []

    empty = [s for s in facts.series if s.instance_count <= 0]
    present = [s for s in facts.series if s.instance_count > 0]
    if empty:
        notes.append(f"skipped {len(empty)} series without instances ({_uids(empty)})")

    kinds = {s.series_uid: _series_kind(s) for s in present}
    results = [s for s in present if kinds[s.series_uid] is _Kind.RESULT]
    inputs = [s for s in present if kinds[s.series_uid] in _INPUT_KINDS]
    if results:
        seen = ", ".join(_distinct(_modality(s) for s in results))
        if len(results) == len(present):
            return RoutingDecision(
                (),
                "not routed: the study holds only result or derived objects "
                f"({len(results)} series: {seen}); structured reports, secondary captures and other "
                "results (such as the node's own results sent back) are never pipeline inputs",
            )
        notes.append(f"ignored {len(results)} result/derived series ({seen}): never pipeline inputs")
    notes.extend(_unused_modality_notes(present, kinds, facts.study_description))

    anatomy_of, anatomy_notes = _assign_anatomies(inputs, kinds, facts, modalities)
    notes.extend(anatomy_notes)

    # Group by (anatomy, modality kind), in study order.
    groups: dict[tuple[Anatomy, ModalityKind], list[SeriesFacts]] = {}
    for s in inputs:
        anatomy = anatomy_of.get(s.series_uid)
        if anatomy is not None:
            groups.setdefault((anatomy, _INPUT_KINDS[kinds[s.series_uid]]), []).append(s)

    routes: list[Route] = []
    route_notes: list[str] = []
    for spec in PIPELINES:
        spec_series = groups.get((spec.anatomy, spec.modality))
        if not spec_series:
            continue
        route, detail, excluded = _build_route(spec, spec_series)
        notes.extend(excluded)
        if route is None:
            notes.append(f"{spec.name}: {detail}")
        else:
            routes.append(route)
            route_notes.append(f"{spec.name} ({detail})")

    served = {(spec.anatomy, spec.modality) for spec in PIPELINES}
    for (anatomy, modality_kind), members in groups.items():
        if (anatomy, modality_kind) not in served:
            notes.append(
                f"{anatomy.value} {_KIND_LABEL[modality_kind]}: no task pipeline for this anatomy and "
                f"modality ({len(members)} series)"
            )

    if routes:
        reason = "routed: " + ", ".join(route_notes)
        return RoutingDecision(tuple(routes), "; ".join([reason, *notes]))
    if not notes:  # defensive: every path above leaves a note when nothing is routed
        notes.append(f"nothing routable (modalities: {', '.join(modalities)})")
    return RoutingDecision((), "not routed: " + "; ".join(notes))


def _build_route(spec: PipelineSpec, members: Sequence[SeriesFacts]) -> tuple[Route | None, str, list[str]]:
    """The route of one pipeline over the series of its (anatomy, kind): (route or None, detail, notes)."""
    roles: list[SeriesRole] = []
    notes: list[str] = []
    if spec.modality is ModalityKind.RADIOGRAPH:
        roles = [SeriesRole(s.series_uid, None, None, False, series_laterality(s)) for s in members]
    else:
        localizers = [s for s in members if is_localizer(s)]
        localizer_uids = {s.series_uid for s in localizers}
        unusable: list[tuple[SeriesFacts, Plane]] = []
        for s in members:
            if s.series_uid in localizer_uids:
                continue
            plane = plane_from_orientation(s.image_orientation)
            if plane is not None and plane not in spec.planes:
                unusable.append((s, plane))
                continue
            weighting, fat_suppressed = mri_weighting(s)
            roles.append(SeriesRole(s.series_uid, plane, weighting, fat_suppressed, series_laterality(s)))
        if localizers:
            notes.append(f"{spec.name}: excluded {len(localizers)} localizer series ({_uids(localizers)})")
        if unusable:
            described = ", ".join(f"{s.series_uid} {plane.value}" for s, plane in unusable)
            notes.append(
                f"{spec.name}: excluded {len(unusable)} series in a plane it does not use ({described})"
            )
    if not roles:
        return None, f"no usable series among {len(members)} {_KIND_LABEL[spec.modality]} series", notes

    laterality = _combine_sides(r.laterality for r in roles)
    parts = [f"{len(roles)} series"]
    if spec.modality is ModalityKind.MRI:
        planes = _distinct(r.plane.value if r.plane is not None else "unknown plane" for r in roles)
        parts.append(", ".join(planes))
    parts.append(f"laterality {laterality or 'unknown'}")
    route = Route(spec.name, spec.anatomy, spec.modality, laterality, tuple(roles))
    return route, "; ".join(parts), notes
