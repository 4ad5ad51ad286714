"""The projection of one radiograph from its header: frontal, lateral, axial patellar, oblique, another
projection, a plate with two views, or unknown (issue 14: only frontal knee views are KL-graded).

Pure, like the rest of the package: :class:`ViewFacts` (strings and code triples, read from the header
by ``orthonode.inference.views``) in, :class:`ViewDecision` out. No pydicom.

Sources, in the order :func:`decide_view` reads them; the first that names exactly one kind decides:

1. View Code Sequence (0054,0220) (PS3.3 C.8.11.5 DX Positioning Module, C.8.1.2 CR Image Module),
   with the codes of CID 4010 "DX View" (PS3.16): SNOMED CT (``SCT``) and the legacy SNOMED-RT
   (``SRT``, also written ``SNM3``) values of the same concepts. Two items naming different kinds
   (an AP and a lateral) are a two-view plate. A code outside the tables is read by its Code Meaning.
2. View Position (0018,5101) (PS3.3 C.8.11.5, C.8.1.1): AP, PA (frontal), LL, RL and the vendor values
   LAT, LATERAL, ML, LM (lateral), RLO, LLO, OBL, OBLIQUE (oblique). RLD and LLD (decubitus) name the
   patient's position, not the projection, and do not decide.
3. Image Comments (0020,4000) and Acquisition Device Processing Description (0018,1400), per image:
   the keywords below; a text naming two kinds (``AP + LAT``) is a two-view plate.
4. Series Description (0008,103E), Protocol Name (0018,1030), Study Description (0008,1030): the same
   keywords; a text naming two kinds does *not* decide (``KNEE AP/LAT`` usually names a series of two
   images, one per view), and the reason says so.

Keywords (whole words, case and accents ignored, see :mod:`.text`):

- frontal: AP, PA, FRONTAL, ANTEROPOSTERIOR, POSTEROANTERIOR, FACE (French), Rosenberg, Schuss and
  fixed-flexion (PA views in flexion, KL-gradeable);
- lateral: LAT, LATERAL, LATERALE, PROFIL (French), cross-table / X-table lateral;
- axial patellar (not KL-graded): SKYLINE, SUNRISE, MERCHANT, LAURIN, SETTEGAST, axial or tangential
  patella / patellofemoral;
- oblique: OBL, OBLIQUE;
- another projection: TUNNEL, NOTCH, INTERCONDYLAR (Holmblad, Camp-Coventry);
- a two-view plate: TWO VIEWS ON ONE, 2 VIEWS ON 1, COMBINED VIEWS (any source).

``BILATERAL`` is not ``LATERAL`` (word boundaries). Nothing deciding gives ``ViewKind.UNKNOWN``, the
signal for the image-based classifier (``ViewDecision.from_header`` is False).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from orthonode.completion.selection.anatomy import (
    SOURCE_PROTOCOL_NAME,
    SOURCE_SERIES_DESCRIPTION,
    SOURCE_STUDY_DESCRIPTION,
)
from orthonode.completion.selection.text import normalize, words

SOURCE_VIEW_CODE = "View Code Sequence (0054,0220)"
SOURCE_VIEW_POSITION = "View Position (0018,5101)"
SOURCE_IMAGE_COMMENTS = "Image Comments (0020,4000)"
SOURCE_PROCESSING_DESCRIPTION = "Acquisition Device Processing Description (0018,1400)"


class ViewKind(StrEnum):
    FRONTAL = "frontal"
    LATERAL = "lateral"
    AXIAL_PATELLA = "axial patellar"
    OBLIQUE = "oblique"
    OTHER = "other projection"
    TWO_VIEW = "two-view plate"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class ViewFacts:
    """The header attributes that name a radiograph's projection (strings as stored, ``None`` if absent)."""

    view_codes: tuple[tuple[str, str, str], ...] = ()  # (0054,0220) items: (value, scheme, meaning)
    view_position: str | None = None  # (0018,5101)
    image_comments: str | None = None  # (0020,4000)
    processing_description: str | None = None  # (0018,1400)
    series_description: str | None = None  # (0008,103E)
    protocol_name: str | None = None  # (0018,1030)
    study_description: str | None = None  # (0008,1030)


@dataclass(frozen=True)
class ViewDecision:
    """What the header says about the projection: the kind, the attribute that decided ("" when none
    did), the value it held, and a sentence for the report or the job's detail."""

    kind: ViewKind
    source: str
    value: str
    reason: str

    @property
    def from_header(self) -> bool:
        """False when the header is silent or ambiguous: the caller asks the image classifier."""
        return self.kind is not ViewKind.UNKNOWN

    @property
    def gradeable(self) -> bool:
        """Only a frontal view (AP, PA, Rosenberg) is KL-graded."""
        return self.kind is ViewKind.FRONTAL


# CID 4010 "DX View" codes by kind: (scheme, value). SCT values and their SNOMED-RT equivalents (checked
# against pydicom's dictionary and its SNOMED mapping by the tests).
_VIEW_CODES: dict[tuple[str, str], ViewKind] = {
    ("SCT", "399348003"): ViewKind.FRONTAL,  # antero-posterior
    ("SCT", "272479007"): ViewKind.FRONTAL,  # postero-anterior
    ("SCT", "399033003"): ViewKind.FRONTAL,  # frontal
    ("SRT", "R-10206"): ViewKind.FRONTAL,
    ("SRT", "R-40888"): ViewKind.FRONTAL,
    ("SRT", "R-10214"): ViewKind.FRONTAL,  # postero-anterior in older editions of CID 4010
    ("SRT", "R-10202"): ViewKind.FRONTAL,
    ("SCT", "399067008"): ViewKind.LATERAL,  # lateral
    ("SCT", "399198007"): ViewKind.LATERAL,  # right lateral
    ("SCT", "399173006"): ViewKind.LATERAL,  # left lateral
    ("SCT", "399352003"): ViewKind.LATERAL,  # lateral-medial
    ("SCT", "399260004"): ViewKind.LATERAL,  # medial-lateral
    ("SRT", "R-102CD"): ViewKind.LATERAL,
    ("SRT", "R-10232"): ViewKind.LATERAL,
    ("SRT", "R-10236"): ViewKind.LATERAL,
    ("SRT", "R-10228"): ViewKind.LATERAL,
    ("SRT", "R-10224"): ViewKind.LATERAL,
    ("SCT", "399061009"): ViewKind.AXIAL_PATELLA,  # axial (of a knee: the patellar axial view)
    ("SCT", "399110001"): ViewKind.AXIAL_PATELLA,  # tangential
    ("SRT", "R-10241"): ViewKind.AXIAL_PATELLA,
    ("SRT", "R-102C2"): ViewKind.AXIAL_PATELLA,
    ("SCT", "399182000"): ViewKind.OBLIQUE,  # oblique
    ("SCT", "260427002"): ViewKind.OBLIQUE,  # lateral oblique
    ("SCT", "260426006"): ViewKind.OBLIQUE,  # medial oblique
    ("SCT", "399099002"): ViewKind.OBLIQUE,  # latero-medial oblique
    ("SCT", "399368009"): ViewKind.OBLIQUE,  # medio-lateral oblique
    ("SCT", "399312000"): ViewKind.OBLIQUE,  # antero-posterior oblique
    ("SCT", "399059000"): ViewKind.OBLIQUE,  # postero-anterior oblique
    ("SCT", "399160007"): ViewKind.OBLIQUE,  # frontal oblique
    ("SRT", "R-102C1"): ViewKind.OBLIQUE,
    ("SRT", "R-40783"): ViewKind.OBLIQUE,
    ("SRT", "R-40782"): ViewKind.OBLIQUE,
    ("SRT", "R-10230"): ViewKind.OBLIQUE,
    ("SRT", "R-10226"): ViewKind.OBLIQUE,
}
_SCHEME_ALIASES = {"SNM3": "SRT", "SNOMED-CT": "SCT", "SNOMEDCT": "SCT"}

_VIEW_POSITIONS: dict[str, ViewKind] = {
    "AP": ViewKind.FRONTAL,
    "PA": ViewKind.FRONTAL,
    "LL": ViewKind.LATERAL,
    "RL": ViewKind.LATERAL,
    "LAT": ViewKind.LATERAL,
    "LATERAL": ViewKind.LATERAL,
    "ML": ViewKind.LATERAL,
    "LM": ViewKind.LATERAL,
    "RLO": ViewKind.OBLIQUE,
    "LLO": ViewKind.OBLIQUE,
    "OBL": ViewKind.OBLIQUE,
    "OBLIQUE": ViewKind.OBLIQUE,
}

# Checked before the single kinds: a phrase naming a kind that contains another kind's word.
_KEYWORDS: tuple[tuple[ViewKind, re.Pattern[str]], ...] = (
    (ViewKind.TWO_VIEW, words(r"(?:TWO|2) ?VIEWS? ON (?:ONE|1)", r"COMBINED VIEWS?")),
    (
        ViewKind.AXIAL_PATELLA,
        words(
            r"SKYLINE",
            r"SUNRISE",
            r"MERCHANT",
            r"LAURIN",
            r"SETTEGAST",
            r"(?:AXIAL|TANGENTIAL) (?:PATELL(?:A|AE|AR)|PATELLOFEMORAL)",
            r"(?:PATELL(?:A|AE|AR)|PATELLOFEMORAL) (?:AXIAL|TANGENTIAL)",
        ),
    ),
    (ViewKind.OTHER, words(r"TUNNEL", r"NOTCH", r"INTERCONDYLAR", r"HOLMBLAD", r"CAMP COVENTRY")),
    (ViewKind.OBLIQUE, words(r"OBL", r"OBLIQUES?")),
    (
        ViewKind.LATERAL,
        words(r"LAT", r"LATERALE?S?", r"PROFIL", r"CROSS ?TABLE", r"X ?TABLE"),
    ),
    (
        ViewKind.FRONTAL,
        words(
            r"AP",
            r"PA",
            r"FRONTAL",
            r"FACE",
            r"ANTERO ?POSTERIOR",
            r"POSTERO ?ANTERIOR",
            r"ROSENBERG",
            r"SCHUSS",
            r"FIXED ?FLEXION",
        ),
    ),
)
# A phrase already matched by a kind above must not also count for a kind below it.
_CONSUMES = frozenset({ViewKind.TWO_VIEW, ViewKind.AXIAL_PATELLA})


def kinds_in_text(text: str | None) -> set[ViewKind]:
    """Every view kind ``text`` names (see the module docstring's keywords)."""
    remaining = normalize(text)
    found: set[ViewKind] = set()
    for kind, pattern in _KEYWORDS:
        if pattern.search(remaining):
            found.add(kind)
            if kind in _CONSUMES:
                remaining = pattern.sub(" ", remaining)
    return found


def _code_kinds(codes: Iterable[tuple[str, str, str]]) -> set[ViewKind]:
    found: set[ViewKind] = set()
    for value, scheme, meaning in codes:
        designator = scheme.strip().upper()
        designator = _SCHEME_ALIASES.get(designator, designator)
        kind = _VIEW_CODES.get((designator, value.strip().upper()))
        if kind is None:
            by_meaning = kinds_in_text(meaning)
            kind = next(iter(by_meaning)) if len(by_meaning) == 1 else None
        if kind is not None:
            found.add(kind)
    return found


def _decided(kind: ViewKind, source: str, value: str) -> ViewDecision:
    return ViewDecision(kind, source, value, f"{kind.value} view from {source} {value!r}")


def _per_image(kinds: set[ViewKind], source: str, value: str) -> ViewDecision | None:
    """One image's own attribute: one kind decides, two or more are two views on one plate."""
    if not kinds:
        return None
    if len(kinds) == 1:
        return _decided(next(iter(kinds)), source, value)
    named = " and ".join(sorted(k.value for k in kinds))
    return ViewDecision(
        ViewKind.TWO_VIEW, source, value, f"two-view plate: {source} {value!r} names {named} views"
    )


def decide_view(facts: ViewFacts) -> ViewDecision:
    """The projection the header names, by the rules of the module docstring."""
    codes = ", ".join(f"({v}, {s}, {m})" for v, s, m in facts.view_codes)
    decision = _per_image(_code_kinds(facts.view_codes), SOURCE_VIEW_CODE, codes)
    if decision is not None:
        return decision
    position = (facts.view_position or "").strip().upper()
    if position in _VIEW_POSITIONS:
        return _decided(_VIEW_POSITIONS[position], SOURCE_VIEW_POSITION, position)
    for source, text in (
        (SOURCE_IMAGE_COMMENTS, facts.image_comments),
        (SOURCE_PROCESSING_DESCRIPTION, facts.processing_description),
    ):
        decision = _per_image(kinds_in_text(text), source, (text or "").strip())
        if decision is not None:
            return decision
    ambiguous: list[str] = []
    for source, text in (
        (SOURCE_SERIES_DESCRIPTION, facts.series_description),
        (SOURCE_PROTOCOL_NAME, facts.protocol_name),
        (SOURCE_STUDY_DESCRIPTION, facts.study_description),
    ):
        kinds = kinds_in_text(text)
        if ViewKind.TWO_VIEW in kinds:
            return _decided(ViewKind.TWO_VIEW, source, (text or "").strip())
        if len(kinds) == 1:
            return _decided(next(iter(kinds)), source, (text or "").strip())
        if kinds:
            ambiguous.append(f"{source} names {' and '.join(sorted(k.value for k in kinds))} views")
    silent = "no view in the header (View Code Sequence, View Position, comments, descriptions)"
    detail = f"{silent}; " + "; ".join(ambiguous) if ambiguous else silent
    if position:
        detail += f"; View Position {position!r} names no projection"
    return ViewDecision(ViewKind.UNKNOWN, "", "", detail)
