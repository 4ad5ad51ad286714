"""Every coded concept the node writes, in one place (PS3.16; PS3.3 section 8 Code Sequence Macro).

Standard codes come from DICOM's own dictionary (``pydicom.sr.codedict.codes``): SNOMED CT (``SCT``) for
anatomy, laterality, present/absent and yes/no; DCM (PS3.16 Annex D) for probability, the algorithm and
equipment concepts. A test checks each of them against that dictionary, so none is typed from memory.

SNOMED CT has no pre-coordinated concept for the questions the OrthoFoundation task heads answer
("anterior cruciate ligament injury on this study", "Kellgren-Lawrence grade 2", "KL progression within
4 years"), and no concept that pydicom's dictionary lists for them. Those concepts are ours, in one private
coding scheme (PS3.16 section 8, "Private Coding Schemes": a designator beginning with ``99``):

- Coding Scheme Designator: ``99ORTHO``
- Coding Scheme Name: "OrthoFoundation node codes"
- Coding Scheme Version: ``1.0`` (bump when a code's meaning changes; never reuse a code value)
- Coding Scheme Responsible Organization: "OrthoFoundation project"

Every SR the node writes declares this scheme in its Coding Scheme Identification Sequence (0008,0110)
(SOP Common Module, PS3.3 C.12.1.1.1 and Table C.12-1), see :func:`coding_scheme_identification`.

The shoulder finding site is SCT 16982005 "Shoulder" (shoulder region structure, in CID 4 and CID 1004):
pydicom's dictionary has no shoulder *joint* code, and we do not type SNOMED codes from memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

# ---------------------------------------------------------------------------------- our scheme

CODING_SCHEME_DESIGNATOR = "99ORTHO"
CODING_SCHEME_NAME = "OrthoFoundation node codes"
CODING_SCHEME_VERSION = "1.0"
CODING_SCHEME_RESPONSIBLE_ORGANIZATION = "OrthoFoundation project"

MAX_CODE_VALUE_LENGTH = 16  # Code Value (0008,0100) is SH


def private_code(value: str, meaning: str) -> Code:
    """A code of our private scheme ``99ORTHO`` (value at most 16 characters, SH)."""
    if not value or len(value) > MAX_CODE_VALUE_LENGTH:
        raise ValueError(f"private code value {value!r} must have 1 to {MAX_CODE_VALUE_LENGTH} characters")
    return Code(value, CODING_SCHEME_DESIGNATOR, meaning)


def coding_scheme_identification() -> CodingSchemeIdentificationItem:
    """The Coding Scheme Identification Sequence item declaring ``99ORTHO`` (PS3.3 C.12.1.1.1)."""
    return CodingSchemeIdentificationItem(
        designator=CODING_SCHEME_DESIGNATOR,
        name=CODING_SCHEME_NAME,
        version=CODING_SCHEME_VERSION,
        responsible_organization=CODING_SCHEME_RESPONSIBLE_ORGANIZATION,
    )


# ---------------------------------------------------------------------------------- anatomy (SCT)

KNEE_JOINT: Code = codes.SCT.KneeJoint  # 49076000
HIP_JOINT: Code = codes.SCT.HipJoint  # 24136001
SHOULDER: Code = codes.SCT.Shoulder  # 16982005 (region; see the module docstring)
ANKLE_JOINT: Code = codes.SCT.AnkleJoint  # 70258002

# ---------------------------------------------------------------------------------- laterality (SCT)

RIGHT: Code = codes.SCT.Right  # 24028007
LEFT: Code = codes.SCT.Left  # 7771000
BILATERAL: Code = codes.SCT.RightAndLeft  # 51440002 "Right and left"

LATERALITY_CODES: Mapping[str, Code] = MappingProxyType({"R": RIGHT, "L": LEFT, "B": BILATERAL})


def laterality_code(laterality: str | None) -> Code | None:
    """SCT laterality code for a DICOM laterality value ("R", "L", "B"), None for unpaired/unknown."""
    if laterality is None or laterality == "":
        return None
    try:
        return LATERALITY_CODES[laterality.upper()]
    except KeyError:
        raise ValueError(f"laterality must be 'R', 'L', 'B' or None, not {laterality!r}") from None


def laterality_from_code(code: Code | None) -> str | None:
    """The inverse of :func:`laterality_code` (compares value and scheme, not meaning)."""
    if code is None:
        return None
    for letter, known in LATERALITY_CODES.items():
        if (code.value, code.scheme_designator) == (known.value, known.scheme_designator):
            return letter
    raise ValueError(f"not a laterality code: {code}")


# ---------------------------------------------------------------------------------- answer values

PRESENT: Code = codes.SCT.Present  # 52101004
ABSENT: Code = codes.SCT.Absent  # 272519000
YES: Code = codes.SCT.Yes  # 373066001
NO: Code = codes.SCT.No  # 373067005

PROGRESSION = private_code("PROG", "Progression")
NO_PROGRESSION = private_code("NOPROG", "No progression")

KL_GRADES: tuple[Code, ...] = tuple(
    private_code(f"KLG{grade}", f"Kellgren-Lawrence grade {grade}") for grade in range(5)
)

# ---------------------------------------------------------------------------------- report concepts

PROBABILITY: Code = codes.DCM.Probability  # 122157
PROBABILITY_UNIT = Code("{probability}", "UCUM", "probability")  # UCUM annotation: dimensionless (unity)
FINDING: Code = codes.DCM.Finding  # 121071
COMMENT: Code = codes.DCM.Comment  # 121106
IMAGING_PROCEDURE: Code = codes.SCT.ImagingProcedure  # 363679005, "Procedure reported" of TID 1500

# The untrained-model statement (a qualitative evaluation of every group of an untrained model).
RESULT_STATUS = private_code("RESULTSTATUS", "Result status")
NOT_A_FINDING = private_code("NOTFINDING", "Untrained model output, not a finding")

# Outcomes without a grade (issue 14): the concept of the coded qualitative evaluation of a not-graded
# group, and its values. Keys of NOT_GRADED_FOR_VIEW are the values of
# ``orthonode.completion.selection.ViewKind`` that are not KL-graded.
NOT_GRADED_REASON = private_code("NOTGRADED", "Reason not graded")
NOT_GRADED_LATERAL = private_code("NGLATERAL", "Not graded: lateral view")
NOT_GRADED_AXIAL_PATELLA = private_code("NGAXIALPATELLA", "Not graded: axial patellar view")
NOT_GRADED_OBLIQUE = private_code("NGOBLIQUE", "Not graded: oblique view")
NOT_GRADED_OTHER_VIEW = private_code("NGOTHERVIEW", "Not graded: not a frontal view")
NOT_GRADED_TWO_VIEW = private_code("NGTWOVIEW", "Not graded: two-view plate")
NOT_GRADED_VIEW_UNKNOWN = private_code("NGVIEWUNKNOWN", "Not graded: view not recognised")
NO_KNEE_JOINT = private_code("NOKNEEJOINT", "No knee joint found")
NOT_GRADED_PARTIAL = private_code("NGPARTIAL", "Not graded: joint cut by the image edge")

NOT_GRADED_FOR_VIEW: Mapping[str, Code] = MappingProxyType(
    {
        "lateral": NOT_GRADED_LATERAL,
        "axial patellar": NOT_GRADED_AXIAL_PATELLA,
        "oblique": NOT_GRADED_OBLIQUE,
        "other projection": NOT_GRADED_OTHER_VIEW,
        "two-view plate": NOT_GRADED_TWO_VIEW,
        "unknown": NOT_GRADED_VIEW_UNKNOWN,
    }
)

# ---------------------------------------------------------------------------------- algorithm

ALGORITHM_NAME: Code = codes.DCM.AlgorithmName  # 111001 (TID 4019)
ALGORITHM_VERSION: Code = codes.DCM.AlgorithmVersion  # 111003 (TID 4019)
ALGORITHM_PARAMETERS: Code = codes.DCM.AlgorithmParameters  # 111002 (TID 4019)
ALGORITHM_MANUFACTURER: Code = codes.DCM.AlgorithmManufacturer  # 122405 (TID 4019)
ALGORITHM_FAMILY: Code = codes.DCM.AlgorithmFamily  # 111000 (TID 4019)
ALGORITHM_FAMILY_AI: Code = codes.DCM.ArtificialIntelligence  # 123110
PROCESSING_EQUIPMENT: Code = codes.DCM.ProcessingEquipment  # 109102, CID 7005 Purpose of Reference


# ---------------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class TaskCodes:
    """A task's question (``concept``), its answers in label order (``values``) and its anatomy."""

    concept: Code
    values: tuple[Code, ...]
    finding_site: Code

    @property
    def labels(self) -> tuple[str, ...]:
        """The answers' meanings, in label order (index i is the head's class i)."""
        return tuple(v.meaning for v in self.values)

    def value_for_label(self, index: int) -> Code:
        """The answer code of class ``index``; IndexError names the task's concept."""
        if not 0 <= index < len(self.values):
            raise IndexError(f"{self.concept.meaning}: label {index} outside 0..{len(self.values) - 1}")
        return self.values[index]


def _injury(value: str, meaning: str, site: Code) -> TaskCodes:
    return TaskCodes(private_code(value, meaning), (ABSENT, PRESENT), site)


TASK_CONCEPTS: Mapping[str, TaskCodes] = MappingProxyType(
    {
        # Radiographic OA: KL grade 0..4, and its progression (OAI follow-up, 48 and 96 months).
        "kl_grade": TaskCodes(private_code("KLG", "Kellgren-Lawrence grade"), KL_GRADES, KNEE_JOINT),
        "kl_progression_4y": TaskCodes(
            private_code("KLPROG4Y", "Kellgren-Lawrence grade progression within 4 years"),
            (NO_PROGRESSION, PROGRESSION),
            KNEE_JOINT,
        ),
        "kl_progression_8y": TaskCodes(
            private_code("KLPROG8Y", "Kellgren-Lawrence grade progression within 8 years"),
            (NO_PROGRESSION, PROGRESSION),
            KNEE_JOINT,
        ),
        "tkr": TaskCodes(
            private_code("TKR", "Total knee replacement within follow-up"), (NO, YES), KNEE_JOINT
        ),
        # Knee MRI.
        "acl_injury": _injury("ACLINJ", "Anterior cruciate ligament injury", KNEE_JOINT),
        "pcl_injury": _injury("PCLINJ", "Posterior cruciate ligament injury", KNEE_JOINT),
        "mcl_injury": _injury("MCLINJ", "Medial collateral ligament injury", KNEE_JOINT),
        "lcl_injury": _injury("LCLINJ", "Lateral collateral ligament injury", KNEE_JOINT),
        "meniscus_injury": _injury("MENISCUSINJ", "Meniscus injury", KNEE_JOINT),
        "cartilage_lesion": _injury("CARTLESION", "Cartilage lesion", KNEE_JOINT),
        "bone_contusion": _injury("BONECONTUSION", "Bone contusion", KNEE_JOINT),
        "mpfl_injury": _injury("MPFLINJ", "Medial patellofemoral ligament injury", KNEE_JOINT),
        "patellar_dislocation": _injury("PATELLARDISLOC", "Patellar dislocation", KNEE_JOINT),
        # Cross-joint transfer.
        "hip_labral_tear": _injury("HIPLABRALTEAR", "Acetabular labral tear", HIP_JOINT),
        "supraspinatus_injury": _injury("SUPRASPINATUSINJ", "Supraspinatus tendon injury", SHOULDER),
        "atfl_injury": _injury("ATFLINJ", "Anterior talofibular ligament injury", ANKLE_JOINT),
        "cfl_injury": _injury("CFLINJ", "Calcaneofibular ligament injury", ANKLE_JOINT),
    }
)


def task_codes(task: str) -> TaskCodes:
    """The codes of a task by registry name; KeyError lists the known tasks."""
    try:
        return TASK_CONCEPTS[task]
    except KeyError:
        raise KeyError(f"unknown task {task!r}; known: {', '.join(sorted(TASK_CONCEPTS))}") from None


def all_codes() -> list[Code]:
    """Every code this module defines (for the tests and the conformance statement)."""
    found: list[Code] = [c for c in globals().values() if isinstance(c, Code)]
    found += list(KL_GRADES) + list(LATERALITY_CODES.values()) + list(NOT_GRADED_FOR_VIEW.values())
    for task in TASK_CONCEPTS.values():
        found += [task.concept, *task.values, task.finding_site]
    unique: dict[tuple[str, str], Code] = {}
    for code in found:
        unique.setdefault((code.value, code.scheme_designator), code)
    return list(unique.values())
