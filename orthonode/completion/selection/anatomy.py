"""Rule 2 of routing: the supported joint a series shows, from Body Part Examined (0018,0015) with the
PS3.16 Annex L defined terms, the descriptions and protocol name, and the Anatomic Region Sequence
(0008,2218) codes (PS3.3 Section 10.5, CID 4031). See the package docstring for the full rule."""

from __future__ import annotations

import re
from dataclasses import dataclass

from orthonode.completion.selection.facts import SeriesFacts
from orthonode.completion.selection.text import normalize, words
from orthonode.tasks.pipelines import Anatomy

# Names of the attributes that decided a series' anatomy (the second item of detect_anatomy's answer).
SOURCE_BODY_PART = "Body Part Examined (0018,0015)"
SOURCE_SERIES_DESCRIPTION = "Series Description (0008,103E)"
SOURCE_STUDY_DESCRIPTION = "Study Description (0008,1030)"
SOURCE_PROTOCOL_NAME = "Protocol Name (0018,1030)"
SOURCE_ANATOMIC_REGION = "Anatomic Region Sequence (0008,2218)"

_ANATOMY_KEYWORDS: dict[Anatomy, re.Pattern[str]] = {
    Anatomy.KNEE: words(
        r"KNEES?", r"GENOUX?", r"PATELL(?:A|AE|AR)", r"PATELLOFEMORAL", r"MENISC[A-Z]*", r"ACL", r"PCL"
    ),
    Anatomy.HIP: words(r"HIPS?", r"HANCHES?", r"ACETABUL[A-Z]*", r"FEMORAL HEADS?"),
    Anatomy.SHOULDER: words(r"SHOULDERS?", r"EPAULES?", r"ROTATOR CUFFS?", r"GLENOHUMERAL", r"SUPRASPINATUS"),
    Anatomy.ANKLE: words(r"ANKLES?", r"CHEVILLES?", r"TALUS", r"TALOCRURAL", r"ATFL"),
}


def anatomies_in_text(text: str | None) -> set[Anatomy]:
    normalized = normalize(text)
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
class AnatomyFinding:
    anatomy: Anatomy | None
    source: str  # the attribute that decided; "" when none did
    value: str  # what it held (for the reason)


def single_anatomy(anatomies: set[Anatomy]) -> Anatomy | None:
    return next(iter(anatomies)) if len(anatomies) == 1 else None


def find_anatomy(series: SeriesFacts, study_description: str | None) -> AnatomyFinding:
    body_part = (series.body_part or "").strip()
    if body_part:
        key = re.sub(r"[^A-Z0-9]", "", body_part.upper())
        if key in _BODY_PART_TERMS:
            return AnatomyFinding(_BODY_PART_TERMS[key], SOURCE_BODY_PART, body_part)
        if key in _OTHER_BODY_PARTS:
            return AnatomyFinding(None, SOURCE_BODY_PART, body_part)
        from_words = single_anatomy(anatomies_in_text(body_part))
        if from_words is not None:
            return AnatomyFinding(from_words, SOURCE_BODY_PART, body_part)

    for source, text in (
        (SOURCE_SERIES_DESCRIPTION, series.series_description),
        (SOURCE_STUDY_DESCRIPTION, study_description),
        (SOURCE_PROTOCOL_NAME, series.protocol_name),
    ):
        anatomy = single_anatomy(anatomies_in_text(text))
        if anatomy is not None:
            return AnatomyFinding(anatomy, source, (text or "").strip())

    coded: set[Anatomy] = set()
    for value, scheme, _meaning in series.anatomic_region_codes:
        designator = scheme.strip().upper()
        designator = _SCHEME_ALIASES.get(designator, designator)
        found = _REGION_CODES.get((designator, value.strip().upper()))
        if found is not None:
            coded.add(found)
    if not coded:
        for _value, _scheme, meaning in series.anatomic_region_codes:
            coded |= anatomies_in_text(meaning)
    anatomy = single_anatomy(coded)
    if anatomy is not None:
        codes = ", ".join(f"({v}, {s}, {m})" for v, s, m in series.anatomic_region_codes)
        return AnatomyFinding(anatomy, SOURCE_ANATOMIC_REGION, codes)
    return AnatomyFinding(None, "", "")


def detect_anatomy(series: SeriesFacts, study_description: str | None) -> tuple[Anatomy | None, str]:
    """The supported joint a series shows, and the attribute that decided it (rule 2 of the module).

    The second item is one of the ``SOURCE_*`` names. ``(None, SOURCE_BODY_PART)`` means Body Part
    Examined names a region that is not a supported joint; ``(None, "")`` means no source decided.
    """
    finding = find_anatomy(series, study_description)
    return finding.anatomy, finding.source
